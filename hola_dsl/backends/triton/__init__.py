"""Backend "triton": the DSL kernels lowered to Triton (GPU, or the CPU interpreter when
TRITON_INTERPRET=1 is set before the first launch).

``lower`` writes the Triton source of a traced kernel, ``runtime`` caches, imports and launches
it, ``aot`` compiles it for GPUs this machine does not have."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

import schedules
from hola_dsl import ir, registry
from hola_dsl.backends import dsl
from hola_dsl.backends.triton import lower, runtime
from schedules.space import float32_dot_precision


def _unavailable() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc})"
    if not runtime.interpreting() and not torch.cuda.is_available():
        return "no GPU here (set TRITON_INTERPRET=1 to run the generated kernels in Triton's CPU interpreter)"
    return None


def _unavailable_on(device_type: str) -> Optional[str]:
    if device_type == "cpu" and not runtime.interpreting():
        return "Triton runs CPU tensors only in its interpreter (set TRITON_INTERPRET=1)"
    return None


def _dtype_problem(device_type: str, dtype: torch.dtype) -> Optional[str]:
    if device_type == "cpu" and dtype != torch.float32:
        return f"Triton's CPU interpreter runs float32 only (its bf16 dot is not exact), got {dtype}"
    return None


def schedule(kernel: str, config: Optional[Mapping[str, Any]], target: str,
             dtype: Optional[torch.dtype] = None, dims: Optional[Mapping[str, int]] = None,
             label: str = "config") -> dict:
    """The completed Triton schedule of ``kernel`` for ``target`` and inputs of ``dtype`` (config
    entries win; the space's defaults and overlays for that dtype fill the rest); a config the
    space rejects raises ``schedules.ConfigError`` naming ``label`` and the knob."""
    sched = schedules.space(kernel, "triton").check(config, target, dims, label, registry.DTYPE_NAME.get(dtype))
    # TF32 dots meet the bf16/fp16 tolerance, not float32's 1e-5 (docs/tolerances.md): float32
    # inputs get what the target accepts for that unless a config asks for a precision.
    if dtype == torch.float32 and sched.get("dot_precision") == "tf32" and "dot_precision" not in (config or {}):
        sched["dot_precision"] = float32_dot_precision(target)
    return sched


def _runner(sched: Mapping[str, Any], device: torch.device):
    target = runtime.target_of(device)

    def run(kernel: ir.Kernel, args: Mapping[str, Any]) -> None:
        if device.type == "cpu" and not runtime.interpreting():
            raise ValueError("backend: 'triton' got cpu tensors; they need TRITON_INTERPRET=1 "
                             "(Triton's CPU interpreter), else move them to the GPU")
        runtime.launch(kernel, lower.source_schedule(sched, kernel.name), args, target)
    return run


def emit(kernel: ir.Kernel, sched: Mapping[str, Any], target: str) -> tuple[str, str]:
    """(file suffix, Triton source) of a traced kernel for ``target``, as the runtime writes it."""
    return ".py", lower.emit(kernel, lower.source_schedule(sched, kernel.name), target)


BACKEND = dsl.backend(
    "triton", "DSL kernels lowered to Triton (GPU; CPU via TRITON_INTERPRET=1)",
    schedule=lambda kernel, config, device, dtype: schedule(kernel, config, runtime.target_of(device), dtype),
    runner=_runner,
    # On a GPU the schedule's chunk size (tuned or the target default) is part of what keeps the
    # kernel in registers, so it wins; in the interpreter the caller's chunk_size stands unless a
    # config sets one. Results do not depend on the chunk size beyond rounding.
    caller_wins=lambda device: runtime.target_of(device) == "interpreter",
    devices=("cuda", "cpu"),
    unavailable=_unavailable,
    unavailable_on=_unavailable_on,
    dtype_problem=_dtype_problem,
)
