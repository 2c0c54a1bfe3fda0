"""Generated source for a kernel, a backend and a target: what `hola emit` writes.

``EMITTERS`` maps a backend name to a function (kernel IR, schedule, target) -> (file suffix,
source text); a backend with a lowering adds one line here. "ir" prints the IR itself.
"""

from __future__ import annotations

from typing import Callable, Optional

from hola_dsl import ir
from schedules import targets


def _ir(kernel: ir.Kernel, schedule: dict, target: str) -> tuple[str, str]:
    return ".ir", ir.format_kernel(kernel)


def _triton(kernel: ir.Kernel, schedule: dict, target: str) -> tuple[str, str]:
    from hola_dsl.backends.triton import lower as lower_triton
    return ".py", lower_triton.emit(kernel, schedule, target)


def _tilelang(kernel: ir.Kernel, schedule: dict, target: str) -> tuple[str, str]:
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    return ".py", tilelang_runtime.emit(kernel, schedule, target, "cpu" if target in targets.HOST_TARGETS else "cuda")


EMITTERS: dict[str, Callable[[ir.Kernel, dict, str], tuple[str, str]]] = {
    "ir": _ir,
    "triton": _triton,
    "tilelang": _tilelang,
}


def schedule_for(kernel: str, backend: str, target: str, config: Optional[dict],
                 dims: Optional[dict] = None) -> dict:
    """The completed schedule of ``kernel`` on ``backend`` (the "triton" space serves "ir"); a
    config its space rejects raises ``schedules.ConfigError`` naming ``--config`` and the knob."""
    import schedules
    space = schedules.space(kernel, backend if schedules.has_space(kernel, backend) else "triton")
    return space.check(config, target, dims, label="--config")


def emit_source(kernel: str, backend: str, target: str, config: Optional[dict] = None,
                dims: Optional[dict] = None, dtype: str = "bfloat16") -> tuple[str, str, dict]:
    """(file name, source, schedule) of ``kernel`` lowered for ``backend`` and ``target`` (one of
    ``schedules.targets.for_backend(backend)``)."""
    from hola_dsl.backends.triton import aot
    if backend not in EMITTERS:
        raise ValueError(f"--backend: expected one of {list(EMITTERS)}, got {backend!r}")
    targets.check(backend, target)
    sched = schedule_for(kernel, backend, target, config, dims)
    kir = aot.specialise(kernel, sched, dims, dtype)
    launch_sched = {k: sched[k] for k in ("num_warps", "num_stages", "dot_precision") if k in sched}
    suffix, text = EMITTERS[backend](kir, launch_sched if backend == "triton" else sched, target)
    return f"{kernel}_{target}{suffix}", text, sched
