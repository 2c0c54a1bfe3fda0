"""Backend "eager": the DSL kernels run by the eager interpreter (PyTorch ops, any device).

This is the DSL's own meaning; slow (one program after another), but exact to float32."""

from __future__ import annotations

import schedules
from hola_dsl import eager, launch
from hola_dsl.backends import Backend


def _run(kdef, consts, args) -> None:
    eager.run(launch.specialize(kdef, consts, args), args)


def _schedule(kernel: str, config) -> dict:
    return schedules.space(kernel, "eager").check(config, "cpu")


def _delta_scan(q, k, v, g, beta, *, scale, initial_state, output_final_state, chunk_size, config):
    sched = _schedule("delta_scan", config)
    if not (config and "chunk_size" in config):
        sched.pop("chunk_size", None)       # the caller's chunk_size stands unless a config sets one
    return launch.delta_scan(_run, sched, q, k, v, g, beta, scale=scale,
                             initial_state=initial_state, output_final_state=output_final_state,
                             chunk_size=chunk_size)


def _cache_select(scores, *, capacity, block_size, policy, config):
    return launch.cache_select(_run, _schedule("cache_select", config), scores, capacity=capacity,
                               block_size=block_size, policy=policy)


def _cache_read(q, k, v, idx, gamma_q, gamma_k, sink, *, block_size, eps, config):
    return launch.cache_read(_run, _schedule("cache_read", config), q, k, v, idx, gamma_q, gamma_k, sink,
                             block_size=block_size, eps=eps)


BACKEND = Backend(
    name="eager",
    description="DSL kernels run by the eager interpreter (PyTorch ops, one program at a time)",
    delta_scan=_delta_scan,
    cache_select=_cache_select,
    cache_read=_cache_read,
    devices=("cpu", "cuda"),
    differentiable=True,
)
