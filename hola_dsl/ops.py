"""The public API of SPEC.md section 5: three functions, every backend behind them.

Each function validates its inputs once (see ``hola_dsl.validate``), normalises the arguments
every backend shares (scale, optional q/k L2 norm), picks the backend and hands over.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional

import torch

import schedules
from hola_dsl import backends, validate
from hola_dsl import norms, varlen
from schedules.lookup import config_for

L2NORM_EPS = 1e-6


def l2norm(x: torch.Tensor, eps: float = L2NORM_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, computed in float32 without overflow or
    underflow for any float32 entries (scaled before squaring), returned in x's dtype."""
    return norms.normalize(x.float(), eps, mean=False).to(x.dtype)


def _packed(offsets: Optional[list[int]]) -> dict:
    """The backends' option for packed sequences: ``offsets`` (checked cu_seqlens as ints),
    passed only when there are some, so a call without them reaches a backend unchanged."""
    return {} if offsets is None else {"offsets": offsets}


def _sequences(name: str, n: int, offsets: list[int]) -> int:
    """Check that a per-sequence tensor's leading dim ``n`` is the number of packed sequences."""
    if n != len(offsets) - 1:
        raise ValueError(f"{name}: dim N is {n}, expected one per sequence of cu_seqlens, N = {len(offsets) - 1}")
    return 1     # stands for B = 1 in the shape checks that follow


def _scheduled(run: Callable[[Optional[dict]], Any], config: Optional[dict],
               tuned: Callable[[], Optional[dict]]) -> Any:
    """``run(config)`` with the caller's config (the backend checks it: a bad one is a
    ConfigError naming ``config`` and the knob). Without one, ``run`` gets the tuned config
    (``tuned()``, already checked against its record's target), and the backend's default if
    the backend still rejects it: a tuning record never stops a kernel call (SPEC.md section 7)."""
    if config is not None:
        return run(config)
    tuned_config = tuned()
    if tuned_config is None:
        return run(None)
    try:
        return run(tuned_config)
    except schedules.ConfigError as exc:
        warnings.warn(f"tuned schedule skipped ({exc}); using the backend's default", RuntimeWarning, stacklevel=3)
        return run(None)


def delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
    config: Optional[dict] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
):
    """Gated delta-rule scan (SPEC.md section 1).

    q, k: [B, T, H, K]; v: [B, T, H, V]; g (log-decay, <= 0), beta (in [0, 1]): [B, T, H];
    initial_state: [B, H, K, V] or None. Returns (o [B, T, H, V] in v's dtype,
    m [B, T, H] float32 surprise scores, final_state [B, H, K, V] float32 or None).
    cu_seqlens: None, or int32/int64 offsets [N + 1] of N sequences packed along T with B = 1
    (``hola_dsl.varlen``); the states are then per sequence, [N, H, K, V].
    """
    dims = validate.same_dims({
        "q": validate.tensor("q", q, "BTHK"),
        "k": validate.tensor("k", k, "BTHK"),
        "v": validate.tensor("v", v, "BTHV"),
        "g": validate.tensor("g", g, "BTH"),
        "beta": validate.tensor("beta", beta, "BTH"),
    })
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got k {k.dtype}, v {v.dtype}")
    offsets = None if cu_seqlens is None else validate.cu_seqlens(cu_seqlens, dims["B"], dims["T"])
    if initial_state is not None:
        state_dims = validate.tensor("initial_state", initial_state, "BHKV")
        if offsets is not None:
            state_dims["B"] = _sequences("initial_state", state_dims["B"], offsets)
        validate.same_dims({"q, k, v": dims, "initial_state": state_dims})
    device = validate.same_device(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state)
    validate.positive_int("chunk_size", chunk_size, power_of_two=True)
    validate.in_range("g", g, None, 0.0)
    validate.in_range("beta", beta, 0.0, 1.0)
    for name, x in (("q", q), ("k", k), ("v", v), ("initial_state", initial_state)):
        if x is not None:
            validate.finite(name, x)
    if scale is None:
        scale = dims["K"] ** -0.5
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale: expected a finite float or None, got {scale!r}")
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    else:
        validate.stable_keys(k, beta)
    impl = backends.resolve(backend, device.type, backends.needs_grad(
        q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state))
    return _scheduled(
        lambda cfg: impl.run("delta_scan", q, k, v, g, beta, scale=float(scale), initial_state=initial_state,
                             output_final_state=bool(output_final_state), chunk_size=chunk_size, config=cfg,
                             **_packed(offsets)),
        config, lambda: config_for("delta_scan", impl.name, device, q.dtype, {"K": dims["K"], "V": dims["V"]}, dims["T"]))


