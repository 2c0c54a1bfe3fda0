"""`hola env`: what this machine offers, so that users and bug reports start from facts."""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess

NAME = "env"
HELP = "print what this machine offers: torch, Triton, TileLang, nvcc, GPUs, backends"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except Exception as exc:  # a broken optional install is a fact to report, not a crash
        return f"not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def _nvcc() -> str:
    path = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if shutil.os.path.exists("/usr/local/bin/nvcc") else None)
    if not path:
        return "not found"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        release = [line for line in out.splitlines() if "release" in line]
        return f"{path} ({release[-1].strip() if release else 'unknown version'})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} (failed to run: {exc})"


def facts() -> list[tuple[str, str]]:
    """(label, value) rows describing this machine and what each backend can do here."""
    import torch
    from hola_dsl import backends
    from schedules import targets

    rows = [("python", platform.python_version()), ("machine", f"{platform.machine()} {platform.processor() or ''}".strip()),
            ("cpu cores", str(torch.get_num_threads())), ("torch", torch.__version__)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"gpu {i}", f"{p.name}, {targets.arch_of(f'cuda:{i}')}, {p.total_memory / 2**30:.0f} GiB"))
    else:
        rows.append(("gpu", "none (torch.cuda.is_available() is False)"))
    triton = _version("triton")
    if not triton.startswith("not"):
        triton += ": runs on GPU" if torch.cuda.is_available() else ": compiles ahead of time; runs here under TRITON_INTERPRET=1"
    rows.append(("triton", triton))
    tilelang = _version("tilelang")
    if not tilelang.startswith("not"):
        tilelang += ": CPU (C dialect) target" + (", CUDA target" if torch.cuda.is_available() else "; CUDA lowering without running")
    rows.append(("tilelang", tilelang))
    rows.append(("nvcc", _nvcc()))
    for name in backends.names():
        reason = backends.unavailable_reason(name)
        rows.append((f"backend {name}", "available" if reason is None else f"unavailable: {reason}"))
    return rows


def run(args: argparse.Namespace) -> int:
    rows = facts()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0
