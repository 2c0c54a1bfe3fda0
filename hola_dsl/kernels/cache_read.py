"""Softmax read of the exact cache (SPEC.md section 3): the DSL kernel, one program per (query
tile, b, h), and ``SPEC``, how a call launches it.

A query tile holds BQ positions of one cache block n (t in [nC, nC + C)). Its visible set is the
sink (logit sink_h, value 0), the cached entries idx[b, h, n] (gathered by position) and the
block's tokens up to t (causal). The softmax runs online (running max m, denominator den,
accumulator acc), starting from the sink and the cache, then BKV block tokens at a time.

Two rewrites of the logit l_tj = (rmsnorm(q_t) gamma_q) . (rmsnorm(k_j) gamma_k) / sqrt(K) keep
the per-key work small (a block's keys are read by every query tile after them):
* gamma_k and 1/sqrt(K) are folded into the queries once, so a key tile needs only its per-row
  1/rms (a scale of its logits), never a normalised copy of itself;
* logits are laid out keys x queries ([keys, BQ]): the queries' operand of the key dot is the
  same in every step, so a backend that wants it transposed transposes it once per program, and
  the softmax's reductions run down the key axis.
"""

from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec, varlen


def _rms_parts(x, K: int, eps: float):
    """(xs [rows, cols], i [rows], r [rows]) with rmsnorm(x) = xs * r[:, None] = x * i[:, None] *
    r[:, None] over the last axis (mean over the true K, not padding), for any float32 x.
    Squares are taken of xs = x / s, as in hypot: s = max(mean |x|, sqrt(eps)), i = 1 / s,
    r = 1 / sqrt(mean(xs^2) + eps / s^2).
    Every scaled entry is at most K and eps / s^2 at most 1, so nothing overflows (a plain square
    does above 1.8e19); the largest scaled entry is at least 1, so nothing that matters
    underflows. The mean, not the max, of |x|: a row sum vectorises where a row max does not."""
    s = hl.maximum(hl.sum(hl.abs(x) * (1.0 / K), 1), eps ** 0.5)   # |x| / K: the sum stays finite
    i = 1.0 / s
    xs = x * i[:, None]
    e = eps ** 0.5 * i                                              # sqrt(eps / s^2): s^2 could overflow
    return xs, i, hl.rsqrt(hl.sum(xs * xs, 1) / K + e * e)


# A power of two, so scaling by it is exact; 2^16 covers sqrt(K) |gamma| up to 65536.
QUERY_SCALE = 2.0 ** -16


def _logit_factor(x, K: int, eps: float):
    """[rows] what a key row's dot with the (2^-16-scaled) queries is multiplied by: its
    1 / rms times 2^16, in an order that keeps every factor a normal float32."""
    _, i, r = _rms_parts(x, K, eps)
    return i * (1.0 / QUERY_SCALE) * r


def _mask(visible):
    """0 where ``visible``, -inf elsewhere: added to logits (which are finite), it masks them
    without a data-dependent choice between two computed values (a plain select of constants
    vectorises on a CPU where a guarded read of the logits does not)."""
    return hl.where(visible, hl.zeros(visible.shape), float("-inf"))


