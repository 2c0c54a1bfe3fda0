"""Backend "reference": the chunked PyTorch implementations of ``hola_dsl.reference.chunked``.

A config is checked against the reference space; its knobs are the functions' own arguments
(the scan's ``chunk_size``), so a config's value replaces the call's."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import schedules
from hola_dsl.backends import Backend
from hola_dsl import varlen
from hola_dsl.reference import chunked, step

FUNCTIONS = {
    "delta_scan": chunked.chunked_delta_scan,
    "cache_select": chunked.blockwise_cache_select,
    "cache_read": chunked.batched_cache_read,
    "lola_select": chunked.blockwise_lola_select,
    "delta_step": step.recurrent_delta_step,
    "cache_read_step": step.slot_cache_read,
}
# Packed sequences (an ``offsets`` option): each function on one sequence at a time.
PACKED = {"delta_scan": varlen.scan, "cache_select": varlen.select, "cache_read": varlen.read}


def _run(kernel: str, *inputs: Any, config: Optional[Mapping[str, Any]] = None, **options: Any) -> Any:
    schedules.space(kernel, "reference").check(config, "cpu")
    options = {**options, **(config or {})}
    if "offsets" in options:
        return PACKED[kernel](FUNCTIONS[kernel], *inputs, options.pop("offsets"), **options)
    return FUNCTIONS[kernel](*inputs, **options)


BACKEND = Backend(
    name="reference",
    description="chunked PyTorch (float32 accumulation, differentiable, any device)",
    run=_run,
    devices=("cpu", "cuda"),
    differentiable=True,
)
