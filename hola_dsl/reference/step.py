"""PyTorch implementations of the two decode kernels (backend "reference"): the recurrent step
and the cache read of a decode step, float32 accumulation. Arguments as in
``hola_dsl.decode`` (validated there); the DSL kernels are in hola_dsl/kernels/delta_step.py
and cache_read_step.py."""

from __future__ import annotations

import math
from typing import Optional

import torch

from hola_dsl.norms import normalize, vector_norm


def recurrent_delta_step(q, k, v, g, beta, state, *, scale: float, in_place: bool = False,
                         o: Optional[torch.Tensor] = None, m: Optional[torch.Tensor] = None):
    """T tokens of the gated delta rule from ``state`` [B, H, K, V] float32, one after another.
    Returns (o [B, T, H, V] in v's dtype, m [B, T, H] float32, new state float32)."""
    B, T, H, K = q.shape
    S = state.float() if not in_place else state
    os_, ms = [], []
    for t in range(T):
        kt, qt = k[:, t].float(), q[:, t].float()                           # [B, H, K]
        S1 = torch.exp(g[:, t].float())[..., None, None] * S
        u = beta[:, t].float()[..., None] * (v[:, t].float() - torch.einsum("bhkv,bhk->bhv", S1, kt))
        S = S1 + kt[..., :, None] * u[..., None, :]
        os_.append(torch.einsum("bhkv,bhk->bhv", S, qt) * scale)
        ms.append(vector_norm(u))
    out_o = torch.stack(os_, 1).to(v.dtype) if T else v.new_empty(B, 0, H, v.shape[-1])
    out_m = torch.stack(ms, 1) if T else torch.empty(B, 0, H)
    if o is not None:
        o.copy_(out_o)
        out_o = o
    if m is not None:
        m.copy_(out_m)
        out_m = m
    if in_place:
        state.copy_(S)
        S = state
    return out_o, out_m, S


def slot_cache_read(q, sk, sv, spos, plen, gamma_q, gamma_k, sink, *, capacity: int, eps: float,
                    o: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Softmax over the sink, the cache slots [0, capacity) with spos >= 0 and, for query t of
    row b, the first plen[b] - T + t + 1 pending slots. Returns o_cache [B, T, H, V]."""
    B, T, H, K = q.shape
    N = sk.shape[2]
    qc = normalize(q.float(), eps, mean=True) * gamma_q.float()               # [B, T, H, K]
    kc = normalize(sk.float(), eps, mean=True) * gamma_k.float()              # [B, H, N, K]
    logits = torch.einsum("bthk,bhnk->bthn", qc, kc) / math.sqrt(K)
    slot = torch.arange(N, device=q.device)
    seen = plen.long().view(B, 1) - T + torch.arange(T, device=q.device).view(1, T) + 1   # [B, T]
    pending = (slot >= capacity) & (slot - capacity < seen[..., None])                    # [B, T, N]
    cached = (slot < capacity) & (spos >= 0)                                              # [B, H, N]
    visible = pending[:, :, None, :] | cached[:, None, :, :]
    logits = logits.masked_fill(~visible, -math.inf)
    s = sink.float().view(1, 1, H, 1).expand(B, T, H, 1)
    p = torch.softmax(torch.cat([s, logits], -1), -1)[..., 1:]
    out = torch.einsum("bthn,bhnv->bthv", p, sv.float()).to(sv.dtype)
    if o is not None:
        o.copy_(out)
        return o
    return out
