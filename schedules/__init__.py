"""Schedule spaces per (kernel, backend): one table from backend name to the module that
declares its spaces, so that adding a backend's knobs is one line here.

A module listed in ``SPACE_MODULES`` defines ``SPACES: dict[str, Space]`` keyed by kernel name.
Modules are imported lazily, so a backend whose toolchain is missing only loses its own spaces.
"""

from __future__ import annotations

import importlib

from schedules.space import Constraint, Knob, Space

__all__ = ["Constraint", "Knob", "Space", "SPACE_MODULES", "space", "has_space", "registered"]

# backend name -> module defining SPACES = {kernel: Space}. Adding a backend is one line here.
SPACE_MODULES: dict[str, str] = {
    "reference": "schedules.reference",
}


def _spaces(backend: str) -> dict[str, Space]:
    if backend not in SPACE_MODULES:
        raise KeyError(
            f"backend: no schedule space registered for {backend!r}; registered backends are {sorted(SPACE_MODULES)}"
        )
    return importlib.import_module(SPACE_MODULES[backend]).SPACES


def space(kernel: str, backend: str) -> Space:
    """The schedule space of ``kernel`` on ``backend``; KeyError naming what is registered if none."""
    spaces = _spaces(backend)
    if kernel not in spaces:
        raise KeyError(f"kernel: backend {backend!r} has no schedule space for {kernel!r}; it has {sorted(spaces)}")
    return spaces[kernel]


def has_space(kernel: str, backend: str) -> bool:
    """Whether ``space(kernel, backend)`` would succeed (False also when the module cannot import)."""
    try:
        space(kernel, backend)
    except (KeyError, ImportError):
        return False
    return True


def registered() -> list[tuple[str, str]]:
    """Every (kernel, backend) pair with a space whose module imports here."""
    out = []
    for backend in SPACE_MODULES:
        try:
            out += [(kernel, backend) for kernel in _spaces(backend)]
        except ImportError:
            continue
    return out
