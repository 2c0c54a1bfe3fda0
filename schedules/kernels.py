"""The kernels (public ops) of the project, each once, with its static dims.

A kernel's static dims are its compile-time constants that a tuning key carries exactly (head
dims, cache capacity and block); everything else that names kernels (the specs in
``hola_dsl/kernels``, the schedule spaces, the tuning keys, the command line's ``--kernel``)
derives from this table. Adding a kernel starts with one line here. A kernel named
``<op>_backward`` computes the gradient of op ``<op>`` (``hola_dsl.ops`` differentiates through it).
"""

from __future__ import annotations

from typing import Any

# kernel name -> its static dims, in the order a tuning key lists them (sorted there).
STATIC_DIMS: dict[str, tuple[str, ...]] = {
    "delta_scan": ("K", "V"),
    "cache_select": ("W", "C"),
    "cache_read": ("K", "V", "W", "C"),
    "delta_scan_backward": ("K", "V"),
    "cache_read_backward": ("K", "V", "W", "C"),
    "lola_select": ("K", "V", "W", "C"),
    # Decoding (hola_dsl.decode): a few new tokens per sequence against carried memory.
    "delta_step": ("K", "V"),
    "cache_read_step": ("K", "V", "W"),
}

KERNELS: tuple[str, ...] = tuple(STATIC_DIMS)
# The kernels of a prefill (a whole sequence at once) and of a decode step; a layer's prefill
# time is the sum over PREFILL.
PREFILL: tuple[str, ...] = ("delta_scan", "cache_select", "cache_read")
DECODE: tuple[str, ...] = ("delta_step", "cache_read_step")
# The kernels over whole sequences (prefill, the scan's backward, lola's selection): the ones
# `hola check`, `hola diff` and `hola tune` run against the oracle on their own test inputs.
WHOLE_SEQUENCE: tuple[str, ...] = tuple(k for k in KERNELS if k not in DECODE)
# A kernel "<op>_backward" computes the gradient of op "<op>"; these ops' outputs carry gradients
# (selection uses its scores as numbers).
DIFFERENTIABLE_OPS: tuple[str, ...] = ("delta_scan", "cache_read")


def check(kernel: Any, what: str = "kernel") -> str:
    """``kernel`` when it names a kernel, else a ValueError naming ``what`` and the choices."""
    if type(kernel) is not str or kernel not in STATIC_DIMS:
        raise ValueError(f"{what}: expected one of {list(KERNELS)}, got {kernel!r:.80}")
    return kernel


def static_dims(kernel: str, shape: Any) -> dict[str, int]:
    """The static dims of ``kernel`` read from a shape (``hola_dsl.testing.Shape``, or any
    object with those attributes)."""
    return {d: int(getattr(shape, d)) for d in STATIC_DIMS[check(kernel)]}