def cache_select(
    scores: torch.Tensor,
    *,
    capacity: int = 64,
    block_size: int = 256,
    policy: str = "hola",
    backend: str = "auto",
    config: Optional[dict] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Block-wise top-w cache selection (SPEC.md section 2).

    scores: [B, T, H] (ignored for policy "recency"). Returns idx [B, H, NB, capacity] int64 with
    NB = ceil(T / block_size); row n lists Cache_n best first (higher score, then later position),
    padded with -1.
    cu_seqlens (offsets [N + 1], B = 1, ``hola_dsl.varlen``): blocks restart at each sequence;
    idx is [1, H, sum_i ceil(len_i / block_size), capacity], each sequence's rows in turn, its
    entries packed positions (a sequence's own position + cu_seqlens[i]).
    """
    sdims = validate.tensor("scores", scores, "BTH", dtypes=validate.FLOAT_DTYPES + (torch.float64,))
    offsets = None if cu_seqlens is None else validate.cu_seqlens(cu_seqlens, sdims["B"], sdims["T"])
    validate.positive_int("capacity", capacity)
    validate.positive_int("block_size", block_size)
    validate.policy(policy)
    if policy == "hola":
        validate.no_nan("scores", scores)
    impl = backends.resolve(backend, scores.device.type)
    return _scheduled(
        lambda cfg: impl.run("cache_select", scores, capacity=capacity, block_size=block_size, policy=policy,
                             config=cfg, **_packed(offsets)),
        config, lambda: config_for("cache_select", impl.name, scores.device, scores.dtype,
                                   {"W": capacity, "C": block_size}, scores.shape[1]))


def cache_read(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    gamma_q: torch.Tensor,
    gamma_k: torch.Tensor,
    sink: torch.Tensor,
    *,
    block_size: int = 256,
    eps: float = 1e-6,
    backend: str = "auto",
    config: Optional[dict] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Softmax read of the exact cache plus the causal block and a sink (SPEC.md section 3).

    q, k: [B, T, H, K]; v: [B, T, H, V]; idx: [B, H, NB, W] int64 from ``cache_select``;
    gamma_q, gamma_k: [K]; sink: [H] logits. Returns o_cache [B, T, H, V] in v's dtype (before
    the sigmoid gate). cu_seqlens: as ``cache_select``'s, whose packed idx this reads.
    """
    dims = validate.same_dims({
        "q": validate.tensor("q", q, "BTHK"),
        "k": validate.tensor("k", k, "BTHK"),
        "v": validate.tensor("v", v, "BTHV"),
        "idx": validate.tensor("idx", idx, ("B", "H", "NB", "W"), dtypes=(torch.int64,)),
        "gamma_q": validate.tensor("gamma_q", gamma_q, "K"),
        "gamma_k": validate.tensor("gamma_k", gamma_k, "K"),
        "sink": validate.tensor("sink", sink, "H"),
    })
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got k {k.dtype}, v {v.dtype}")
    validate.positive_int("block_size", block_size)
    offsets = None if cu_seqlens is None else validate.cu_seqlens(cu_seqlens, dims["B"], dims["T"])
    if offsets is None:
        nb, rule = -(-dims["T"] // block_size), f"ceil(T / block_size) = ceil({dims['T']} / {block_size})"
    else:
        nb, rule = varlen.block_offsets(offsets, block_size)[-1], "sum_i ceil(len_i / block_size) over cu_seqlens"
    if dims["NB"] != nb:
        raise ValueError(f"idx: dim NB is {dims['NB']}, expected {rule} = {nb}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps: expected a positive float, got {eps!r}")
    device = validate.same_device(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink)
    if offsets is None:
        validate.cache_index(idx, dims["T"], block_size)
    else:
        validate.packed_cache_index(idx, offsets, block_size)
    for name, x in (("q", q), ("k", k), ("v", v), ("gamma_q", gamma_q), ("gamma_k", gamma_k), ("sink", sink)):
        validate.finite(name, x)
    impl = backends.resolve(backend, device.type, backends.needs_grad(
        q=q, k=k, v=v, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink))
    return _scheduled(
        lambda cfg: impl.run("cache_read", q, k, v, idx, gamma_q, gamma_k, sink, block_size=block_size,
                             eps=float(eps), config=cfg, **_packed(offsets)),
        config, lambda: config_for("cache_read", impl.name, device, q.dtype,
                                   {"K": dims["K"], "V": dims["V"], "W": dims["W"], "C": block_size}, dims["T"]))
