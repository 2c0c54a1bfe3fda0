"""The code-generation targets of each backend: the one table `hola emit`, `hola build`, `hola
check` and the emitters consult, so that a target a backend has no lowering for is refused
rather than silently given another dialect.

A target is a GPU architecture ("sm_90", "gfx942"), a host one ("interpreter": Triton's CPU
interpreter; "cpu": TileLang's C dialect), or an arch-specific CUDA variant ("sm_90a") that
nvcc accepts and Triton names without the suffix.
"""

from __future__ import annotations

from typing import Optional

# Ampere, Ada, Hopper, Blackwell (datacenter and consumer): every kernel builds for these.
CUDA_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
# Arch-specific feature sets (wgmma, tcgen05) for nvcc; TileLang's CUDA dialect builds for them.
CUDA_ARCH_SPECIFIC = ("sm_90a", "sm_100a")
# CDNA2, CDNA3, CDNA4, through Triton's AMD backend.
AMD_ARCHS = ("gfx90a", "gfx942", "gfx950")

# Targets that run here on the host rather than being compiled for a GPU.
HOST_TARGETS = ("interpreter", "cpu")

_TARGETS: dict[str, tuple[str, ...]] = {
    "triton": CUDA_ARCHS + AMD_ARCHS + ("interpreter",),
    # The IR is what Triton's schedule space specialises, so it has Triton's targets.
    "ir": CUDA_ARCHS + AMD_ARCHS + ("interpreter",),
    "tilelang": ("cpu",) + CUDA_ARCHS + CUDA_ARCH_SPECIFIC,
}

# What `hola build` compiles when no --targets are given: one GPU per generation that matters.
DEFAULT_BUILD: dict[str, tuple[str, ...]] = {
    "triton": ("sm_80", "sm_90", "sm_100", "gfx942"),
    "tilelang": ("sm_80", "sm_90a", "sm_100a"),
}

# The arch `hola check` cross-builds TileLang's CUDA dialect for with nvcc (no GPU needed).
CHECK_NVCC_ARCH = "sm_90a"


def targets(backend: str, *, gpu_only: bool = False) -> tuple[str, ...]:
    """The targets ``backend`` ("triton", "tilelang" or "ir") generates code for; with
    ``gpu_only``, those an ahead-of-time GPU build can compile (no host targets)."""
    if backend not in _TARGETS:
        raise ValueError(f"backend: {backend!r} generates no code; expected one of {list(_TARGETS)}")
    return tuple(t for t in _TARGETS[backend] if not (gpu_only and t in HOST_TARGETS))


def check(backend: str, target: str, flag: str = "target", *, gpu_only: bool = False) -> str:
    """``target`` when ``backend`` has it (see ``targets``), else a ValueError naming ``flag``."""
    valid = targets(backend, gpu_only=gpu_only)
    if target not in valid:
        others = [b for b in _TARGETS if b != backend and target in targets(b, gpu_only=gpu_only)]
        elsewhere = f" ({target!r} is a {' and '.join(others)} target)" if others else ""
        raise ValueError(f"{flag}: unknown target {target!r} for backend {backend}{elsewhere}; expected one of "
                         f"{list(valid)}")
    return target


def triton_twin(target: str) -> Optional[str]:
    """Triton's name for the GPU of a TileLang/nvcc ``target`` ("sm_90a" -> "sm_90"), or None
    when Triton has no such GPU target."""
    name = target[:-1] if target in CUDA_ARCH_SPECIFIC else target
    return name if name in targets("triton", gpu_only=True) else None


def parse_list(text: str, backend: str, flag: str = "--targets", *, gpu_only: bool = False) -> list[str]:
    """Comma-separated targets, each checked for ``backend``; at least one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"{flag}: expected comma-separated targets of {backend} such as "
                         f"{','.join(DEFAULT_BUILD.get(backend, targets(backend)))}, got {text!r}")
    return [check(backend, t, flag, gpu_only=gpu_only) for t in names]
