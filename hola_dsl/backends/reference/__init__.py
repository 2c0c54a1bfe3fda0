"""Backend "reference": the chunked PyTorch implementations of ``hola_dsl.reference.chunked``."""

from __future__ import annotations

import schedules
from hola_dsl.backends import Backend
from hola_dsl.reference import chunked


def _checked(kernel: str, config) -> None:
    """Refuse a config the space rejects (unknown knob, wrong type), naming ``config`` and the knob."""
    schedules.space(kernel, "reference").check(config, "cpu")


def _delta_scan(q, k, v, g, beta, *, scale, initial_state, output_final_state, chunk_size, config):
    _checked("delta_scan", config)
    if config and "chunk_size" in config:
        chunk_size = config["chunk_size"]
    return chunked.chunked_delta_scan(
        q, k, v, g, beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, chunk_size=chunk_size,
    )


def _cache_select(scores, *, capacity, block_size, policy, config):
    _checked("cache_select", config)
    return chunked.blockwise_cache_select(scores, capacity=capacity, block_size=block_size, policy=policy)


def _cache_read(q, k, v, idx, gamma_q, gamma_k, sink, *, block_size, eps, config):
    _checked("cache_read", config)
    return chunked.batched_cache_read(q, k, v, idx, gamma_q, gamma_k, sink, block_size=block_size, eps=eps)


BACKEND = Backend(
    name="reference",
    description="chunked PyTorch (float32 accumulation, differentiable, any device)",
    delta_scan=_delta_scan,
    cache_select=_cache_select,
    cache_read=_cache_read,
    devices=("cpu", "cuda"),
    differentiable=True,
)
