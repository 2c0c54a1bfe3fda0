"""Decoding kernels' public API: a few new tokens per sequence against carried memory.

``delta_step`` advances the gated delta rule's state by T new tokens per sequence (no padded
chunk: the recurrence itself); ``cache_read_step`` reads the exact cache for the newest queries
of each sequence out of a slot buffer (cache slots, then the pending block), each row with its
own pending length, so the rows of a batch may be at different positions.

The host path is built for one call per token: the backend's schedule, runner and the traced
kernel are kept per (kernel, backend, device, dtypes, head dims, config), so a repeated call
costs a dict lookup plus the launch; outputs may be passed in (dense, written in place) and
the state updated in place. ``check=True`` (default) validates shapes, dtypes and devices,
and values where HOLA_CHECK_VALUES allows (as ``hola_dsl.ops`` does); ``check=False`` trusts the
caller (a model feeding its own tensors back) and skips every check: wrong shapes then read
out of bounds. Inputs are made dense either way (free when they are).
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Optional

import torch

from hola_dsl import backends, kernels, spec, validate

_PREPARED: dict[tuple, Callable[..., Any]] = {}


def _config_key(config: Optional[dict]) -> Any:
    return None if config is None else json.dumps(config, sort_keys=True, default=str)


def _prepared(kernel: str, backend: str, device: torch.device, dtype: torch.dtype, config: Optional[dict],
              static: tuple, grad_of: Optional[str] = None) -> Callable[..., Any]:
    """The call of ``kernel`` on ``backend`` for inputs of ``dtype`` on ``device`` with static
    dims ``static``: a function (*inputs, **options) -> result that plans and launches without
    completing the schedule or tracing the kernel again."""
    key = (kernel, backend, device, dtype, _config_key(config), static, grad_of is not None)
    hit = _PREPARED.get(key)
    if hit is not None:
        return hit
    # dtype: "auto" skips a backend that cannot compute it (TileLang CPU has no bf16 C type).
    # grad_of: the decode kernels have no backward, so a DSL backend would cut the outputs off
    # from autograd; "auto" then takes the reference and a named DSL backend is an error.
    impl = backends.resolve(backend, device.type, grad_of, kernel, dtype)
    if impl.prepare is None:                    # a backend of plain functions (reference)
        def call(*inputs, **options):
            return impl.run(kernel, *inputs, config=config, **options)
    else:
        kspec = kernels.spec(kernel)
        sched, run_one = impl.prepare(kernel, config, device, dtype)
        traced: dict = {}

        def call(*inputs, **options):
            plan = kspec.plan(sched, *inputs, **options)
            for step in plan.launches:
                ir_kernel = traced.get(step.kernel.name)
                if ir_kernel is None:           # one trace per launch kind: static dims are in the key
                    ir_kernel = traced[step.kernel.name] = spec.specialize(step)
                run_one(ir_kernel, step.args)
            return plan.finish()
    _PREPARED[key] = call
    return call


def _check_out(name: str, out: Optional[torch.Tensor], shape: tuple, dtype: torch.dtype, device) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name}: expected a {dtype} tensor of shape {tuple(shape)}, got {got}")
    if out.device != device or not out.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor on {device}, got one on {out.device} "
                         f"(contiguous: {out.is_contiguous()})")


def delta_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: Optional[float] = None,
    in_place: bool = False,
    o: Optional[torch.Tensor] = None,
    m: Optional[torch.Tensor] = None,
    backend: str = "auto",
    config: Optional[dict] = None,
    check: bool = True,
):
    """T new tokens per sequence of the gated delta rule (docs/math.md section 1), token by token.

    q, k: [B, T, H, K] (k unit L2 for a stable rule); v: [B, T, H, V]; g (log-decay, <= 0),
    beta (in [0, 1]): [B, T, H]; state: [B, H, K, V] float32, the state before the new tokens.
    Returns (o [B, T, H, V] in v's dtype, m [B, T, H] float32 surprise scores, the state after
    them [B, H, K, V] float32). ``in_place``: the new state is written into ``state`` (and it is
    returned); ``o``, ``m``: dense tensors to write the outputs into. Equals
    ``hola_dsl.ops.delta_scan`` with ``initial_state=state`` to the tolerances of docs/tolerances.md.
    """
    if check:
        dims = validate.same_dims({
            "q": validate.tensor("q", q, "BTHK"), "k": validate.tensor("k", k, "BTHK"),
            "v": validate.tensor("v", v, "BTHV"), "g": validate.tensor("g", g, "BTH"),
            "beta": validate.tensor("beta", beta, "BTH"),
            "state": validate.tensor("state", state, "BHKV", dtypes=(torch.float32,)),
        })
        if k.dtype != q.dtype or v.dtype != q.dtype:
            raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got k {k.dtype}, v {v.dtype}")
        device = validate.same_device(q=q, k=k, v=v, g=g, beta=beta, state=state)
        B, T, H, V = dims["B"], dims["T"], dims["H"], dims["V"]
        _check_out("o", o, (B, T, H, V), v.dtype, device)
        _check_out("m", m, (B, T, H), torch.float32, device)
        validate.in_range("g", g, None, 0.0)
        validate.in_range("beta", beta, 0.0, 1.0)
        for name, x in (("q", q), ("k", k), ("v", v), ("state", state)):
            validate.finite(name, x)
        if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise ValueError(f"scale: expected a finite float or None, got {scale!r}")
    # Kernels address tensors as dense row-major (free when they are: the model's v is a view).
    q, k, v, g, beta = spec.dense(q, k, v, g, beta)
    if not in_place:
        state = state.contiguous()
    elif not state.is_contiguous():
        raise ValueError("state: in_place needs a contiguous state tensor")
    K = q.shape[-1]
    call = _prepared("delta_step", backend, q.device, q.dtype, config, (K, v.shape[-1], g.dtype, beta.dtype),
                     backends.needs_grad(q=q, k=k, v=v, g=g, beta=beta, state=state))
    return call(q, k, v, g, beta, state, scale=float(K ** -0.5 if scale is None else scale), in_place=bool(in_place),
                o=o, m=m)


def cache_read_step(
    q: torch.Tensor,
    slot_k: torch.Tensor,
    slot_v: torch.Tensor,
    slot_pos: torch.Tensor,
    pending: torch.Tensor,
    gamma_q: torch.Tensor,
    gamma_k: torch.Tensor,
    sink: torch.Tensor,
    *,
    capacity: int,
    eps: float = 1e-6,
    o: Optional[torch.Tensor] = None,
    backend: str = "auto",
    config: Optional[dict] = None,
    check: bool = True,
) -> torch.Tensor:
    """The cache read (docs/math.md section 3) of the T newest queries of each sequence.

    q: [B, T, H, K]; slot_k: [B, H, N, K], slot_v: [B, H, N, V] with N >= capacity: slots
    [0, capacity) hold the cache (slot_pos [B, H, N] int64 >= 0 there, -1 for an empty slot),
    slots [capacity, N) the current block's tokens in position order; pending: [B] int32, how
    many of those row b holds (its T new tokens last, so T <= pending[b] <= N - capacity);
    gamma_q, gamma_k: [K]; sink: [H]. Query t of row b sees the sink, the cache and the first
    pending[b] - T + t + 1 block tokens. Returns o_cache [B, T, H, V] in slot_v's dtype (before
    the sigmoid gate), written into ``o`` when given (dense).
    """
    if check:
        dims = validate.same_dims({
            "q": validate.tensor("q", q, "BTHK"),
            "slot_k": validate.tensor("slot_k", slot_k, "BHNK"),
            "slot_v": validate.tensor("slot_v", slot_v, "BHNV"),
            "slot_pos": validate.tensor("slot_pos", slot_pos, "BHN", dtypes=(torch.int64,)),
            "pending": validate.tensor("pending", pending, "B", dtypes=(torch.int32,)),
            "gamma_q": validate.tensor("gamma_q", gamma_q, "K"),
            "gamma_k": validate.tensor("gamma_k", gamma_k, "K"),
            "sink": validate.tensor("sink", sink, "H"),
        })
        if slot_k.dtype != q.dtype or slot_v.dtype != q.dtype:
            raise TypeError(f"slot_k, slot_v: expected the dtype of q ({q.dtype}), got {slot_k.dtype}, {slot_v.dtype}")
        validate.positive_int("capacity", capacity)
        if dims["N"] < capacity:
            raise ValueError(f"slot_k: {dims['N']} slots, expected at least capacity = {capacity}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        device = validate.same_device(q=q, slot_k=slot_k, slot_v=slot_v, slot_pos=slot_pos, pending=pending,
                                      gamma_q=gamma_q, gamma_k=gamma_k, sink=sink)
        _check_out("o", o, (dims["B"], dims["T"], dims["H"], dims["V"]), slot_v.dtype, device)
        if validate.values_checked() and pending.numel():
            lo, hi = int(pending.min()), int(pending.max())
            if lo < dims["T"] or hi > dims["N"] - capacity:
                raise ValueError(f"pending: expected values in [T, N - capacity] = [{dims['T']}, "
                                 f"{dims['N'] - capacity}], got values in [{lo}, {hi}]")
            for name, x in (("q", q), ("slot_k", slot_k), ("slot_v", slot_v), ("gamma_q", gamma_q),
                            ("gamma_k", gamma_k), ("sink", sink)):
                validate.finite(name, x)
    q, slot_k, slot_v, slot_pos, pending, gamma_q, gamma_k, sink = spec.dense(
        q, slot_k, slot_v, slot_pos, pending, gamma_q, gamma_k, sink)
    call = _prepared("cache_read_step", backend, q.device, q.dtype, config,
                     (q.shape[-1], slot_v.shape[-1], int(capacity), float(eps), gamma_q.dtype, gamma_k.dtype, sink.dtype),
                     backends.needs_grad(q=q, slot_k=slot_k, slot_v=slot_v, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink))
    return call(q, slot_k, slot_v, slot_pos, pending, gamma_q, gamma_k, sink, capacity=int(capacity),
                eps=float(eps), o=o)
