"""Fast, differentiable PyTorch implementations of the kernels (backend "reference").

Float32 accumulation whatever the input dtype. These are what the model trains with on the
CPU and the yardstick the generated kernels are benchmarked against; the float64 oracle in
``hola_dsl.reference.oracle`` is what everything, these included, is checked against.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from hola_dsl.norms import normalize, vector_norm
from hola_dsl.reference.oracle import ranked_scores


def _to_chunks(x: torch.Tensor, pad: int, n: int, bt: int) -> torch.Tensor:
    """[B, T, H, *rest] -> float32 [B, H, N, BT, *rest], zero-padded at the end of T."""
    x = x.float()
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
    x = x.transpose(1, 2)
    return x.reshape(x.shape[0], x.shape[1], n, bt, *x.shape[3:])


def chunked_delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
):
    """Chunked WY/UT form of the gated delta rule (docs/math.md section 1).

    q, k: [B, T, H, K] (unit L2 norm expected); v: [B, T, H, V]; g, beta: [B, T, H].
    Returns (o [B, T, H, V] in v's dtype, m [B, T, H] float32, final_state [B, H, K, V] float32
    or None). Padding tokens have g = 0 and beta = 0, so they change neither outputs nor state.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    bt = chunk_size
    n = max(1, math.ceil(T / bt))
    pad = n * bt - T
    qc, kc, vc = (_to_chunks(x, pad, n, bt) for x in (q, k, v))      # [B, H, N, BT, D]
    gc, bc = (_to_chunks(x, pad, n, bt) for x in (g, beta))          # [B, H, N, BT]
    qc = qc * scale

    # Log decays summed in float64: the decays are differences of these sums, and with strong
    # gates (|G| ~ 600 over a chunk) float32 sums lose 1e-4 of an exponent per step, a 1e-5
    # relative error in the final state (hola_dsl/kernels/delta_scan.py does the same).
    G64 = gc.to(torch.float32 if gc.device.type == "mps" else torch.float64).cumsum(-1)  # MPS has no float64
    G = G64.float()
    causal = torch.ones(bt, bt, dtype=torch.bool, device=q.device).tril()
    # Gamma_ij = exp(G_i - G_j) on and below the diagonal; masking before exp avoids overflow.
    gamma = torch.exp((G64[..., :, None] - G64[..., None, :]).float().masked_fill(~causal, float("-inf")))
    a = (bc[..., :, None] * (kc @ kc.transpose(-1, -2)) * gamma).tril(-1)
    eye = torch.eye(bt, dtype=a.dtype, device=a.device)
    rhs = torch.cat([bc[..., None] * vc, bc[..., None] * kc * G.exp()[..., None]], dim=-1)
    # Tm = (I + A)^-1 by triangular solve (forward substitution), not a product of powers: it
    # stays exact on repeated keys (docs/design.md). Solving against I and multiplying is ~10x faster
    # on the CPU than solving against the wide right-hand side directly.
    tm = torch.linalg.solve_triangular(eye + a, eye.expand_as(a), upper=False, unitriangular=True)
    uw = tm @ rhs
    U, W = uw.split([V, K], dim=-1)
    qk = (qc @ kc.transpose(-1, -2)) * gamma
    q_dec = qc * G.exp()[..., None]
    # exp of the float64 sum: the chunk-to-chunk decay of the state compounds over the sequence
    decay_last = G64[..., -1].exp().float()                          # [B, H, N]
    k_dec = kc * torch.exp((G64[..., -1:] - G64).float())[..., None]

    S = torch.zeros(B, H, K, V, dtype=torch.float32, device=q.device)
    if initial_state is not None:
        S = initial_state.float()
    outs, us = [], []
    for i in range(n):
        u = U[:, :, i] - W[:, :, i] @ S                               # = beta * e for the chunk
        outs.append(q_dec[:, :, i] @ S + qk[:, :, i] @ u)
        us.append(u)
        S = decay_last[:, :, i, None, None] * S + k_dec[:, :, i].transpose(-1, -2) @ u
    o = torch.stack(outs, 2).reshape(B, H, n * bt, V)[:, :, :T].transpose(1, 2)
    m = vector_norm(torch.stack(us, 2)).reshape(B, H, n * bt)[:, :, :T].transpose(1, 2)
    return o.to(v.dtype), m.contiguous(), (S if output_final_state else None)


