"""Block-wise top-w cache selection (SPEC.md section 2), one program per (b, h).

The program walks the cache blocks in order carrying the cache (scores and positions, best
first, -1 = empty). At the start of block n the cache is Cache_n and is written to idx row n;
then the block's tokens are merged in, BC at a time: Cache <- top-w(Cache U tokens). Top-w is
a deterministic rank select: the rank of a candidate is the number of candidates that beat it
(a higher score, or an equal score and a later position), and the candidate of rank r goes
to slot r when r < W. Merging piecewise is exact because top-w(A U B U C) = top-w(top-w(A U B) U C).
"""

from hola_dsl import lang as hl


def _beaten_by(s_i, p_i, s_j, p_j):
    """[len_i] count of j that beat i: s_j > s_i, or s_j == s_i and p_j > p_i."""
    si, sj, pi, pj = s_i[:, None], s_j[None, :], p_i[:, None], p_j[None, :]
    return hl.sum(((sj > si) | ((sj == si) & (pj > pi))).to("int32"), 1)


def _to_slots(slot, rank, s, p, W):
    """Scatter candidates to slot = rank (rank < W); slots nobody ranks into stay empty."""
    hit = (slot[:, None] == rank[None, :]) & (p >= 0)[None, :] & (slot < W)[:, None]
    return hl.max(hl.where(hit, s[None, :], float("-inf")), 1), hl.max(hl.where(hit, p[None, :], -1), 1)


@hl.kernel
def cache_select(
    scores: hl.In("B", "T", "H"), idx: hl.Out("B", "H", "NB", "W", dtype="int64"),
    *, W: int, WP: int, C: int, BC: int, RECENCY: bool, SDT: str,
):
    T = hl.dim("T")
    b, h = hl.grid(hl.dim("B"), hl.dim("H"))
    slot = hl.iota(WP)
    empty = (hl.full((WP,), float("-inf"), SDT), hl.full((WP,), -1, "int32"))

    @hl.loop(0, hl.cdiv(T, C), carry=empty)
    def cache(n, cs, cp):
        idx[b, h, n, hl.tile(0, WP)] = cp                    # Cache_n, best first
        start = n * C

        @hl.loop(0, hl.cdiv(C, BC), carry=(cs, cp))
        def merged(j, cs, cp):
            offs = j * BC + hl.iota(BC)
            pos = start + offs
            ok = (offs < C) & (pos < T)
            if RECENCY:
                s = pos.to(SDT)
            else:
                s = scores.load((b, hl.tile(start + j * BC, BC), h), mask=ok).to(SDT)
            bs, bp = hl.where(ok, s, float("-inf")), hl.where(ok, pos, -1)
            rank_c = _beaten_by(cs, cp, cs, cp) + _beaten_by(cs, cp, bs, bp)
            rank_b = _beaten_by(bs, bp, cs, cp) + _beaten_by(bs, bp, bs, bp)
            s1, p1 = _to_slots(slot, rank_c, cs, cp, W)
            s2, p2 = _to_slots(slot, rank_b, bs, bp, W)
            return hl.maximum(s1, s2), hl.maximum(p1, p2)
        return merged
