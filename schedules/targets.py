"""Targets, named in one place: the arch of a torch device, the machine a schedule is tuned on,
and the archs each backend generates code for.

Three kinds of name, from the most specific:

* a machine (``Target``, ``machine_of``): its normalised model name and ISA, "nvidia-h100/sm_90",
  "amd-mi300x/gfx942", "amd-epyc/x86_64-avx512". Tuning keys and database folders use it.
* an arch (``arch_of``, ``Target.arch``): what schedule spaces and code generators see, the
  GPU's "sm_90" or "gfx942" (NVIDIA through CUDA, AMD through ROCm), or "cpu".
* a code-generation target of a backend (``for_backend``): an arch ("sm_90", "gfx942"), a host
  one ("interpreter": Triton's CPU interpreter; "cpu": TileLang's C dialect), or an
  arch-specific CUDA variant ("sm_90a") that nvcc accepts and Triton names without the suffix.
  `hola emit`, `hola build`, `hola check` and the emitters consult this one table, so that a
  target a backend has no lowering for is refused rather than silently given another dialect.
"""

from __future__ import annotations

import functools
import platform
import re
from dataclasses import dataclass
from typing import Optional, Union

import torch

# ---------------------------------------------------------------------------------------------
# code-generation targets per backend

# Ampere, Ada, Hopper, Blackwell (datacenter and consumer): every kernel builds for these.
CUDA_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
# Arch-specific feature sets (wgmma, tcgen05) for nvcc; TileLang's CUDA dialect builds for them.
CUDA_ARCH_SPECIFIC = ("sm_90a", "sm_100a")
# CDNA2, CDNA3, CDNA4, through Triton's AMD backend.
AMD_ARCHS = ("gfx90a", "gfx942", "gfx950")
GPU_PREFIXES = ("sm_", "gfx")

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

# Shared memory (LDS on AMD) one block may use, in bytes: the opt-in maximum per block. A build
# that needs more cannot launch there, so `hola build` fails it.
SHARED_PER_BLOCK = {"sm_80": 166912, "sm_86": 101376, "sm_89": 101376, "sm_90": 232448, "sm_100": 232448,
                    "sm_120": 101376, "gfx90a": 65536, "gfx942": 65536, "gfx950": 163840}


def shared_limit(target: str) -> Optional[int]:
    """Bytes of shared memory a block may use on GPU ``target`` ("sm_90a" as "sm_90"), or None
    when the target is not a GPU of the table."""
    return SHARED_PER_BLOCK.get(target[:-1] if target in CUDA_ARCH_SPECIFIC else target)


def dot_precision_problem(target: str, precision: object) -> Optional[str]:
    """Why Triton cannot compile float32 dots of ``precision`` for ``target`` (None when it
    can): its AMD backend rejects "tf32x3" on every target and "tf32" on gfx90a and gfx950."""
    if not target.startswith("gfx"):
        return None
    if precision == "tf32x3" or (precision == "tf32" and target in ("gfx90a", "gfx950")):
        return f"dot_precision: Triton rejects {precision!r} on {target}; use 'ieee'" + (
            "" if precision == "tf32x3" or target in ("gfx90a", "gfx950") else " or 'tf32'")
    return None


# The arch `hola check` cross-builds TileLang's CUDA dialect for with nvcc (no GPU needed).
CHECK_NVCC_ARCH = "sm_90a"


def is_gpu(arch: str) -> bool:
    """Whether ``arch`` (or a code-generation target) names a GPU rather than the host."""
    return arch.startswith(GPU_PREFIXES)


def for_backend(backend: str, *, gpu_only: bool = False) -> tuple[str, ...]:
    """The targets ``backend`` ("triton", "tilelang" or "ir") generates code for; with
    ``gpu_only``, those an ahead-of-time GPU build can compile (no host targets)."""
    if backend not in _TARGETS:
        raise ValueError(f"backend: {backend!r} generates no code; expected one of {list(_TARGETS)}")
    return tuple(t for t in _TARGETS[backend] if not (gpu_only and t in HOST_TARGETS))


def check(backend: str, target: str, flag: str = "target", *, gpu_only: bool = False) -> str:
    """``target`` when ``backend`` has it (see ``for_backend``), else a ValueError naming ``flag``."""
    valid = for_backend(backend, gpu_only=gpu_only)
    if target not in valid:
        others = [b for b in _TARGETS if b != backend and target in for_backend(b, gpu_only=gpu_only)]
        elsewhere = f" ({target!r} is a {' and '.join(others)} target)" if others else ""
        raise ValueError(f"{flag}: unknown target {target!r} for backend {backend}{elsewhere}; expected one of "
                         f"{list(valid)}")
    return target


def triton_twin(target: str) -> Optional[str]:
    """Triton's name for the GPU of a TileLang/nvcc ``target`` ("sm_90a" -> "sm_90"), or None
    when Triton has no such GPU target."""
    name = target[:-1] if target in CUDA_ARCH_SPECIFIC else target
    return name if name in for_backend("triton", gpu_only=True) else None


