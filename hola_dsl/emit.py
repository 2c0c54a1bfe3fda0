"""Generated source for a kernel, a backend and a target: what `hola emit` writes.

``EMITTERS`` maps a backend name to a function (kernel IR, schedule, target) -> (file suffix,
source text); a backend with a lowering adds one line here. "ir" prints the IR itself.
"""

from __future__ import annotations

from typing import Callable, Optional

from hola_dsl import ir, registry, targets


def _ir(kernel: ir.Kernel, schedule: dict, target: str) -> tuple[str, str]:
    return ".ir", ir.format_kernel(kernel)


def _triton(kernel: ir.Kernel, schedule: dict, target: str) -> tuple[str, str]:
    from hola_dsl.lower import triton as lower_triton
    return ".py", lower_triton.emit(kernel, schedule, target)


def _tilelang(kernel: ir.Kernel, schedule: dict, target: str) -> tuple[str, str]:
    from hola_dsl import tilelang_runtime
    return ".py", tilelang_runtime.emit(kernel, schedule, target, "cpu" if target in targets.HOST_TARGETS else "cuda")


EMITTERS: dict[str, Callable[[ir.Kernel, dict, str], tuple[str, str]]] = {
    "ir": _ir,
    "triton": _triton,
    "tilelang": _tilelang,
}


def schedule_for(kernel: str, backend: str, target: str, config: Optional[dict],
                 dims: Optional[dict] = None, dtype: str = "bfloat16") -> dict:
    """The completed schedule of ``kernel`` on ``backend`` for ``dtype`` inputs (the "triton"
    space serves "ir"; a Triton schedule as the launcher completes it, float32 dot precision
    included); a config its space rejects raises ``schedules.ConfigError`` naming ``--config``
    and the knob."""
    import schedules
    name = backend if schedules.has_space(kernel, backend) else "triton"
    if name == "triton":
        from hola_dsl.triton_backend import schedule
        return schedule(kernel, config, target, registry.TORCH_DTYPE[dtype], dims, label="--config")
    return schedules.space(kernel, name).check(config, target, dims, label="--config", dtype=dtype)


def emit_source(kernel: str, backend: str, target: str, config: Optional[dict] = None,
                dims: Optional[dict] = None, dtype: str = "bfloat16") -> tuple[str, str, dict]:
    """(file name, source, schedule) of ``kernel`` lowered for ``backend`` and ``target`` (one of
    ``hola_dsl.targets.targets(backend)``); when its schedule splits it into phases, the sources
    of every phase in launch order, one after another."""
    from hola_dsl import aot
    if backend not in EMITTERS:
        raise ValueError(f"--backend: expected one of {list(EMITTERS)}, got {backend!r}")
    targets.check(backend, target)
    sched = schedule_for(kernel, backend, target, config, dims, dtype)
    from hola_dsl.lower import symbol
    from hola_dsl.triton_backend import code_schedule
    kernels = aot.pipeline(kernel, sched, dims, dtype)
    texts = []
    for n, kir in enumerate(kernels):
        suffix, text = EMITTERS[backend](kir, code_schedule(kernel, sched, kir.name) if backend == "triton" else sched,
                                         target)
        if len(kernels) > 1:
            text = f"# ---- kernel {n + 1} of {len(kernels)} ({symbol(sched['split'], 'split')}): {kir.name}\n{text}"
        texts.append(text)
    return f"{kernel}_{target}{suffix}", "\n\n".join(texts), sched
