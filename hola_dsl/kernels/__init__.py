"""The three algorithms of SPEC.md, each written once in the tile DSL (``hola_dsl.lang``).

The scan also comes as phases joined by scratch tensors (``delta_scan_phases.py``, run by
``hola_dsl.launch.run_phases`` when the schedule's ``split`` asks); ``decay.py`` holds the
float32 log-decay sums both forms share."""

from __future__ import annotations

import importlib

NAMES = ("delta_scan", "cache_select", "cache_read")


def get(name: str):
    """The KernelDef called ``name`` (defined in hola_dsl/kernels/<name>.py)."""
    if name not in NAMES:
        raise ValueError(f"kernel: expected one of {list(NAMES)}, got {name!r}")
    return getattr(importlib.import_module(f"hola_dsl.kernels.{name}"), name)