def parse_list(text: str, backend: str, flag: str = "--targets", *, gpu_only: bool = False) -> list[str]:
    """Comma-separated targets, each checked for ``backend``; at least one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"{flag}: expected comma-separated targets of {backend} such as "
                         f"{','.join(DEFAULT_BUILD.get(backend, for_backend(backend)))}, got {text!r}")
    return [check(backend, t, flag, gpu_only=gpu_only) for t in names]


# ---------------------------------------------------------------------------------------------
# the machine this process runs on

_VENDOR_WORDS = {"nvidia", "amd", "intel", "apple"}
_NOISE_WORDS = {"geforce", "tesla", "corporation", "processor", "cpu", "r", "tm", "with", "radeon",
                "graphics", "instinct", "core", "sxm", "sxm5", "sxm4", "pcie", "nvl", "hbm3", "gb",
                "genuine", "authentic", "amd64", "x86_64", "ghz", "ai"}


def normalise_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100'; 'AMD EPYC 9654 96-Core Processor' -> 'amd-epyc-9654'.

    Lowercase words of letters and digits, marketing noise and memory sizes dropped, joined by '-'.
    """
    words = re.findall(r"[a-z0-9]+", name.lower().replace("(r)", " ").replace("(tm)", " "))
    # Memory sizes ("80gb") and core counts ("96") vary within one chip family; model numbers
    # ("9654", "4090") do not.
    words = [w for w in words if w not in _NOISE_WORDS and not re.fullmatch(r"\d+gb?", w)
             and not (w.isdigit() and len(w) < 3)]
    if words and words[0] not in _VENDOR_WORDS:
        for vendor in ("nvidia", "amd", "intel"):
            if vendor in name.lower():
                words.insert(0, vendor)
                break
    return "-".join(words[:4]) or "unknown"


# One target component, i.e. one folder name in a database: lowercase letters, digits, '-', '_'
# and '.', starting and ending with a letter or digit, no "..", at most 64 characters.
COMPONENT = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9])?")


def clean_component(text: str) -> str:
    """A path-safe lowercase form of one target component (letters, digits, '-', '_', '.'), as
    ``COMPONENT`` asks: what this machine's hardware names become."""
    text = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9_.-]+", "-", text.lower()))
    return text.strip("-_.")[:64].rstrip("-_.") or "unknown"


def check_component(text: object, what: str) -> str:
    """``text`` when it is a valid target component (``COMPONENT``, no ".."), else ValueError."""
    if type(text) is str and COMPONENT.fullmatch(text) and ".." not in text:
        return text
    raise ValueError(f"{what}: expected lowercase letters, digits, '-', '_' or '.' (no '..', at most 64), "
                     f"got {text!r:.80}")


@dataclass(frozen=True)
class Target:
    """Where a kernel runs: ``device`` (normalised model name), ``isa`` ("sm_90", "gfx942",
    "x86_64-avx512", ...) and ``kind`` ("cuda" or "cpu")."""

    device: str
    isa: str
    kind: str

    @property
    def name(self) -> str:
        """The readable form used in keys and as the database sub-folder, e.g. "nvidia-h100/sm_90"."""
        return f"{self.device}/{self.isa}"

    @property
    def arch(self) -> str:
        """What schedule spaces see: the GPU arch ("sm_90", "gfx942") or "cpu"."""
        return self.isa if self.kind != "cpu" else "cpu"

    @staticmethod
    def parse(text: str, what: str = "target") -> "Target":
        """Inverse of ``name``: "nvidia-h100/sm_90" -> Target("nvidia-h100", "sm_90", "cuda").
        Strict, since a target names database folders: each part must be a valid component
        (``check_component``); ValueError naming ``what`` otherwise."""
        device, sep, isa = text.partition("/") if type(text) is str else ("", "", "")
        if not sep:
            raise ValueError(f"{what}: expected DEVICE/ISA such as 'nvidia-h100/sm_90' or "
                             f"'amd-epyc/x86_64-avx512', got {text!r:.80}")
        check_component(device, f"{what} device")
        check_component(isa, f"{what} isa")
        kind = "cuda" if is_gpu(isa) else "cpu"
        return Target(device, isa, kind)


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name as the system reports it ("AMD EPYC 9654 96-Core Processor")."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _cpu_isa() -> str:
    machine = platform.machine().lower() or "unknown"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    for ext in ("avx512f", "avx2", "avx", "sve2", "sve", "asimd", "neon"):
        if ext in flags:
            return f"{machine}-{ext.removesuffix('f') if ext == 'avx512f' else ext}"
    return machine


def _gpu_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _gpu_arch(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    gcn = getattr(props, "gcnArchName", "") or ""          # ROCm: "gfx942:sramecc+:xnack-"
    return gcn.split(":")[0] if gcn.startswith("gfx") else f"sm_{props.major}{props.minor}"


def arch_of(device: Union[str, torch.device]) -> str:
    """The arch of a torch device: "cpu", or the GPU's ("sm_90"; "gfx942" under ROCm)."""
    device = torch.device(device)
    return _gpu_arch(_gpu_index(device)) if device.type == "cuda" else "cpu"


@functools.lru_cache(maxsize=None)
def cpu_machine() -> Target:
    """The CPU this process runs on."""
    return Target(clean_component(normalise_name(cpu_model())), clean_component(_cpu_isa()), "cpu")


@functools.lru_cache(maxsize=None)
def gpu_machine(index: int = 0) -> Target:
    """GPU ``index`` as seen by torch (NVIDIA sm_XY, or AMD gfxNNN under ROCm)."""
    name = torch.cuda.get_device_properties(index).name
    return Target(clean_component(normalise_name(name)), clean_component(_gpu_arch(index)), "cuda")


def machine_of(device: Union[str, torch.device, None] = None) -> Target:
    """The machine of a torch device ("cpu", "cuda", "cuda:1", or None for cuda if present else cpu)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return gpu_machine(_gpu_index(device)) if device.type == "cuda" else cpu_machine()
