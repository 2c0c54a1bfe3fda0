"""The lowest floor: what a schedule is, which one applies, and the tuned records that say so.

``space(kernel, backend)`` is the one way to find a schedule space (``schedules.space``: knobs,
constraints, defaults per target). Spaces come from one list of modules: each module in
``SPACE_MODULES`` defines ``SPACES``, a dict whose values are ``Space`` objects (the keys are the
module's own business: schedules/delta_scan.py keys by backend, schedules/reference.py by
kernel); every Space names its own kernel and backend. A backend adds its spaces to the
per-kernel modules, or lists a module of its own here (one line). Modules are imported when a
space is first asked for, so a space module that cannot import only loses its own spaces.

Beside the spaces: ``kernels`` (the one list of kernels and their static dims), ``targets``
(arch of a device, the machine, each backend's code-generation targets), ``key`` (the tuning
key), ``database`` (reading the tuning database) and ``lookup`` (the tuned config of a call).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Iterator, Optional

from schedules.kernels import KERNELS
from schedules.space import ConfigError, Constraint, Knob, Setting, Space

__all__ = ["ConfigError", "Constraint", "KERNELS", "Knob", "Setting", "Space", "SPACE_MODULES", "space",
           "has_space", "registered", "overlay", "warps_knob"]

# Modules defining SPACES = {...: Space}: one per kernel (schedules/<kernel>.py), and those of
# backends that keep their spaces together. Adding a module of spaces is one line here.
SPACE_MODULES: list[str] = [f"schedules.{kernel}" for kernel in KERNELS] + [
    "schedules.reference",
    "schedules.tilelang",
]

_table: Optional[dict[tuple[str, str], Space]] = None
_import_errors: dict[str, str] = {}


def _spaces() -> dict[tuple[str, str], Space]:
    global _table
    if _table is None:
        table: dict[tuple[str, str], Space] = {}
        for name in SPACE_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError as exc:  # an optional toolchain of that module is missing
                _import_errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            for s in module.SPACES.values():
                if (s.kernel, s.backend) in table:
                    raise ValueError(f"{name}: a schedule space for ({s.kernel}, {s.backend}) is already registered")
                table[(s.kernel, s.backend)] = s
        _table = table
    return _table


def space(kernel: str, backend: str) -> Space:
    """The schedule space of ``kernel`` on ``backend``; KeyError naming what is registered if none."""
    table = _spaces()
    if (kernel, backend) not in table:
        have = sorted(b for k, b in table if k == kernel)
        extra = f"; modules that failed to import: {_import_errors}" if _import_errors else ""
        raise KeyError(f"no schedule space for kernel {kernel!r} on backend {backend!r}; "
                       f"backends with a {kernel!r} space: {have}{extra}")
    return table[(kernel, backend)]


def has_space(kernel: str, backend: str) -> bool:
    """Whether ``space(kernel, backend)`` would succeed."""
    return (kernel, backend) in _spaces()


def registered() -> list[tuple[str, str]]:
    """Every (kernel, backend) pair with a space whose module imports here."""
    return sorted(_spaces())


def warps_knob(program: str) -> str:
    """The knob that sets the warps of the DSL kernel called ``program``: its own where the
    schedule module of the kernel it belongs to lists one in ``PROGRAM_WARPS`` (the scan's
    prepare phase: "prepare_warps"), else "num_warps"."""
    for kernel in KERNELS:
        if program == kernel or program.startswith(f"{kernel}_"):
            own = getattr(importlib.import_module(f"schedules.{kernel}"), "PROGRAM_WARPS", {})
            if program in own:
                return own[program]
    return "num_warps"


@contextlib.contextmanager
def overlay(extra: Space) -> Iterator[Space]:
    """Register ``extra`` for the duration of a ``with`` block, in place of any space of the same
    (kernel, backend); for backends that exist only there (a test's replayed or faulty
    backend), whose records the database then accepts like any other."""
    table = _spaces()
    key = (extra.kernel, extra.backend)
    before = table.get(key)
    table[key] = extra
    try:
        yield extra
    finally:
        if before is None:
            table.pop(key, None)
        else:
            table[key] = before
