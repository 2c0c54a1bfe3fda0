"""Generated sources of a kernel for a backend and a target: what `hola emit` writes.

``EMITTERS`` maps a backend name to its ``emit(kernel IR, schedule, target) -> (file suffix,
source text)``, the same text its runtime writes; "ir" prints the IR itself. A kernel whose plan
launches several DSL kernels (a pipeline) gives one source per DSL kernel, traced on ``meta``
tensors (``hola_dsl.spec.trace``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch

import schedules
from hola_dsl import ir, kernels, spec
from hola_dsl.backends import tilelang, triton
from schedules import targets


def _ir(kernel: ir.Kernel, schedule: Mapping[str, Any], target: str) -> tuple[str, str]:
    return ".ir", ir.format_kernel(kernel)


EMITTERS: dict[str, Callable[[ir.Kernel, Mapping[str, Any], str], tuple[str, str]]] = {
    "ir": _ir,
    "triton": triton.emit,
    "tilelang": tilelang.emit,
}


def schedule_for(kernel: str, backend: str, target: str, config: Optional[dict],
                 dims: Optional[dict] = None, dtype: str = "bfloat16") -> dict:
    """The completed schedule of ``kernel`` on ``backend`` for ``dtype`` inputs, as its launcher
    completes it (the "triton" space serves "ir": a Triton schedule, float32 dot precision
    included); a config its space rejects raises ``schedules.ConfigError`` naming ``--config``
    and the knob."""
    name = backend if schedules.has_space(kernel, backend) else "triton"
    if name == "triton":
        return triton.schedule(kernel, config, target, getattr(torch, dtype), dims, label="--config")
    return schedules.space(kernel, name).check(config, target, dims, label="--config", dtype=dtype)


def emit_sources(kernel: str, backend: str, target: str, config: Optional[dict] = None,
                 dims: Optional[dict] = None, dtype: str = "bfloat16") -> tuple[list[tuple[str, str]], dict]:
    """([(file name, source) per DSL kernel launched], schedule) of ``kernel`` lowered for
    ``backend`` and ``target`` (one of ``schedules.targets.for_backend(backend)``), for static
    ``dims`` (default ``spec.DEFAULT_DIMS``) and inputs of ``dtype``: one source, or one per
    phase of a split scan, in launch order."""
    if backend not in EMITTERS:
        raise ValueError(f"--backend: expected one of {list(EMITTERS)}, got {backend!r}")
    targets.check(backend, target)
    sched = schedule_for(kernel, backend, target, config, dims, dtype)
    sources = []
    for kir in spec.trace(kernels.spec(kernel), sched, dims, getattr(torch, dtype)):
        suffix, text = EMITTERS[backend](kir, sched, target)
        sources.append((f"{kir.name}_{target}{suffix}", text))
    return sources, sched
