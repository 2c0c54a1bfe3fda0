"""Cache selection of policy "lola" (docs/math.md section 2, LoLA's self-recall error): the DSL
kernel, one program per (b, h), and ``SPEC``, how a call launches it.

At the start of block n the candidates are Cache_{n-1} and block n-1's tokens; each is scored
against S_{nC-1}, the scan's state at block n's start (``states[b, h, n]``), by its self-recall
error sre_j = ||v_j - S^T k_j||. Cache_n = the W candidates with the largest sre (ties: the
later position), best first, -1 padded. Unlike policy hola the cached entries are rescored at
every block, so the cache is not ranked against itself for free: every step ranks its cached
entries with the full rule (W x W compares, cheap next to the scoring dots).

The program walks the blocks in order carrying the cache as positions and their scores. Block
n's step first rescores the cache (a gather of W rows of k and v and one [W, K] x [K, V] dot),
then merges block n-1's tokens BC at a time exactly as ``cache_select`` does (the top-w rank
helpers are its own): every cached position precedes every merged token, and within a block
the carried scores are already the block's, so merging piecewise is exact.

Scores are squared errors ||e||^2, in float32 with IEEE dots: the order of sre itself (sqrt is
monotone), one rounding fewer. An error above ~1.8e19 squares to inf (its entry ranks first,
ties to the later position); a NaN score (inputs unchecked) counts as -inf, as in cache_select.
Each row's dot and sum run in one order for every row, so identical candidates score
identically and tie exactly.

Cost per (b, h): NB - 1 steps of (W + C) K V multiply-adds (the scoring dots) and
(W + C)(W + BC) compares; memory traffic is T rows of k and v plus NB states of K x V float32.
"""

import math
from typing import Mapping

import torch

from hola_dsl import lang as hl, spec
from hola_dsl.kernels.cache_select import _beaten_by, _count_over_rows, _score, _scores_to_slots, _to_slots


def _sq_error(kt, vt, S):
    """[rows] ||v - S^T k||^2 of each row, float32; NaN counts as -inf (``_score``)."""
    e = vt - hl.dot(kt, S)
    return _score(hl.sum(e * e, 1))


@hl.kernel
def lola_select(
    k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    states: hl.In("B", "H", "NB", "K", "V", dtype="float32"),
    idx: hl.Out("B", "H", "NB", "W", dtype="int64"),
    *, W: int, WP: int, C: int, BC: int, BKD: int, BVD: int,
):
    T = hl.dim("T")
    b, h = hl.grid(hl.dim("B"), hl.dim("H"))
    slot = hl.iota(WP)
    kd, vd = hl.tile(0, BKD), hl.tile(0, BVD)
    empty = hl.full((WP,), -1, "int32")
    idx[b, h, 0, hl.tile(0, WP)] = empty                  # Cache_0 holds nothing

    @hl.loop(1, hl.cdiv(T, C), carry=empty)
    def cache(n, cp):
        S = states[b, h, n, kd, vd]                        # [BKD, BVD], the state at block n's start
        kept = cp >= 0
        kc = k[b, cp, h, kd].to("float32")                 # gathered; empty slots (-1) load 0
        vc = v[b, cp, h, vd].to("float32")
        cs = hl.where(kept, _sq_error(kc, vc, S), float("-inf"))
        start = (n - 1) * C

        @hl.loop(0, hl.cdiv(C, BC), carry=(cp, cs))
        def merged(j, cp, cs):
            offs = j * BC + hl.iota(BC)
            pos = start + offs
            ok = offs < C                                  # block n-1 < NB - 1 is whole
            kt = k.load((b, hl.tile(start + j * BC, BC), h, kd), mask=ok[:, None]).to("float32")
            vt = v.load((b, hl.tile(start + j * BC, BC), h, vd), mask=ok[:, None]).to("float32")
            bs = hl.where(ok, _sq_error(kt, vt, S), float("-inf"))
            bp = hl.where(ok, pos, -1)
            rank_c = _beaten_by(cs, cp, cs, cp) + _count_over_rows((bs[None, :] >= cs[:, None]) & ok[None, :])
            rank_b = _count_over_rows(cs[None, :] > bs[:, None]) + _beaten_by(bs, bp, bs, bp)
            return (hl.maximum(_to_slots(slot, rank_c, cp, W), _to_slots(slot, rank_b, bp, W)),
                    hl.maximum(_scores_to_slots(slot, rank_c, cp, cs, W), _scores_to_slots(slot, rank_b, bp, bs, W)))

        cp_next, _ = merged
        idx[b, h, n, hl.tile(0, WP)] = cp_next             # Cache_n, best first
        return cp_next


def consts(K: int, V: int, W: int, block_size: int, schedule: Mapping) -> dict:
    """Compile-time constants for head dims K, V, capacity W and the cache block."""
    return dict(W=W, WP=spec.pow2(W), C=block_size, BC=min(int(schedule["BC"]), spec.pow2(block_size)),
                BKD=spec.pow2(K), BVD=spec.pow2(V))


def plan(schedule: Mapping, k, v, states, *, capacity: int, block_size: int) -> spec.Plan:
    """One launch over (b, h) (none for an empty sequence): idx [B, H, NB, capacity] int64, -1 padded."""
    k, v, states = spec.dense(k, v, states)
    B, T, H, K = k.shape
    idx = spec.poisoned((B, H, math.ceil(T / block_size), capacity), torch.int64, k.device)
    args = dict(k=k, v=v, states=states, idx=idx)
    launches = (spec.Launch(lola_select, consts(K, v.shape[-1], capacity, block_size, schedule), args),) \
        if idx.numel() else ()
    return spec.Plan(launches, lambda: idx)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1) -> tuple[tuple, dict]:
    """B x T x H k, v of ``dtype`` and the float32 block-start states."""
    K, V = dims["K"], dims["V"]
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(B, T, H, K), x(B, T, H, V), x(B, H, -(-T // dims["C"]), K, V, dt=torch.float32))
    return inputs, dict(capacity=dims["W"], block_size=dims["C"])


SPEC = spec.KernelSpec("lola_select", (lola_select,), plan, example)
