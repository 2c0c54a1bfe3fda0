"""Backend "eager": the DSL kernels run by the eager interpreter (PyTorch ops, any device).

This is the DSL's own meaning; slow (one program after another), but exact to float32."""

from __future__ import annotations

import schedules
from hola_dsl import eager
from hola_dsl.backends import dsl

BACKEND = dsl.backend(
    "eager", "DSL kernels run by the eager interpreter (PyTorch ops, one program at a time)",
    schedule=lambda kernel, config, device, dtype: schedules.space(kernel, "eager").check(config, "cpu"),
    runner=lambda schedule, device: eager.run,
    devices=("cpu", "cuda"),
    differentiable=True,
)
