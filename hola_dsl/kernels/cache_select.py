"""Block-wise top-w cache selection (docs/math.md section 2): the DSL kernels (serial: one program per
(b, h); or a parallel block phase and a merge) and ``SPEC``, how a call launches them.

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
tie with it. A NaN score (possible only with value checks off) counts as -inf (docs/math.md section
2): every comparison with NaN is false, so left as it is a NaN token would be dropped here and
ranked first by a sort.

Two forms, the schedule's ``split`` (schedules/cache_select.py):
* "serial": the kernel ``cache_select`` above, B*H programs walking all T tokens, cdiv(C, BC)
  merges per block in order, each after a gather of the cache's scores that depends on the
  carry (the CPU's choice: see the schedule).
* "blocks+merge" (GPUs): ``cache_select_blocks``, one program per (cache block, b, h), all in
  parallel, writes each block's own top-w (the same merges, from an empty set) to scratch:
  ``win`` (positions best first, -1 padded) and ``wsc`` (their scores as ranked). Then
  ``cache_select_merge``, one program per (b, h), carries Cache_n and merges block n's w winners
  into it: Cache_{n+1} = top-w(Cache_n U top-w(block n)), exact by the same identity. Cached
  positions all precede block n's and both sets are sorted best first, so each candidate's rank
  is its index plus one count against the other set. The merge carries the cache's scores
  (scattered like its positions) and loads block n+1's winners while it ranks block n's: its
  sequential path has no memory access, only a [WP, WP] rank and scatter per block.

Why a serial merge of winners and not a log-depth (Hillis-Steele) scan over blocks (the merge is
associative, top-w of a union): the serial merge is NB dependent steps in ONE launch; the
doubling scan is log2(NB) launches of NB*B*H programs (NB log2(NB) merges of work, ping-pong
scratch). A merge step is latency only (a [64, 64] compare, two counts and four max-reductions
across a block of threads: ~0.6 us on an H100 at W = 64, estimated, not measured), so at the model's sizes (C = 256,
T <= 16K: NB <= 64) the serial merge is ~NB * 0.6 us <= ~40 us, while 6 launches of the doubling
scan cost ~20-30 us in launch gaps alone (3-5 us each without CUDA graphs) plus 6x the merges,
and the block phase costs about as much as either. The doubling scan wins only for NB in the
hundreds (T >= ~64K at C = 256): then it can join ``split`` as a third form.
"""

import math
from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec, varlen
from schedules.cache_select import SPLITS


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


def _scores_to_slots(slot, rank, p, s, W):
    """Scores by slot, as ``_to_slots`` moves positions: the score of the candidate that goes to
    slot r; -inf for a slot it leaves empty."""
    r = hl.where((p >= 0) & (rank < W), rank, -1)
    return hl.max(hl.where(slot[:, None] == r[None, :], s[None, :], float("-inf")), 1)


def _merge_block(cp, start, T, j, scores, b, h, slot, *, W: int, C: int, BC: int, RECENCY: bool, SDT: str):
    """top-w(cp U the tokens start + j*BC .. start + j*BC + BC - 1 of the block starting at
    ``start``, those before ``T``) as positions by slot (best first, -1 padded): the cache ``cp``
    [WP] int32 holds positions before those tokens, best first."""
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
            return _merge_block(cp, start, T, j, scores, b, h, slot, W=W, C=C, BC=BC, RECENCY=RECENCY, SDT=SDT)
        return merged


def _block_scores(p, scores, b, h, *, RECENCY: bool, SDT: str):
    """Scores of positions ``p`` as ranked (NaN as -inf; recency: the positions); -inf where p < 0."""
    ok = p >= 0
    if RECENCY:
        return hl.where(ok, p.to(SDT), float("-inf"))
    return hl.where(ok, _score(scores.load((b, p, h), mask=ok).to(SDT)), float("-inf"))


@hl.kernel
def cache_select_blocks(
    scores: hl.In("B", "T", "H"), win: hl.Out("B", "H", "NB", "WP", dtype="int32"), wsc: hl.Out("B", "H", "NB", "WP"),
    *, W: int, WP: int, C: int, BC: int, RECENCY: bool, SDT: str,
):
    n, b, h = hl.grid(hl.cdiv(hl.dim("T"), C), hl.dim("B"), hl.dim("H"))
    slot = hl.iota(WP)

    @hl.loop(0, hl.cdiv(C, BC), carry=hl.full((WP,), -1, "int32"))
    def top(j, cp):
        return _merge_block(cp, n * C, hl.dim("T"), j, scores, b, h, slot, W=W, C=C, BC=BC, RECENCY=RECENCY, SDT=SDT)
    win[b, h, n, hl.tile(0, WP)] = top                       # block n's top-w, best first
    wsc[b, h, n, hl.tile(0, WP)] = _block_scores(top, scores, b, h, RECENCY=RECENCY, SDT=SDT)


