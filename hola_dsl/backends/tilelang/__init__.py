"""Backend "tilelang": the DSL kernels lowered to TileLang.

CPU tensors run the CPU dialect (``tilelang.cpu.language``, compiled to C with -O3
-march=native, the grid split over host threads); CUDA tensors run the CUDA dialect
(fragments, shared memory, ``T.gemm``, ``T.Pipelined``). Schedules come from
``schedules.tilelang`` (target "cpu" or the GPU's "sm_XY").
"""

from __future__ import annotations

import shutil
from typing import Optional

import torch

from hola_dsl import launch
from hola_dsl.backends import Backend
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


def schedule(kernel: str, config: Optional[dict], target: str) -> dict:
    """The completed TileLang schedule of ``kernel`` for ``target`` (config entries win); a
    config the space rejects raises ``schedules.ConfigError`` naming ``config`` and the knob."""
    import schedules
    return schedules.space(kernel, "tilelang").check(config, target)


def _runner(kernel: str, config: Optional[dict], device: torch.device):
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime

    sched = schedule(kernel, config, targets.arch_of(device))

    def run(kdef, consts, args) -> None:
        ir_kernel = launch.specialize(kdef, consts, args)
        if device.type == "cpu":
            for name, x in args.items():
                if isinstance(x, torch.Tensor) and (reason := _dtype_problem("cpu", x.dtype)):
                    raise TypeError(f"{name}: {reason}")
            tilelang_runtime.launch_cpu(ir_kernel, sched, args)
        else:
            tilelang_runtime.launch_cuda(ir_kernel, sched, args)
    return run, sched


def _delta_scan(q, k, v, g, beta, *, scale, initial_state, output_final_state, chunk_size, config):
    run, sched = _runner("delta_scan", config, q.device)
    if not (config and "chunk_size" in config):
        sched.pop("chunk_size", None)       # the caller's chunk_size stands unless a config sets one
    return launch.delta_scan(run, sched, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                             output_final_state=output_final_state, chunk_size=chunk_size)


def _cache_select(scores, *, capacity, block_size, policy, config):
    run, sched = _runner("cache_select", config, scores.device)
    return launch.cache_select(run, sched, scores, capacity=capacity, block_size=block_size, policy=policy)


def _cache_read(q, k, v, idx, gamma_q, gamma_k, sink, *, block_size, eps, config):
    run, sched = _runner("cache_read", config, q.device)
    return launch.cache_read(run, sched, q, k, v, idx, gamma_q, gamma_k, sink, block_size=block_size, eps=eps)


BACKEND = Backend(
    name="tilelang",
    description="DSL kernels lowered to TileLang (CPU: C dialect, -O3 -march=native; GPU: CUDA dialect)",
    delta_scan=_delta_scan,
    cache_select=_cache_select,
    cache_read=_cache_read,
    devices=("cpu", "cuda"),
    unavailable=_unavailable,
    dtype_problem=_dtype_problem,
)
