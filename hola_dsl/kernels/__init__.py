"""The kernels of docs/math.md, each written once in the tile DSL (``hola_dsl.lang``) beside the spec
that launches it (``hola_dsl.spec``): hola_dsl/kernels/<name>.py exports ``SPEC`` for every
kernel named in ``schedules.kernels``, the one list of them.

Beside them, modules of DSL kernels and helpers a spec uses: the scan's phases joined by scratch
tensors (``delta_scan_phases.py``, which delta_scan's plan launches when the schedule's ``split``
asks) and ``decay.py``, the float32 log-decay sums the fused kernel and the phases share."""

from __future__ import annotations

import importlib

from hola_dsl.spec import KernelSpec
from schedules.kernels import KERNELS, check

SPECS: dict[str, KernelSpec] = {name: importlib.import_module(f"hola_dsl.kernels.{name}").SPEC for name in KERNELS}


def spec(name: str) -> KernelSpec:
    """The spec of kernel ``name``; a ValueError naming the kernels for any other name."""
    return SPECS[check(name)]