@hl.kernel
def cache_select_merge(
    win: hl.In("B", "H", "NB", "WP", dtype="int32"), wsc: hl.In("B", "H", "NB", "WP"),
    idx: hl.Out("B", "H", "NB", "W", dtype="int64"),
    *, W: int, WP: int, SDT: str,
):
    NB = hl.dim("NB")
    b, h = hl.grid(hl.dim("B"), hl.dim("H"))
    slot = hl.iota(WP)
    first = (win[b, h, 0, hl.tile(0, WP)], wsc[b, h, 0, hl.tile(0, WP)].to(SDT))

    # Carried: Cache_n (positions, scores) and block n's winners, loaded one step ahead so that
    # no memory access is on the sequential path.
    @hl.loop(0, NB, carry=[hl.full((WP,), -1, "int32"), hl.full((WP,), float("-inf"), SDT), *first])
    def cache(n, cp, cs, wp, ws):
        idx[b, h, n, hl.tile(0, WP)] = cp                    # Cache_n, best first
        ahead = slot < (NB - 1 - n) * WP                     # n + 1 < NB, as a tile (a mask)
        wp_next = win.load((b, h, n + 1, hl.tile(0, WP)), mask=ahead, other=-1)
        ws_next = wsc.load((b, h, n + 1, hl.tile(0, WP)), mask=ahead).to(SDT)
        # Both sets sorted best first: the k-th of a set is beaten by the k before it; a winner
        # (after every cached position) beats a cached entry when its score is >=, else loses.
        ok = wp >= 0
        rank_c = slot + _count_over_rows((ws[None, :] >= cs[:, None]) & ok[None, :])
        rank_w = slot + _count_over_rows(cs[None, :] > ws[:, None])
        return (hl.maximum(_to_slots(slot, rank_c, cp, W), _to_slots(slot, rank_w, wp, W)),
                hl.maximum(_scores_to_slots(slot, rank_c, cp, cs, W), _scores_to_slots(slot, rank_w, wp, ws, W)),
                wp_next, ws_next)


def consts(W: int, block_size: int, policy: str, score_dtype: torch.dtype, schedule: Mapping, *,
           varlen: bool = False) -> dict:
    """Compile-time constants for capacity W, the cache block, the policy and the scores' dtype
    (and whether the sequences are packed)."""
    return dict(W=W, WP=spec.pow2(W), C=block_size, BC=min(int(schedule["BC"]), spec.pow2(block_size)),
                RECENCY=(policy == "recency"),
                SDT="float64" if score_dtype == torch.float64 else "float32", VARLEN=varlen)


def plan(schedule: Mapping, scores, *, capacity: int, block_size: int, policy: str,
         offsets: Optional[list[int]] = None) -> spec.Plan:
    """The schedule's ``split`` (default "serial"): one launch over (b, h), or the block phase
    and the merge joined by poisoned scratch: ``win`` [B, H, NB, WP] int32, each block's winners
    (positions best first, -1 padded), and ``wsc`` [B, H, NB, WP], their scores as ranked
    (float32; float64 for float64 scores). No launch for an empty sequence.
    ``offsets`` (checked cu_seqlens): the serial kernel, one program per (sequence, h), idx laid
    out as ``hola_dsl.varlen`` says (the block phase has no packed form yet).
    Result: idx [B, H, NB, capacity] int64, -1 padded."""
    split = schedule.get("split", "serial")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r:.80}")
    (scores,) = spec.dense(scores)
    B, T, H = scores.shape
    dev = scores.device
    if offsets is None:
        NB = math.ceil(T / block_size)
        cu = rows = spec.unused((2,), torch.int32, dev)
    else:
        first_rows = varlen.block_offsets(offsets, block_size)
        NB = first_rows[-1]
        cu = torch.tensor(offsets, dtype=torch.int32, device=dev)
        rows = torch.tensor(first_rows, dtype=torch.int32, device=dev)
        split = "serial"
    idx = spec.poisoned((B, H, NB, capacity), torch.int64, dev)
    c = consts(capacity, block_size, policy, scores.dtype, schedule, varlen=offsets is not None)
    if not idx.numel():
        launches = ()
    elif split == "serial":
        launches = (spec.Launch(cache_select, c, dict(scores=scores, idx=idx, cu=cu, rows=rows)),)
    else:
        win = spec.poisoned((B, H, NB, c["WP"]), torch.int32, dev)
        wsc = spec.poisoned((B, H, NB, c["WP"]), torch.float64 if c["SDT"] == "float64" else torch.float32, dev)
        blocks = {n: c[n] for n in ("W", "WP", "C", "BC", "RECENCY", "SDT")}
        merge = {n: c[n] for n in ("W", "WP", "SDT")}
        launches = (spec.Launch(cache_select_blocks, blocks, dict(scores=scores, win=win, wsc=wsc)),
                    spec.Launch(cache_select_merge, merge, dict(win=win, wsc=wsc, idx=idx)))
    return spec.Plan(launches, lambda: idx)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1,
            offsets: Optional[list[int]] = None) -> tuple[tuple, dict]:
    """B x T x H float32 scores of policy "hola" (``dtype`` is for the kernels with float inputs;
    ``offsets``: packed sequences, B = 1 and T = offsets[-1])."""
    B, T = (B, T) if offsets is None else (1, offsets[-1])
    scores = torch.empty((B, T, H), dtype=torch.float32, device="meta")
    return (scores,), dict(capacity=dims["W"], block_size=dims["C"], policy="hola",
                           **({} if offsets is None else {"offsets": list(offsets)}))


SPEC = spec.KernelSpec("cache_select", (cache_select, cache_select_blocks, cache_select_merge), plan, example)
