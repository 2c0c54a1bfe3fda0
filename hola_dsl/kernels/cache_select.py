"""Block-wise top-w cache selection (SPEC.md section 2): the DSL kernel, one program per (b, h),
and ``SPEC``, how a call launches it.

The program walks the cache blocks in order carrying the cache as positions (best first, -1 =
empty). At the start of block n the cache is Cache_n and is written to idx row n; then the
block's tokens are merged in, BC at a time: Cache <- top-w(Cache U tokens). Merging piecewise is
exact because top-w(A U B U C) = top-w(top-w(A U B) U C).

Top-w is a deterministic rank select: the rank of a candidate is the number of candidates that
beat it (a higher score, or an equal score and a later position), and the candidate of rank r
goes to slot r when r < W. Two invariants make most of the ranking cheap:
* the cache is sorted best first, so cached entry i has rank i among the cache;
* every cached position precedes every token of the merged piece, so a token beats a cached
  entry exactly when its score is >= the entry's (ties go to the later position).
Only the piece's tokens are ranked against each other with the full rule. The carry holds
positions alone; the cached scores are gathered back from ``scores`` (policy hola) or are the
positions themselves (policy recency), so the slot scatter moves one int per candidate.
-inf marks an empty slot or a padded token; the padding is masked where a score of -inf could
tie with it. A NaN score (possible only with value checks off) counts as -inf (SPEC.md section
2): every comparison with NaN is false, so left as it is a NaN token would be dropped here and
ranked first by a sort.
"""

import math
from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec, varlen


def _beaten_by(s_i, p_i, s_j, p_j):
    """[len_i] count of j that beat i: s_j > s_i, or s_j == s_i and p_j > p_i."""
    si, sj, pi, pj = s_i[:, None], s_j[None, :], p_i[:, None], p_j[None, :]
    return hl.sum(((sj > si) | ((sj == si) & (pj > pi))).to("int32"), 1)


def _score(x):
    """Scores as ranked: NaN counts as -inf, the lowest score. NaN is the only value not
    >= -inf (an x != x test is folded to false by TileLang's simplifier)."""
    return hl.where(x >= float("-inf"), x, float("-inf"))


def _count_over_rows(mask):
    """[rows] number of true entries in each row of a 2-D mask."""
    return hl.sum(mask.to("int32"), 1)


def _to_slots(slot, rank, p, W):
    """Positions by slot: candidate p (>= 0) of rank r < W goes to slot r; other slots get -1."""
    r = hl.where((p >= 0) & (rank < W), rank, -1)            # -1 matches no slot
    return hl.max(hl.where(slot[:, None] == r[None, :], p[None, :], -1), 1)


@hl.kernel
def cache_select(
    scores: hl.In("B", "T", "H"), idx: hl.Out("B", "H", "NB", "W", dtype="int64"),
    cu: hl.In("NS", dtype="int32"), rows: hl.In("NS", dtype="int32"),
    *, W: int, WP: int, C: int, BC: int, RECENCY: bool, SDT: str, VARLEN: bool,
):
    # Sequence i (a batch row, or packed positions [cu[i], cu[i + 1]) whose blocks are idx rows
    # rows[i]...: hola_dsl.varlen); positions stay packed, so ranks by position are unchanged.
    if VARLEN:
        i, h = hl.grid(hl.dim("NS") - 1, hl.dim("H"))
        b, bos, T, row0 = 0, cu[i], cu[i + 1], rows[i]
    else:
        b, h = hl.grid(hl.dim("B"), hl.dim("H"))
        T = hl.dim("T")
    slot = hl.iota(WP)

    @hl.loop(0, hl.cdiv(T - bos if VARLEN else T, C), carry=hl.full((WP,), -1, "int32"))
    def cache(n, cp):
        idx[b, h, row0 + n if VARLEN else n, hl.tile(0, WP)] = cp   # Cache_n, best first
        start = bos + n * C if VARLEN else n * C

        @hl.loop(0, hl.cdiv(C, BC), carry=cp)
        def merged(j, cp):
            kept = cp >= 0
            if RECENCY:
                cs = hl.where(kept, cp.to(SDT), float("-inf"))
            else:
                cs = hl.where(kept, _score(scores.load((b, cp, h), mask=kept).to(SDT)), float("-inf"))
            offs = j * BC + hl.iota(BC)
            pos = start + offs
            ok = (offs < C) & (pos < T)
            if RECENCY:
                s = pos.to(SDT)
            else:
                s = _score(scores.load((b, hl.tile(start + j * BC, BC), h), mask=ok).to(SDT))
            bs, bp = hl.where(ok, s, float("-inf")), hl.where(ok, pos, -1)
            rank_c = slot + _count_over_rows((bs[None, :] >= cs[:, None]) & ok[None, :])
            rank_b = _count_over_rows(cs[None, :] > bs[:, None]) + _beaten_by(bs, bp, bs, bp)
            return hl.maximum(_to_slots(slot, rank_c, cp, W), _to_slots(slot, rank_b, bp, W))
        return merged


def consts(W: int, block_size: int, policy: str, score_dtype: torch.dtype, schedule: Mapping, *,
           varlen: bool = False) -> dict:
    """Compile-time constants for capacity W, the cache block, the policy and the scores' dtype
    (and whether the sequences are packed)."""
    return dict(W=W, WP=spec.pow2(W), C=block_size, BC=min(int(schedule["BC"]), spec.pow2(block_size)),
                RECENCY=(policy == "recency"),
                SDT="float64" if score_dtype == torch.float64 else "float32", VARLEN=varlen)


def plan(schedule: Mapping, scores, *, capacity: int, block_size: int, policy: str,
         offsets: Optional[list[int]] = None) -> spec.Plan:
    """One launch over (b, h) (none for an empty sequence): idx [B, H, NB, capacity] int64, -1 padded.
    ``offsets`` (checked cu_seqlens): one program per (sequence, h), idx laid out as
    ``hola_dsl.varlen`` says."""
    (scores,) = spec.dense(scores)
    B, T, H = scores.shape
    dev = scores.device
    if offsets is None:
        nb = math.ceil(T / block_size)
        cu = rows = spec.unused((2,), torch.int32, dev)
    else:
        first_rows = varlen.block_offsets(offsets, block_size)
        nb = first_rows[-1]
        cu = torch.tensor(offsets, dtype=torch.int32, device=dev)
        rows = torch.tensor(first_rows, dtype=torch.int32, device=dev)
    idx = spec.poisoned((B, H, nb, capacity), torch.int64, dev)
    c = consts(capacity, block_size, policy, scores.dtype, schedule, varlen=offsets is not None)
    launches = (spec.Launch(cache_select, c, dict(scores=scores, idx=idx, cu=cu, rows=rows)),) if idx.numel() else ()
    return spec.Plan(launches, lambda: idx)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1,
            offsets: Optional[list[int]] = None) -> tuple[tuple, dict]:
    """B x T x H float32 scores of policy "hola" (``dtype`` is for the kernels with float inputs;
    ``offsets``: packed sequences, B = 1 and T = offsets[-1])."""
    B, T = (B, T) if offsets is None else (1, offsets[-1])
    scores = torch.empty((B, T, H), dtype=torch.float32, device="meta")
    return (scores,), dict(capacity=dims["W"], block_size=dims["C"], policy="hola",
                           **({} if offsets is None else {"offsets": list(offsets)}))


SPEC = spec.KernelSpec("cache_select", (cache_select,), plan, example)
