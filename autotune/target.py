"""Names of the machine a schedule is tuned for, used in tuning keys and database file paths.

A GPU target is its normalised marketing name and arch ("nvidia-h100/sm_90", "amd-mi300x/gfx942");
a CPU target is its normalised model name and widest vector ISA ("amd-epyc/x86_64-avx512").
Schedule spaces see only the arch part ("sm_90", "gfx942") or "cpu" (see ``Target.arch``).
"""

from __future__ import annotations

import functools
import platform
import re
from dataclasses import dataclass
from typing import Union

import torch

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
        kind = "cuda" if isa.startswith(("sm_", "gfx")) else "cpu"
        return Target(device, isa, kind)


def _cpu_model() -> str:
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


@functools.lru_cache(maxsize=None)
def cpu_target() -> Target:
    """The CPU this process runs on."""
    return Target(clean_component(normalise_name(_cpu_model())), clean_component(_cpu_isa()), "cpu")


@functools.lru_cache(maxsize=None)
def cuda_target(index: int = 0) -> Target:
    """GPU ``index`` as seen by torch (NVIDIA sm_XY, or AMD gfxNNN under ROCm)."""
    props = torch.cuda.get_device_properties(index)
    arch = getattr(props, "gcnArchName", "") or ""
    isa = arch.split(":")[0] if arch.startswith("gfx") else f"sm_{props.major}{props.minor}"
    return Target(clean_component(normalise_name(props.name)), clean_component(isa), "cuda")


def target_of(device: Union[str, torch.device, None] = None) -> Target:
    """The target of a torch device ("cpu", "cuda", "cuda:1", or None for cuda if present else cpu)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return cuda_target(device.index if device.index is not None else torch.cuda.current_device())
    return cpu_target()