def blockwise_cache_select(
    scores: torch.Tensor, *, capacity: int = 64, block_size: int = 256, policy: str = "hola"
) -> torch.Tensor:
    """Cache_n for every block n, built by merging block n-1 into Cache_{n-1}.

    The top-w of a union equals the top-w of (top-w of one part) U (the other part), so each
    step sorts at most capacity + block_size candidates. scores: [B, T, H]; a NaN score counts
    as -inf. Returns idx [B, H, NB, capacity] int64, rows best first (score desc, then position
    desc), -1 padded.
    """
    B, T, H = scores.shape
    nb = math.ceil(T / block_size)
    idx = torch.full((B, H, nb, capacity), -1, dtype=torch.int64, device=scores.device)
    if policy == "recency":
        for i in range(1, nb):
            end = i * block_size
            pos = torch.arange(end - 1, max(end - capacity, 0) - 1, -1, device=scores.device)
            idx[:, :, i, : pos.numel()] = pos
        return idx
    s = ranked_scores(scores.detach()).transpose(1, 2)                # [B, H, T]
    cur_s = s[:, :, :0]
    cur_p = torch.empty(B, H, 0, dtype=torch.int64, device=scores.device)
    for i in range(1, nb):
        lo, hi = (i - 1) * block_size, i * block_size
        # Block positions (newest first) all follow the cached ones, and the cache is kept in
        # rank order, so a stable descending sort breaks score ties by later position.
        blk_p = torch.arange(hi - 1, lo - 1, -1, device=scores.device).expand(B, H, -1)
        cand_s = torch.cat([s[:, :, lo:hi].flip(-1), cur_s], dim=-1)
        cand_p = torch.cat([blk_p, cur_p], dim=-1)
        order = torch.sort(cand_s, dim=-1, descending=True, stable=True).indices[..., :capacity]
        cur_s, cur_p = cand_s.gather(-1, order), cand_p.gather(-1, order)
        idx[:, :, i, : cur_p.shape[-1]] = cur_p
    return idx


def blockwise_lola_select(
    k: torch.Tensor, v: torch.Tensor, states: torch.Tensor, *, capacity: int = 64, block_size: int = 256
) -> torch.Tensor:
    """Policy "lola" (docs/math.md section 2): Cache_n = top-w of Cache_{n-1} and block n-1, rescored
    against the state at block n's start.

    k: [B, T, H, K]; v: [B, T, H, V]; states: [B, H, NB, K, V] (row n: the scan's state after
    the first n * block_size tokens; row 0 is not read). Candidates are ranked by the squared
    self-recall error ||v_j - S^T k_j||^2 in float32 (the order of sre itself; NaN counts as
    -inf), then by later position. Returns idx [B, H, NB, capacity] int64, rows best first, -1
    padded.
    """
    B, T, H, _ = k.shape
    nb = math.ceil(T / block_size)
    device = k.device
    idx = torch.full((B, H, nb, capacity), -1, dtype=torch.int64, device=device)
    # [B, H, T, D], contiguous: a gather along T of the transposed view is ~10x slower.
    kt, vt = (x.detach().float().transpose(1, 2).contiguous() for x in (k, v))
    cur_p = torch.empty(B, H, 0, dtype=torch.int64, device=device)
    for n in range(1, nb):
        lo, hi = (n - 1) * block_size, n * block_size
        cand = torch.cat([cur_p, torch.arange(lo, hi, device=device).expand(B, H, -1)], dim=-1)
        kc = kt.gather(2, cand[..., None].expand(-1, -1, -1, kt.shape[-1]))
        vc = vt.gather(2, cand[..., None].expand(-1, -1, -1, vt.shape[-1]))
        e = vc - kc @ states[:, :, n].detach().float().contiguous()
        s = ranked_scores((e * e).sum(-1))
        by_pos = torch.sort(cand, dim=-1, descending=True, stable=True).indices
        order = by_pos.gather(-1, torch.sort(s.gather(-1, by_pos), dim=-1, descending=True, stable=True).indices)
        cur_p = cand.gather(-1, order[..., :capacity])
        idx[:, :, n, : cur_p.shape[-1]] = cur_p
    return idx


def batched_cache_read(
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
) -> torch.Tensor:
    """All cache blocks at once: logits against [sink | W cache entries | C block tokens].

    q, k: [B, T, H, K]; v: [B, T, H, V]; idx: [B, H, NB, W]; gamma_q, gamma_k: [K]; sink: [H].
    Returns o_cache [B, T, H, V] in v's dtype.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = block_size
    nb, w = idx.shape[2], idx.shape[3]
    pad = nb * C - T
    qn = normalize(q.float(), eps, mean=True) * gamma_q.float()
    kn = normalize(k.float(), eps, mean=True) * gamma_k.float()
    qb, kb, vb = (_to_chunks(x, pad, nb, C) for x in (qn, kn, v))    # [B, H, NB, C, D]

    take = idx.clamp(min=0).reshape(B, H, nb * w, 1)
    k_cache = kn.transpose(1, 2).gather(2, take.expand(-1, -1, -1, K)).reshape(B, H, nb, w, K)
    v_cache = v.float().transpose(1, 2).gather(2, take.expand(-1, -1, -1, V)).reshape(B, H, nb, w, V)

    inv = 1.0 / math.sqrt(K)
    l_cache = (qb @ k_cache.transpose(-1, -2) * inv).masked_fill((idx < 0)[:, :, :, None, :], float("-inf"))
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    l_blk = (qb @ kb.transpose(-1, -2) * inv).masked_fill(~causal, float("-inf"))
    l_sink = sink.float().view(1, H, 1, 1, 1).expand(B, H, nb, C, 1)
    p = torch.softmax(torch.cat([l_sink, l_cache, l_blk], dim=-1), dim=-1)
    o = p[..., 1 : 1 + w] @ v_cache + p[..., 1 + w :] @ vb          # the sink contributes zero
    return o.reshape(B, H, nb * C, V)[:, :, :T].transpose(1, 2).to(v.dtype)
