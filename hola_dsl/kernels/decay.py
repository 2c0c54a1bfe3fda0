"""Log-decay sums of the scan in float32 without cancellation (docs/math.md section 1), shared by the
fused scan and its phases.

Every decay the scan applies is exp of a sum of gates g <= 0 over a segment of a chunk. Taken as
a difference of two float32 prefix sums, G_i - G_j, it loses the digits the sums share: with
strong gates (|G| ~ 1000 over a chunk) that is 1e-4 of an exponent, a 1e-5 error in the final
state. Instead each gate is split into a coarse and a fine part, g = n 2^-F + lo:

* g is first clamped at -128: exp of anything below -104 is 0 in float32, so no decay changes,
  and g 2^F then fits an int32;
* n = trunc(g 2^F) is an int32 count of 2^-F steps, |n| <= 128 2^F, and its prefix sums Hs are
  exact int32 (|Hs| <= 128 BT 2^F = 2^24, F is chosen for that), so every difference
  Hs_i - Hs_j is exact and so is its conversion to float32;
* lo = g - n 2^-F is exact too and below 2^-F, so its float32 prefix sums Ls stay tiny
  (|Ls| < BT 2^-F) and their differences lose nothing that matters.

A decay over (j, i] is then exp((Hs_i - Hs_j) 2^-F + (Ls_i - Ls_j)): no cancellation anywhere.
The coarse sums are integers, not float32 multiples of 2^-F, so that no compiler may regroup the
four terms: the TileLang C dialect compiles with -fassociative-math, under which gcc turned
float32 (Hr - Hc) + (Lr - Lc) into (Hr + Lr) - (Hc + Lc) (loop-invariant hoisting) and the
cancellation came back (2.7e-6 on the strong-decay case). The chunk-to-chunk decay compounds over
the sequence, so it is a product exp(Hs_last 2^-F) exp(Ls_last) (each factor within an ulp)
rather than exp of their rounded sum.

No float64 anywhere: GPUs run it at 1/64 rate or worse.
"""

from __future__ import annotations

import math

from hola_dsl import lang as hl

# exp(-104) is below float32's smallest subnormal: clamping here changes no decay.
CLAMP = -128.0


def fraction_bits(BT: int) -> int:
    """F: the fraction bits of the coarse part, so that the sums of BT of them (and their
    differences) convert to float32 exactly."""
    return 24 - math.ceil(math.log2(-CLAMP * BT))


def split(g, BT: int):
    """(n, lo) of float32 gates ``g`` (any tile shape): int32 counts n and float32 rests lo with
    g = n 2^-F + lo exactly (g clamped at CLAMP)."""
    gc = hl.maximum(g, CLAMP)
    n = (gc * float(2 ** fraction_bits(BT))).to("int32")
    return n, gc - coarse(n, BT)


def coarse(n, BT: int):
    """An int32 count (or a difference of prefix sums) of 2^-F steps as float32 (exact)."""
    return n.to("float32") * (1.0 / 2 ** fraction_bits(BT))


def last(x, n: int):
    """x[n - 1] of a 1-D tile of n elements, as a scalar (a masked sum adds exact zeros)."""
    return hl.sum(hl.where(hl.iota(n) == n - 1, x, 0), 0)


def segment(Hr, Lr, Hc, Lc, BT: int, mask=None):
    """exp(sum of g over (j, i]) for rows i (prefix sums Hr, Lr [M]) and columns j (Hc, Lc [N]):
    [M, N]; entries outside ``mask`` are 0 (masked before exp: above the diagonal the sum is
    positive and could overflow)."""
    x = coarse(Hr[:, None] - Hc[None, :], BT) + (Lr[:, None] - Lc[None, :])
    return hl.exp(x if mask is None else hl.where(mask, x, float("-inf")))


def from_start(H, L, BT: int):
    """exp(G_i), the decay since the chunk start, per token."""
    return hl.exp(coarse(H, BT) + L)


def to_end(H, L, H_last, L_last, BT: int):
    """exp(G_last - G_j), the decay from token j to the chunk end, per token."""
    return hl.exp(coarse(H_last - H, BT) + (L_last - L))


def over_chunk(H_last, L_last, BT: int):
    """exp(G_last), the whole chunk's decay (a product: it compounds from chunk to chunk)."""
    return hl.exp(coarse(H_last, BT)) * hl.exp(L_last)