@hl.kernel
def cache_read(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    idx: hl.In("B", "H", "NB", "W", dtype="int64"), gamma_q: hl.In("K"), gamma_k: hl.In("K"),
    sink: hl.In("H"), o: hl.Out("B", "T", "H", "V"),
    block_start: hl.In("NBS", dtype="int32"), block_end: hl.In("NBS", dtype="int32"),
    *, K: int, V: int, W: int, C: int, BKD: int, BVD: int, WP: int, BQ: int, BKV: int, EPS: float,
    VARLEN: bool,
):
    NQ = hl.cdiv(C, BQ)                                   # query tiles per cache block
    if VARLEN:
        # Packed sequences: idx row n is a block starting at block_start[n] of a sequence
        # ending at block_end[n] (host tables, hola_dsl.varlen); positions are packed.
        pid, b, h = hl.grid(hl.dim("NB") * NQ, hl.dim("B"), hl.dim("H"))
        n = pid // NQ
        bs, T = block_start[n], block_end[n]
    else:
        T = hl.dim("T")
        pid, b, h = hl.grid(hl.cdiv(T, C) * NQ, hl.dim("B"), hl.dim("H"))
        n = pid // NQ
        bs = n * C
    t0 = bs + (pid % NQ) * BQ
    tq = t0 + hl.iota(BQ)                                 # query positions
    rows_ok = ((pid % NQ) * BQ + hl.iota(BQ) < C) & (tq < T)
    kd, vd = hl.tile(0, BKD), hl.tile(0, BVD)
    qt = q.load((b, hl.tile(t0, BQ), h, kd), mask=rows_ok[:, None]).to("float32")
    gammas = gamma_q[kd].to("float32") * gamma_k[kd].to("float32") * (K ** -0.5)
    qs, _, rq = _rms_parts(qt, K, EPS)
    # The queries carry 2^-16 (exact) so that a key dot cannot overflow for keys up to float32's
    # largest (|k . qg| <= ||k|| |gamma|); each key row's logit factor carries 2^16 back. The
    # scaled queries qs, not qt times a per-row factor: 1/s times 2^-16 can be subnormal.
    qg = qs * (rq * QUERY_SCALE)[:, None] * gammas[None, :]               # [BQ, BKD]

    ids = idx.load((b, h, n, hl.tile(0, WP)), other=-1).to("int32")       # [WP], -1 = empty
    kc = k[b, ids, h, kd].to("float32")                                    # [WP, BKD]
    vc = v[b, ids, h, vd].to("float32")                                    # [WP, BVD]
    lc = hl.dot(kc, qg, trans_b=True) * _logit_factor(kc, K, EPS)[:, None] + _mask(ids >= 0)[:, None]   # [WP, BQ]
    s = sink[h].to("float32")
    m0 = hl.maximum(hl.max(lc, 0), s)                                      # [BQ]
    p = hl.exp(lc - m0[None, :])
    den0 = hl.exp(s - m0) + hl.sum(p, 0)
    acc0 = hl.dot(p, vc, trans_a=True)                                     # [BQ, BVD]

    @hl.loop(bs, hl.minimum(t0 + BQ, T), BKV, carry=(m0, den0, acc0), pipelined=True)
    def softmax(j, m, den, acc):
        tk = j + hl.iota(BKV)
        kt = k[b, hl.tile(j, BKV), h, kd].to("float32")                    # [BKV, BKD]
        vt = v[b, hl.tile(j, BKV), h, vd].to("float32")
        l = hl.dot(kt, qg, trans_b=True) * _logit_factor(kt, K, EPS)[:, None] + _mask(tk[:, None] <= tq[None, :])
        m_new = hl.maximum(m, hl.max(l, 0))
        alpha = hl.exp(m - m_new)
        p = hl.exp(l - m_new[None, :])
        return m_new, den * alpha + hl.sum(p, 0), hl.dot(p, vt, acc * alpha[:, None], trans_a=True)

    _, den, acc = softmax
    o.store((b, hl.tile(t0, BQ), h, vd), acc / den[:, None], mask=rows_ok[:, None])


def consts(K: int, V: int, W: int, block_size: int, eps: float, schedule: Mapping, *, varlen: bool = False) -> dict:
    """Compile-time constants for head dims K, V, capacity W, the cache block and eps (and
    whether the sequences are packed)."""
    return dict(K=K, V=V, W=W, C=block_size, BKD=spec.pow2(K), BVD=spec.pow2(V), WP=spec.pow2(W),
                BQ=min(int(schedule["BQ"]), spec.pow2(block_size)), BKV=int(schedule["BKV"]), EPS=float(eps),
                VARLEN=varlen)


def plan(schedule: Mapping, q, k, v, idx, gamma_q, gamma_k, sink, *, block_size: int, eps: float,
         offsets: Optional[list[int]] = None) -> spec.Plan:
    """One launch over (query tile, b, h) (none for an empty output): o_cache [B, T, H, V] in v's dtype.
    ``offsets`` (checked cu_seqlens): programs over (query tile of an idx row, h), each row's
    block and sequence end from host tables (``hola_dsl.varlen.block_table``)."""
    q, k, v, idx, gamma_q, gamma_k, sink = spec.dense(q, k, v, idx, gamma_q, gamma_k, sink)
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = spec.poisoned((B, T, H, V), v.dtype, q.device)
    if offsets is None:
        start = end = spec.unused((1,), torch.int32, q.device)
    else:
        start, end = varlen.block_table(offsets, block_size, q.device)
    args = dict(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, o=o, block_start=start,
                block_end=end)
    c = consts(K, V, idx.shape[-1], block_size, eps, schedule, varlen=offsets is not None)
    launches = (spec.Launch(cache_read, c, args),) if o.numel() else ()
    return spec.Plan(launches, lambda: o)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1,
            offsets: Optional[list[int]] = None) -> tuple[tuple, dict]:
    """B x T x H q, k, v of ``dtype``, float32 gammas and sink, the cache of every block
    (``offsets``: packed sequences, B = 1 and T = offsets[-1])."""
    K, V, W = dims["K"], dims["V"], dims["W"]
    B, T = (B, T) if offsets is None else (1, offsets[-1])
    nb = -(-T // dims["C"]) if offsets is None else varlen.block_offsets(offsets, dims["C"])[-1]
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(B, T, H, K), x(B, T, H, K), x(B, T, H, V), x(B, H, nb, W, dt=torch.int64),
              x(K, dt=torch.float32), x(K, dt=torch.float32), x(H, dt=torch.float32))
    return inputs, dict(block_size=dims["C"], eps=1e-6, **({} if offsets is None else {"offsets": list(offsets)}))


SPEC = spec.KernelSpec("cache_read", (cache_read,), plan, example)
