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


def each_kernel(kernel: str, target: str, sched: dict, dims: Optional[dict], dtype: str,
                build_one: Callable[[ir.Kernel], BuildResult], *, tail: bool = False) -> list[BuildResult]:
    """``build_one`` of every DSL kernel of ``kernel``'s plan under ``sched`` for static ``dims``
    and ``dtype`` inputs, timed; a failure, tracing included, is a row, not an exception (unless
    HOLA_DEBUG is set). ``tail``: keep the end of a long error (a compiler's last lines) rather
    than its start."""
    t0 = time.perf_counter()
    try:
        traced = spec.trace(kernels.spec(kernel), sched, dims, getattr(torch, dtype))
    except Exception as exc:
        if os.environ.get("HOLA_DEBUG"):
            raise
        return [_failed(kernel, target, sched, dtype, exc, tail)]
    rows = []
    for kir in traced:
        try:
            row = build_one(kir)
        except Exception as exc:  # a failed build is a row of the table, not a crash
            if os.environ.get("HOLA_DEBUG"):
                raise
            row = _failed(kir.name, target, sched, dtype, exc, tail)
        row.seconds, row.dtype = time.perf_counter() - t0, dtype
        rows.append(row)
        t0 = time.perf_counter()
    return rows
