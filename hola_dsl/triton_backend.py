"""Backend "triton": the DSL kernels lowered to Triton (GPU, or the CPU interpreter when
TRITON_INTERPRET=1 is set before the first launch)."""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from hola_dsl import launch, registry
from hola_dsl.backends import Backend
from schedules.space import float32_dot_precision


def _unavailable() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc})"
    from hola_dsl import triton_runtime
    if not triton_runtime.interpreting() and not torch.cuda.is_available():
        return "no GPU here (set TRITON_INTERPRET=1 to run the generated kernels in Triton's CPU interpreter)"
    return None


def _unavailable_on(device_type: str) -> Optional[str]:
    from hola_dsl import triton_runtime
    if device_type == "cpu" and not triton_runtime.interpreting():
        return "Triton runs CPU tensors only in its interpreter (set TRITON_INTERPRET=1)"
    return None


def _dtype_problem(device_type: str, dtype: torch.dtype) -> Optional[str]:
    if device_type == "cpu" and dtype != torch.float32:
        return f"Triton's CPU interpreter runs float32 only (its bf16 dot is not exact), got {dtype}"
    return None


def schedule(kernel: str, config: Optional[dict], target: str, dtype: torch.dtype = torch.bfloat16,
             dims: Optional[dict] = None, label: str = "config") -> dict:
    """The completed Triton schedule of ``kernel`` for ``target`` and inputs of ``dtype`` (config
    entries win; the space's defaults and overlays for that dtype fill the rest); a config the
    space rejects raises ``schedules.ConfigError`` naming ``label`` and the knob."""
    import schedules
    sched = schedules.space(kernel, "triton").check(config, target, dims, label, registry.DTYPE_NAME.get(dtype))
    # TF32 dots meet the bf16/fp16 tolerance, not float32's 1e-5 (SPEC.md section 6): float32
    # inputs get what the target accepts for that unless a config asks for a precision.
    if dtype == torch.float32 and sched.get("dot_precision") == "tf32" and "dot_precision" not in (config or {}):
        sched["dot_precision"] = float32_dot_precision(target)
    return sched


def code_schedule(kernel: str, sched: dict, program: str) -> dict:
    """What of ``kernel``'s completed Triton schedule shapes the code of its DSL kernel called
    ``program`` (one phase of a split op): warps, stages and dot precision, with the warps a knob
    of the program's own sets (``schedules.<kernel>.PROGRAM_WARPS``) where there is one."""
    out = {k: sched[k] for k in ("num_warps", "num_stages", "dot_precision") if k in sched}
    own = getattr(importlib.import_module(f"schedules.{kernel}"), "PROGRAM_WARPS", {}).get(program)
    if own in sched:
        out["num_warps"] = sched[own]
    return out


def _runner(kernel: str, config: Optional[dict], dtype: torch.dtype = torch.bfloat16):
    from hola_dsl import triton_runtime

    target = triton_runtime.current_target()
    sched = schedule(kernel, config, target, dtype)

    def run(kdef, consts, args) -> None:
        device = next(x.device for x in args.values() if isinstance(x, torch.Tensor))
        if device.type == "cpu" and not triton_runtime.interpreting():
            raise ValueError("backend: 'triton' got cpu tensors; they need TRITON_INTERPRET=1 "
                             "(Triton's CPU interpreter), else move them to the GPU")
        triton_runtime.launch(launch.specialize(kdef, consts, args), code_schedule(kernel, sched, kdef.name),
                              args, target)
    return run, sched


def _delta_scan(q, k, v, g, beta, *, scale, initial_state, output_final_state, chunk_size, config):
    from hola_dsl import triton_runtime
    run, sched = _runner("delta_scan", config, q.dtype)
    # On a GPU the schedule's chunk size (tuned or the target default) is part of what keeps the
    # kernel in registers, so it wins; in the interpreter the caller's chunk_size stands unless a
    # config sets one. Results do not depend on the chunk size beyond rounding.
    if triton_runtime.current_target() == "interpreter" and not (config and "chunk_size" in config):
        sched.pop("chunk_size", None)
    return launch.delta_scan(run, sched, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                             output_final_state=output_final_state, chunk_size=chunk_size)


def _cache_select(scores, *, capacity, block_size, policy, config):
    run, sched = _runner("cache_select", config)
    return launch.cache_select(run, sched, scores, capacity=capacity, block_size=block_size, policy=policy)


def _cache_read(q, k, v, idx, gamma_q, gamma_k, sink, *, block_size, eps, config):
    run, sched = _runner("cache_read", config, q.dtype)
    return launch.cache_read(run, sched, q, k, v, idx, gamma_q, gamma_k, sink, block_size=block_size, eps=eps)


BACKEND = Backend(
    name="triton",
    description="DSL kernels lowered to Triton (GPU; CPU via TRITON_INTERPRET=1)",
    delta_scan=_delta_scan,
    cache_select=_cache_select,
    cache_read=_cache_read,
    devices=("cuda", "cpu"),
    unavailable=_unavailable,
    unavailable_on=_unavailable_on,
    dtype_problem=_dtype_problem,
)
