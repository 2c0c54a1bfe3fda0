"""Backend "tilelang": the DSL kernels lowered to TileLang.

CPU tensors run the CPU dialect (``tilelang.cpu.language``, compiled to C with -O3
-march=native, the grid split over host threads); CUDA tensors run the CUDA dialect
(fragments, shared memory, ``T.gemm``, ``T.Pipelined``). Schedules come from
``schedules.tilelang`` (target "cpu" or the GPU's "sm_XY").

``lower_common`` is what both dialects' lowerings share, ``lower_cpu`` and ``lower_cuda`` the
two dialects, ``c_helpers`` the C the CPU dialect calls; ``runtime`` caches, compiles and
launches the sources (``cpu_parallel`` runs a CPU grid on torch's OpenMP team); ``nvcc``
cross-compiles the CUDA dialect where no GPU is.
"""

from __future__ import annotations

import shutil
from typing import Any, Mapping, Optional

import torch

import schedules
from hola_dsl import ir, registry
from hola_dsl.backends import dsl
from hola_dsl.backends.tilelang import runtime
from schedules import targets

# The C dialect computes in these element types; other inputs are rejected with a clear message.
_CPU_DTYPES = (torch.float32, torch.float64, torch.int32, torch.int64)


def _unavailable() -> Optional[str]:
    try:
        import tilelang  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return f"tilelang cannot be imported ({type(exc).__name__}: {exc})"
    from tilelang.contrib.cc import get_cplus_compiler
    if not (get_cplus_compiler() or shutil.which("g++") or shutil.which("c++")):
        return "no C++ compiler for TileLang's C dialect (install g++)"
    return None


def _dtype_problem(device_type: str, dtype: torch.dtype) -> Optional[str]:
    if device_type == "cpu" and dtype not in _CPU_DTYPES:
        return f"the TileLang CPU dialect runs float32/float64 tensors, got {dtype}; convert it with .float()"
    return None


def schedule(kernel: str, config: Optional[Mapping[str, Any]], target: str,
             dtype: Optional[torch.dtype] = None) -> dict:
    """The completed TileLang schedule of ``kernel`` for ``target`` and inputs of ``dtype``
    (config entries win; float32 inputs on a GPU get FMA fp32 dots, ``schedules.tilelang``); a
    config the space rejects raises ``schedules.ConfigError`` naming ``config`` and the knob."""
    return schedules.space(kernel, "tilelang").check(config, target, dtype=registry.DTYPE_NAME.get(dtype))


def _runner(sched: Mapping[str, Any], device: torch.device):
    def run(kernel: ir.Kernel, args: Mapping[str, Any]) -> None:
        if device.type == "cpu":
            for name, x in args.items():
                if isinstance(x, torch.Tensor) and (reason := _dtype_problem("cpu", x.dtype)):
                    raise TypeError(f"{name}: {reason}")
            runtime.launch_cpu(kernel, sched, args)
        else:
            runtime.launch_cuda(kernel, sched, args)
    return run


def _fast_runner(sched: Mapping[str, Any], device: torch.device):
    """For callers that checked their arguments and launch repeatedly (``Backend.prepare``)."""
    if device.type != "cpu":
        return _runner(sched, device)

    launchers: dict[int, tuple] = {}

    def run(kernel: ir.Kernel, args: Mapping[str, Any]) -> None:
        hit = launchers.get(id(kernel))
        if hit is None or hit[0] is not kernel:
            hit = launchers[id(kernel)] = (kernel, runtime.cpu_fast_launcher(kernel, sched))
        hit[1](args)
    return run


def emit(kernel: ir.Kernel, sched: Mapping[str, Any], target: str) -> tuple[str, str]:
    """(file suffix, TileLang source) of a traced kernel for ``target``: the C dialect for "cpu",
    the CUDA dialect for a GPU arch, as the runtime writes it."""
    dialect = "cuda" if targets.is_gpu(target) else "cpu"
    return ".py", runtime.emit(kernel, runtime.code_schedule(sched), target, dialect)


BACKEND = dsl.backend(
    "tilelang", "DSL kernels lowered to TileLang (CPU: C dialect, -O3 -march=native; GPU: CUDA dialect)",
    schedule=lambda kernel, config, device, dtype: schedule(kernel, config, targets.arch_of(device), dtype),
    runner=_runner,
    fast_runner=_fast_runner,
    devices=("cpu", "cuda"),
    unavailable=_unavailable,
    dtype_problem=_dtype_problem,
)
