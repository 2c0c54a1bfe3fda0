"""Norms in float32 that neither overflow nor underflow (docs/math.md sections 1 and 3), in torch.

A square of a float32 entry overflows above about 1.8e19 and loses digits below about 1e-19
(its square is then subnormal), so every norm here divides a row by a scale first, as hypot
does: here the row's largest magnitude, so every scaled entry is at most 1 and the largest is
1. The DSL kernels do the same in tile form (``hola_dsl/kernels``) with the row's mean
magnitude as the scale (a row sum vectorises on a CPU where a row max does not). The chunked
reference, the ``use_qk_l2norm`` path (``hola_dsl.ops.l2norm``) and the DSL backends' host
step use these. The results do not depend on the scale, so it carries no gradient.
"""

from __future__ import annotations

import math

import torch


def _row_scale(x: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """[..., 1] max(max |x| over the last dim, floor), 1 where that is 0; no gradient."""
    # max |x|: abs + amax vectorises; linalg.vector_norm(x, inf) (no |x| copy) is ~9x slower on a CPU
    s = x.detach().abs().amax(-1, keepdim=True)
    if floor > 0:
        s = s.clamp(min=floor)
    return torch.where(s > 0, s, torch.ones_like(s))


def normalize(x: torch.Tensor, eps: float, *, mean: bool) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (``mean``: mean(x^2), i.e. RMSNorm), any
    float32 magnitude. With s = max(max |x|, sqrt(eps)) this is
    (x / s) / sqrt(sum((x / s)^2) + eps / s^2), every term of which is at most 1."""
    if x.shape[-1] == 0:
        return x
    s = _row_scale(x, math.sqrt(eps))
    xs = x / s
    sq = (xs * xs).sum(-1, keepdim=True)
    if mean:
        sq = sq / x.shape[-1]
    e = math.sqrt(eps) / s                               # sqrt(eps / s^2) <= 1: s^2 could overflow
    return xs * torch.rsqrt(sq + e * e)


def combine_norms(scale: torch.Tensor, ss: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """||u||_2 of a vector split into parts along ``dim``, part i given as a scale s_i > 0 and
    ss_i = sum((u / s_i)^2) over its entries (the DSL scan writes these per V tile). With
    A = max_i s_i, ||u|| = A * sqrt(sum_i ss_i (s_i / A)^2); each term is sum((u / A)^2), at
    most the part's length times its largest (u / s_i)^2."""
    if scale.shape[dim] == 1:
        return scale.squeeze(dim) * ss.squeeze(dim).sqrt()
    big = scale.amax(dim, keepdim=True)
    r = scale / big
    return big.squeeze(dim) * (ss * r * r).sum(dim).sqrt()


def vector_norm(u: torch.Tensor) -> torch.Tensor:
    """||u||_2 over the last dim for any float32 magnitude (torch's overflows above ~1e19 and
    loses digits below ~1e-20)."""
    if u.shape[-1] == 0:
        return u.sum(-1)
    s = _row_scale(u)
    return s[..., 0] * torch.linalg.vector_norm(u / s, dim=-1)
