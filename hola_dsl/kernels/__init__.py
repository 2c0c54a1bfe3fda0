"""The three algorithms of SPEC.md, each written once in the tile DSL (``hola_dsl.lang``)."""

from __future__ import annotations

import importlib

NAMES = ("delta_scan", "cache_select", "cache_read")


def get(name: str):
    """The KernelDef called ``name`` (defined in hola_dsl/kernels/<name>.py)."""
    if name not in NAMES:
        raise ValueError(f"kernel: expected one of {list(NAMES)}, got {name!r}")
    return getattr(importlib.import_module(f"hola_dsl.kernels.{name}"), name)
