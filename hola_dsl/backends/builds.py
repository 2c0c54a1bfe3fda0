"""Ahead-of-time builds, whatever the backend (Triton's ``aot``, TileLang's ``nvcc``): the row a
build reports in `hola build`'s table, and the rows of one kernel, one per DSL kernel its plan
launches (a pipeline builds each of its kernels)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from hola_dsl import ir, kernels, spec
from schedules import targets


@dataclass
class BuildResult:
    """Resources of one DSL kernel compiled for one target (None where the target does not say)."""

    kernel: str
    target: str
    schedule: dict
    ok: bool
    registers: Optional[int] = None
    spills: Optional[int] = None          # bytes of spill stores + loads (CUDA), spill count (AMD)
    shared: Optional[int] = None          # bytes of shared memory / LDS
    seconds: float = 0.0
    error: str = ""
    extra: dict = field(default_factory=dict)
    dtype: str = "bfloat16"               # the inputs' dtype it was specialised for


def _failed(name: str, target: str, sched: dict, dtype: str, exc: Exception, tail: bool) -> BuildResult:
    text = str(exc).strip()
    return BuildResult(name, target, sched, False, error=f"{type(exc).__name__}: {text[-400:] if tail else text[:400]}",
                       dtype=dtype)


def judged(row: BuildResult) -> BuildResult:
    """``row`` failed when what it compiled to cannot be what we ship: a kernel that spills
    registers (slow: local memory on the sequential path), or needs more shared memory per block
    than its target has (it could not launch)."""
    if not row.ok:
        return row
    limit = targets.shared_limit(row.target)
    if row.spills:
        unit = "spills" if row.target.startswith("gfx") else "bytes of spill loads and stores"
        row.ok, row.error = False, f"spills registers ({row.spills} {unit}); pick smaller tiles or more warps"
    elif limit is not None and row.shared is not None and row.shared > limit:
        row.ok, row.error = False, f"needs {row.shared} bytes of shared memory per block; {row.target} has {limit}"
    return row


def each_kernel(kernel: str, target: str, sched: dict, dims: Optional[dict], dtype: str,
                build_one: Callable[[ir.Kernel], BuildResult], *, tail: bool = False,
                offsets: Optional[list] = None) -> list[BuildResult]:
    """``build_one`` of every DSL kernel of ``kernel``'s plan under ``sched`` for static ``dims``
    and ``dtype`` inputs, timed; a failure, tracing included, is a row, not an exception (unless
    HOLA_DEBUG is set); a build that spills or exceeds the target's shared memory is a failed row
    (``judged``). ``tail``: keep the end of a long error (a compiler's last lines) rather
    than its start. ``offsets``: build the kernels of a packed call (cu_seqlens) instead."""
    t0 = time.perf_counter()
    try:
        traced = spec.trace(kernels.spec(kernel), sched, dims, getattr(torch, dtype), offsets=offsets)
    except Exception as exc:
        if os.environ.get("HOLA_DEBUG"):
            raise
        return [_failed(kernel, target, sched, dtype, exc, tail)]
    rows = []
    for kir in traced:
        try:
            row = judged(build_one(kir))
        except Exception as exc:  # a failed build is a row of the table, not a crash
            if os.environ.get("HOLA_DEBUG"):
                raise
            row = _failed(kir.name, target, sched, dtype, exc, tail)
        row.seconds, row.dtype = time.perf_counter() - t0, dtype
        rows.append(row)
        t0 = time.perf_counter()
    return rows
