"""The float64 recurrent oracle of docs/math.md sections 1-3, written for clarity, not speed.

Every implementation in the project (chunked PyTorch, eager DSL, Triton, TileLang, the model)
is checked against these functions (policy "lola" scores with keys, values and block-start
states instead of given scores: ``naive_lola_select``). Inputs may be any float dtype; everything
is computed and returned in float64 (idx in int64). The scan and the read stay differentiable, so gradients
of faster implementations can be checked against them too.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from hola_dsl import varlen


def _f64(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if x is None else x.to(torch.float64)


def naive_delta_scan(
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
    cu_seqlens: Optional[torch.Tensor] = None,
):
    """Token-by-token gated delta rule.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g, beta: [B, T, H]; initial_state: [B, H, K, V].
    Returns (o [B, T, H, V], m [B, T, H], final_state [B, H, K, V] or None), all float64.
    cu_seqlens [N + 1] (B = 1): each packed sequence alone, states [N, H, K, V].
    """
    if cu_seqlens is not None:
        return varlen.scan(naive_delta_scan, q, k, v, g, beta, _offsets(cu_seqlens), initial_state=initial_state,
                           output_final_state=output_final_state, scale=scale, use_qk_l2norm=use_qk_l2norm)
    q, k, v, g, beta = (_f64(x) for x in (q, k, v, g, beta))
    B, T, H, K = q.shape
    V = v.shape[-1]
    if use_qk_l2norm:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    scale = K ** -0.5 if scale is None else scale
    S = torch.zeros(B, H, K, V, dtype=torch.float64, device=q.device)
    if initial_state is not None:
        S = _f64(initial_state).clone()
    o = torch.empty(B, T, H, V, dtype=torch.float64, device=q.device)
    m = torch.empty(B, T, H, dtype=torch.float64, device=q.device)
    for t in range(T):
        k_t, v_t, q_t = k[:, t], v[:, t], q[:, t]                  # [B, H, K], [B, H, V]
        S = torch.exp(g[:, t])[..., None, None] * S                # S' = alpha_t S_{t-1}
        e = v_t - torch.einsum("bhkv,bhk->bhv", S, k_t)            # residual v - S'^T k
        u = beta[:, t, :, None] * e
        S = S + k_t[..., :, None] * u[..., None, :]                # S = S' + k u^T
        o[:, t] = torch.einsum("bhkv,bhk->bhv", S, scale * q_t)
        m[:, t] = torch.linalg.vector_norm(u, dim=-1)
    return o, m, (S if output_final_state else None)


def _offsets(cu_seqlens: torch.Tensor) -> list[int]:
    return [int(x) for x in cu_seqlens.tolist()]


def ranked_scores(scores: torch.Tensor) -> torch.Tensor:
    """Scores as cache selection ranks them (docs/math.md section 2): a NaN score (possible only with
    value checks off) counts as -inf, the lowest score. The token stays a candidate, so it beats
    an empty slot and ties with -inf tokens (the later position wins)."""
    return torch.where(scores.isnan(), torch.full_like(scores, -math.inf), scores)


def naive_cache_select(
    scores: torch.Tensor, *, capacity: int = 64, block_size: int = 256, policy: str = "hola",
    cu_seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cache_n for every block n: the ``capacity`` best positions j < n * block_size.

    scores: [B, T, H]. Best means higher score, then later position (policy "recency" scores
    position j by j; NaN counts as -inf, see :func:`ranked_scores`). Returns idx
    [B, H, NB, capacity] int64, each row best first, -1 padded. cu_seqlens [N + 1] (B = 1):
    each packed sequence alone, rows and packed positions as ``hola_dsl.varlen`` lays them out.
    """
    if cu_seqlens is not None:
        return varlen.select(naive_cache_select, scores, _offsets(cu_seqlens), capacity=capacity,
                             block_size=block_size, policy=policy)
    B, T, H = scores.shape
    nb = math.ceil(T / block_size)
    idx = torch.full((B, H, nb, capacity), -1, dtype=torch.int64)
    s = ranked_scores(scores.detach().to(torch.float64).cpu())
    for b in range(B):
        for h in range(H):
            row = s[b, :, h].tolist()
            for n in range(nb):
                end = n * block_size
                keyed = [((row[j] if policy == "hola" else float(j)), j) for j in range(end)]
                keyed.sort(reverse=True)                            # score desc, then position desc
                chosen = [j for _, j in keyed[:capacity]]
                idx[b, h, n, : len(chosen)] = torch.tensor(chosen, dtype=torch.int64)
    return idx.to(scores.device)


