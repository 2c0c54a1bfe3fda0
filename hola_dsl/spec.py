"""Kernel specs and the one generic launcher.

Each kernel of the public API (``schedules.kernels``) is a ``KernelSpec``, exported as ``SPEC``
by its file in ``hola_dsl/kernels``. Its ``plan`` turns the validated inputs, the call's options
and a completed schedule into a ``Plan``: the launches (each a DSL kernel, its compile-time
constants and its arguments) and the finishing step that makes the kernel's result out of what
the launches wrote (e.g. m from the per-V-tile scaled partial norms). A kernel may be a
pipeline of several launches joined by scratch tensors that the plan allocates.

A plan allocates its outputs poisoned (NaN, or -2 for integers), so an element no launch
writes fails a check, its scratch with ``scratch`` (poisoned under the test suite), and
computes nothing itself: it works as well on tensors of the
``meta`` device, which is how ``trace`` gets every kernel of a pipeline without data (for
`hola emit`, `hola build` and the ahead-of-time builds).

``launch`` is the one launcher: a DSL backend hands it a ``Runner``, a function that runs one
traced kernel on its arguments ({parameter: tensor or number}), outputs written in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from hola_dsl import ir, lang, registry
from schedules import kernels

Runner = Callable[[ir.Kernel, Mapping[str, Any]], None]

# The static problem a kernel is traced for without data when none is given: GDN's usual head
# dims and the default cache (`hola emit`, `hola build`). The scan's chunk comes from the
# schedule, which has one for every target.
DEFAULT_DIMS = {"K": 128, "V": 128, "W": 64, "C": 256, "chunk_size": 64}


@dataclass(frozen=True)
class Launch:
    """One launch of a plan: a DSL kernel, its compile-time constants and its arguments."""

    kernel: lang.KernelDef
    consts: Mapping[str, Any]
    args: Mapping[str, Any]


@dataclass(frozen=True)
class Plan:
    """The launches of one call, in order, and what makes the call's result once they ran."""

    launches: tuple[Launch, ...]
    finish: Callable[[], Any]


@dataclass(frozen=True)
class KernelSpec:
    """What the generic launcher needs of a kernel.

    ``kernels``: every DSL kernel its plans may launch. ``plan(schedule, *inputs, **options)``:
    the ``Plan`` of a call; inputs and options as a backend receives them from
    ``hola_dsl.ops`` (validated, normalised), ``schedule`` completed by the backend.
    ``example(dims, dtype, B=1, T=1, H=1)``: (inputs, options) of a call on ``meta`` tensors
    with the static ``dims`` (a mapping holding at least the kernel's, e.g. K, V, W, C), input
    ``dtype`` and batch, sequence and head counts B, T, H.
    ``caller_knobs``: schedule knobs that stand in for the call option of the same name (the
    scan's ``chunk_size``); a backend may let the caller's value stand unless a config sets the
    knob (``hola_dsl.backends.dsl``).
    ``packed_knobs``: (knob, value) pairs a packed call (cu_seqlens) always runs with, because
    its plan has only that form (the scan's packed form is its fused split): the schedule is
    completed with them set, so that the defaults of that form apply (``packed_config``).
    """

    name: str
    kernels: tuple[lang.KernelDef, ...]
    plan: Callable[..., Plan]
    example: Callable[[Mapping[str, int], torch.dtype], tuple[tuple, dict]]
    caller_knobs: tuple[str, ...] = ()
    packed_knobs: tuple[tuple[str, Any], ...] = ()

    @property
    def static_dims(self) -> tuple[str, ...]:
        """The compile-time dims a tuning key of this kernel carries (``schedules.kernels``)."""
        return kernels.STATIC_DIMS[self.name]


