"""Log-decay sums of the scan in float32 without cancellation (SPEC.md section 1), shared by the
fused scan and its phases.

Every decay the scan applies is exp of a sum of gates g <= 0 over a segment of a chunk. Taken as
a difference of two float32 prefix sums, G_i - G_j, it loses the digits the sums share: with
strong gates (|G| ~ 1000 over a chunk) that is 1e-4 of an exponent, a 1e-5 error in the final
state. Instead each gate is split into a coarse and a fine part, g = hi + lo:

* g is first clamped at -128: exp of anything below -104 is 0 in float32, so no decay changes,
  and g * 2^F then fits an int32;
* hi = trunc(g * 2^F) / 2^F (a cast to int32 and back) is a multiple of 2^-F with |hi| <= 128, so
  any sum of at most BT of them is a multiple of 2^-F below 2^(24-F) = 128 BT in magnitude: every
  prefix sum Hs and every difference Hs_i - Hs_j is EXACT in float32 (F is chosen for that);
* lo = g - hi is exact too and below 2^-F, so its prefix sums Ls stay tiny (|Ls| < BT 2^-F) and
  their differences lose nothing that matters.

A decay over (j, i] is then exp((Hs_i - Hs_j) + (Ls_i - Ls_j)): no cancellation anywhere. The
chunk-to-chunk decay compounds over the sequence, so it is a product exp(Hs_last) exp(Ls_last)
(each factor within an ulp) rather than exp of their rounded sum.

No float64 anywhere: GPUs run it at 1/64 rate or worse.
"""

from __future__ import annotations

import math

from hola_dsl import lang as hl

# exp(-104) is below float32's smallest subnormal: clamping here changes no decay.
CLAMP = -128.0


def fraction_bits(BT: int) -> int:
    """F: the fraction bits of the coarse part hi, so that BT of them sum exactly in float32."""
    return 24 - math.ceil(math.log2(-CLAMP * BT))


def split(g, BT: int):
    """(hi, lo) of float32 gates ``g`` (any tile shape) with g = hi + lo exactly (g clamped at
    CLAMP); hi sums exactly over up to BT tokens."""
    gc = hl.maximum(g, CLAMP)
    step = float(2 ** fraction_bits(BT))
    hi = (gc * step).to("int32").to("float32") * (1.0 / step)
    return hi, gc - hi


def last(x, n: int):
    """x[n - 1] of a 1-D tile of n elements, as a scalar (a masked sum adds exact zeros)."""
    return hl.sum(hl.where(hl.iota(n) == n - 1, x, 0.0), 0)


def segment(Hr, Lr, Hc, Lc, mask=None):
    """exp(sum of g over (j, i]) for rows i (sums Hr, Lr [M]) and columns j (Hc, Lc [N]):
    [M, N]; entries outside ``mask`` are 0 (masked before exp: above the diagonal the sum is
    positive and could overflow)."""
    x = (Hr[:, None] - Hc[None, :]) + (Lr[:, None] - Lc[None, :])
    return hl.exp(x if mask is None else hl.where(mask, x, float("-inf")))


def from_start(H, L):
    """exp(G_i), the decay since the chunk start, per token."""
    return hl.exp(H + L)


def to_end(H, L, H_last, L_last):
    """exp(G_last - G_j), the decay from token j to the chunk end, per token."""
    return hl.exp((H_last - H) + (L_last - L))


def over_chunk(H_last, L_last):
    """exp(G_last), the whole chunk's decay (a product: it compounds from chunk to chunk)."""
    return hl.exp(H_last) * hl.exp(L_last)