def naive_block_states(
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    block_size: int = 256,
    initial_state: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The scan's state at the start of every cache block, token by token.

    k: [B, T, H, K] (unit L2, as the scan sees it); v: [B, T, H, V]; g, beta: [B, T, H].
    Returns states [B, H, NB, K, V] float64, NB = ceil(T / block_size): row n is the state after
    the first n * block_size tokens (S_{nC-1} of docs/math.md section 2; row 0 is the initial state).
    """
    B, T, H, K = k.shape
    nb = math.ceil(T / block_size)
    S = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64, device=k.device)
    if initial_state is not None:
        S = _f64(initial_state).clone()
    rows = []
    for n in range(nb):
        rows.append(S)
        if n + 1 < nb:
            blk = slice(n * block_size, (n + 1) * block_size)
            _, _, S = naive_delta_scan(k[:, blk], k[:, blk], v[:, blk], g[:, blk], beta[:, blk],
                                       initial_state=S, output_final_state=True)
    return torch.stack(rows, 2) if rows else S.new_zeros(B, H, 0, K, v.shape[-1])


def self_recall_error(k: torch.Tensor, v: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """LoLA's self-recall error ||v_j - S^T k_j||_2 of each row, float64: k [..., n, K],
    v [..., n, V], S [..., K, V] -> [..., n]."""
    k, v, S = _f64(k), _f64(v), _f64(S)
    return torch.linalg.vector_norm(v - k @ S, dim=-1)


def naive_lola_select(
    k: torch.Tensor, v: torch.Tensor, states: torch.Tensor, *, capacity: int = 64, block_size: int = 256
) -> torch.Tensor:
    """Cache_n of policy "lola" (docs/math.md section 2) for every block n, one block at a time.

    k: [B, T, H, K]; v: [B, T, H, V]; states: [B, H, NB, K, V], row n the scan's state at the
    start of block n (``naive_block_states``; row 0 is not read). Cache_n = the ``capacity``
    best of Cache_{n-1} and block n-1's tokens by sre_j = ||v_j - S_{nC-1}^T k_j||, higher sre
    then later position first (NaN counts as -inf). Returns idx [B, H, NB, capacity] int64,
    rows best first, -1 padded.
    """
    B, T, H, _ = k.shape
    nb = math.ceil(T / block_size)
    idx = torch.full((B, H, nb, capacity), -1, dtype=torch.int64)
    device = k.device
    k, v, states = (x.detach().cpu() for x in (k, v, states))
    for b in range(B):
        for h in range(H):
            cache: list[int] = []
            for n in range(1, nb):
                cand = cache + list(range((n - 1) * block_size, n * block_size))
                at = torch.tensor(cand, dtype=torch.int64)
                sre = ranked_scores(self_recall_error(k[b, at, h], v[b, at, h], states[b, h, n])).tolist()
                keyed = sorted(zip(sre, cand), reverse=True)             # sre desc, then position desc
                cache = [j for _, j in keyed[:capacity]]
                idx[b, h, n, : len(cache)] = torch.tensor(cache, dtype=torch.int64)
    return idx.to(device)


def _rmsnorm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def naive_cache_read(
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
    cu_seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Softmax over {sink} U Cache_n U {nC <= j <= t} for every query t, one query at a time.

    q, k: [B, T, H, K]; v: [B, T, H, V]; idx: [B, H, NB, W]; gamma_q, gamma_k: [K]; sink: [H].
    Returns o_cache [B, T, H, V] float64. cu_seqlens [N + 1] (B = 1): each packed sequence
    alone, reading the packed idx of ``naive_cache_select``.
    """
    if cu_seqlens is not None:
        return varlen.read(naive_cache_read, q, k, v, idx, gamma_q, gamma_k, sink, _offsets(cu_seqlens),
                           block_size=block_size, eps=eps)
    q, k, v, gamma_q, gamma_k, sink = (_f64(x) for x in (q, k, v, gamma_q, gamma_k, sink))
    B, T, H, K = q.shape
    qc = _rmsnorm(q, eps) * gamma_q
    kc = _rmsnorm(k, eps) * gamma_k
    o = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64, device=q.device)
    for b in range(B):
        for h in range(H):
            rows = idx[b, h].tolist()
            for t in range(T):
                n = t // block_size
                cached = [j for j in rows[n] if j >= 0]
                visible = torch.tensor(cached + list(range(n * block_size, t + 1)), dtype=torch.int64)
                logits = kc[b, visible, h] @ qc[b, t, h] / math.sqrt(K)
                logits = torch.cat([sink[h].view(1), logits])      # the sink's value is zero
                p = torch.softmax(logits, dim=0)
                o[b, t, h] = p[1:] @ v[b, visible, h]
    return o