def packed_config(kspec: KernelSpec, config: Optional[Mapping[str, Any]],
                  offsets: Optional[Sequence[int]]) -> Optional[dict]:
    """The config to complete a schedule with for a call of ``kspec``: ``config`` itself for a
    dense call (``offsets`` None), else ``config`` with the kernel's ``packed_knobs`` set (what
    the packed plan runs whatever the config says; None stays None when there are none)."""
    if offsets is None or not kspec.packed_knobs:
        return None if config is None else dict(config)
    return {**(config or {}), **dict(kspec.packed_knobs)}


def fits_packed(kspec: KernelSpec, config: Mapping[str, Any]) -> bool:
    """Whether ``config`` sets no packed knob of ``kspec`` to another value: a schedule tuned for
    another form of the kernel (the scan's phases) is no schedule for its packed form."""
    return all(config.get(knob, value) == value for knob, value in kspec.packed_knobs)


_TRACES: dict = {}


def specialize(launch: Launch) -> ir.Kernel:
    """The IR of a launch's kernel for its constants and the dtypes of its tensors (cached)."""
    dtypes = {n: registry.DTYPE_NAME[x.dtype] for n, x in launch.args.items() if isinstance(x, torch.Tensor)}
    kdef = launch.kernel
    key = (kdef.name, id(kdef), tuple(sorted(launch.consts.items())), tuple(sorted(dtypes.items())))
    if key not in _TRACES:
        _TRACES[key] = kdef.trace(dtypes, **launch.consts)
    return _TRACES[key]


def launch(spec: KernelSpec, run: Runner, schedule: Mapping[str, Any], inputs: Sequence[Any],
           options: Mapping[str, Any]) -> Any:
    """Run one call of ``spec`` through ``run``: plan it, run each launch's traced kernel in
    order, and return the plan's finished result."""
    plan = spec.plan(dict(schedule), *inputs, **options)
    for step in plan.launches:
        run(specialize(step), step.args)
    return plan.finish()


def trace(spec: KernelSpec, schedule: Mapping[str, Any], dims: Optional[Mapping[str, int]] = None,
          dtype: torch.dtype = torch.bfloat16, offsets: Optional[Sequence[int]] = None) -> list[ir.Kernel]:
    """The IR of every launch of a call with static ``dims`` (``DEFAULT_DIMS`` where not given)
    and input ``dtype`` under ``schedule``, planned on ``meta`` tensors (no data, no device);
    ``offsets``: of a packed call (cu_seqlens, ``hola_dsl.varlen``) instead."""
    packed = {} if offsets is None else {"offsets": list(offsets)}
    inputs, options = spec.example({**DEFAULT_DIMS, **(dims or {})}, dtype, **packed)
    return [specialize(step) for step in spec.plan(dict(schedule), *inputs, **options).launches]


# ---------------------------------------------------------------- what plans share

def pow2(n: int, lo: int = 16) -> int:
    """The smallest power of two >= max(n, lo) (tile sizes are powers of two)."""
    return max(lo, 1 << (max(int(n), 1) - 1).bit_length())


def poisoned(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An output or scratch tensor filled with NaN (-2 for integers): an element no launch writes
    fails a check."""
    fill = float("nan") if dtype.is_floating_point else -2
    return torch.full(tuple(shape), fill, dtype=dtype, device=device)


def scratch(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor that the plan's launches write in full before any reads it: uninitialised
    memory, poisoned like an output (``poisoned``) when the environment sets HOLA_POISON_SCRATCH=1
    (the test suite does). Filling scratch costs a pass over memory the kernels then overwrite:
    the scan's backward keeps per-chunk states, at T = 4096, K = V = 128, 32-token chunks 33 MB
    each, and their NaN fill was a fifth of its CPU time."""
    if os.environ.get("HOLA_POISON_SCRATCH") == "1":
        return poisoned(shape, dtype, device)
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def dense(*xs: torch.Tensor) -> list[torch.Tensor]:
    """Kernels address tensors as contiguous row-major: make views dense (free when they are)."""
    return [x.contiguous() for x in xs]


def unused(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A stand-in for an absent optional tensor: right shape, one element of storage."""
    return torch.zeros(1, dtype=dtype, device=device).expand(*shape)
