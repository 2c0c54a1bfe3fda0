"""Softmax read of the exact cache (SPEC.md section 3), one program per (query tile, b, h).

A query tile holds BQ positions of one cache block n (t in [nC, nC + C)). Its visible set is the
sink (logit sink_h, value 0), the cached entries idx[b, h, n] (gathered by position) and the
block's tokens up to t (causal). Logits use RMSNorm-gamma copies of q and k scaled by 1/sqrt(K);
the softmax runs online (running max m, denominator den, accumulator acc), starting from the
sink and the cache, then BKV block tokens at a time.
"""

from hola_dsl import lang as hl


def _rmsnorm(x, gamma, K: int, eps: float):
    """x / sqrt(mean(x^2) + eps) * gamma over the last axis (mean over the true K, not padding)."""
    return x * hl.rsqrt(hl.sum(x * x, 1)[:, None] / K + eps) * gamma[None, :]


@hl.kernel
def cache_read(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    idx: hl.In("B", "H", "NB", "W", dtype="int64"), gamma_q: hl.In("K"), gamma_k: hl.In("K"),
    sink: hl.In("H"), o: hl.Out("B", "T", "H", "V"),
    *, K: int, V: int, W: int, C: int, BKD: int, BVD: int, WP: int, BQ: int, BKV: int, EPS: float,
):
    T = hl.dim("T")
    NQ = hl.cdiv(C, BQ)                                   # query tiles per cache block
    pid, b, h = hl.grid(hl.cdiv(T, C) * NQ, hl.dim("B"), hl.dim("H"))
    n = pid // NQ
    t0 = n * C + (pid % NQ) * BQ
    tq = t0 + hl.iota(BQ)                                 # query positions
    rows_ok = ((pid % NQ) * BQ + hl.iota(BQ) < C) & (tq < T)
    kd, vd = hl.tile(0, BKD), hl.tile(0, BVD)
    gk = gamma_k[kd].to("float32")
    qt = q.load((b, hl.tile(t0, BQ), h, kd), mask=rows_ok[:, None]).to("float32")
    qc = _rmsnorm(qt, gamma_q[kd].to("float32"), K, EPS) * (K ** -0.5)       # [BQ, BKD]

    ids = idx.load((b, h, n, hl.tile(0, WP)), other=-1).to("int32")       # [WP], -1 = empty
    kc = _rmsnorm(k[b, ids, h, kd].to("float32"), gk, K, EPS)              # [WP, BKD]
    vc = v[b, ids, h, vd].to("float32")                                    # [WP, BVD]
    lc = hl.where((ids >= 0)[None, :], hl.dot(qc, kc, trans_b=True), float("-inf"))
    s = sink[h].to("float32")
    m0 = hl.maximum(hl.max(lc, 1), s)                                      # [BQ]
    p = hl.exp(lc - m0[:, None])
    den0 = hl.exp(s - m0) + hl.sum(p, 1)
    acc0 = hl.dot(p, vc)                                                   # [BQ, BVD]

    @hl.loop(n * C, hl.minimum(t0 + BQ, T), BKV, carry=(m0, den0, acc0), pipelined=True)
    def softmax(j, m, den, acc):
        tk = j + hl.iota(BKV)
        kt = _rmsnorm(k[b, hl.tile(j, BKV), h, kd].to("float32"), gk, K, EPS)
        vt = v[b, hl.tile(j, BKV), h, vd].to("float32")
        l = hl.where(tk[None, :] <= tq[:, None], hl.dot(qc, kt, trans_b=True), float("-inf"))
        m_new = hl.maximum(m, hl.max(l, 1))
        alpha = hl.exp(m - m_new)
        p = hl.exp(l - m_new[:, None])
        return m_new, den * alpha + hl.sum(p, 1), acc * alpha[:, None] + hl.dot(p, vt)

    _, den, acc = softmax
    o.store((b, hl.tile(t0, BQ), h, vd), acc / den[:, None], mask=rows_ok[:, None])
