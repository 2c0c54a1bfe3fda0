"""The gradient of the cache read (docs/math.md section 3), FlashAttention-style: the DSL kernels and
``SPEC``, how a call launches them.

With qn_t = rmsnorm(q_t), kn_j = rmsnorm(k_j), a = gamma_q gamma_k / sqrt(K), the logits are
l_tj = sum_d qn_t[d] a[d] kn_j[d] and the sink's is sink_h (value 0). For P = softmax(l_t),
D_t = do_t . o_t and dS_tj = P_tj (do_t . v_j - D_t) (the sink's: -P_t,sink D_t):

    dv_j = sum_t P_tj do_t            U_t = sum_j dS_tj kn_j       W_j = sum_t dS_tj qn_t
    dsink_h = -sum_t P_t,sink D_t     dL/da = sum_t qn_t * U_t     (= sum_j kn_j * W_j)

and the gradients of the normalised rows are a * U_t (queries) and a * W_j (keys), which the
RMSNorm's backward (``rmsnorm_backward``) takes to dq and dk; dgamma_q = dL/da gamma_k /
sqrt(K), dgamma_k = dL/da gamma_q / sqrt(K).

Two kernels, no atomics (race-free on every backend):

* ``cache_read_bwd_query``, one program per (query tile, b, h) as the forward: it recomputes
  the forward's online softmax (the row max m and denominator den, hence o and D), then walks
  the visible set again with P = exp(l - m) / den; both walks take the gathered cache BKV
  entries a step, as the block (a GPU program never holds the whole cache in registers). It writes U, the row's log-sum-exp and D (for
  the second kernel), the sink's share per query, and the cache entries' dv and W partial sums
  of its own query tile into a scratch slot of its own ([B, H, tiles, W, .]). Several blocks'
  caches may select the same key (and one key sits in many caches): the slots are summed into
  the keys' rows by ``finish`` (an index_add over idx), after the kernels, not by racing stores.
* ``cache_read_bwd_key``, one program per (key tile, b, h) of a block: the queries that see a
  block key in the causal part are the block's later queries, so the key tile finds them itself
  (a loop from its own position to the block's end) and accumulates its dv and W in registers.

``finish`` adds the gathered partial sums to the block part and applies the RMSNorm backward
(in float32 torch, overflow-safe: ``hola_dsl.norms``), O(T K) next to the kernels' O(T (W + C) K).
"""

import math
from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, norms, spec
from hola_dsl.kernels.cache_read import QUERY_SCALE, _logit_factor, _mask, _rms_parts


def _parts(x, K: int, eps: float):
    """(rmsnorm(x) [rows, cols], the logit factor of x as a key row [rows]) of a float32 tile."""
    xs, i, r = _rms_parts(x, K, eps)
    return xs * r[:, None], i * (1.0 / QUERY_SCALE) * r


def _queries(q, b, t0, h, kd, rows_ok, gammas, K: int, eps: float):
    """(qg, qn) [BQ, BKD] of the query tile from t0: the forward's scaled, gamma-folded queries
    (a key dot times the key's logit factor is the logit) and rmsnorm(q)."""
    qt = q.load((b, hl.tile(t0, rows_ok.shape[0]), h, kd), mask=rows_ok[:, None]).to("float32")
    qs, _, rq = _rms_parts(qt, K, eps)
    return qs * (rq * QUERY_SCALE)[:, None] * gammas[None, :], qs * rq[:, None]


def _online(l, vt, m, den, acc):
    """One step of the online softmax over logits l [keys, BQ] of values vt [keys, BVD]: the
    carries (row max m [BQ], denominator den [BQ], accumulator acc [BQ, BVD]) after it."""
    m_new = hl.maximum(m, hl.max(l, 0))
    alpha = hl.exp(m - m_new)
    p = hl.exp(l - m_new[None, :])
    return m_new, den * alpha + hl.sum(p, 0), hl.dot(p, vt, acc * alpha[:, None], trans_a=True)


@hl.kernel
def cache_read_bwd_query(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    idx: hl.In("B", "H", "NB", "W", dtype="int64"), gamma_q: hl.In("K"), gamma_k: hl.In("K"),
    sink: hl.In("H"), dout: hl.In("B", "T", "H", "V"),
    u: hl.Out("B", "T", "H", "K", dtype="float32"), lse: hl.Out("B", "T", "H", dtype="float32"),
    delta: hl.Out("B", "T", "H", dtype="float32"), dsink_t: hl.Out("B", "T", "H", dtype="float32"),
    wc: hl.Out("B", "H", "P", "WP", "K", dtype="float32"), dvc: hl.Out("B", "H", "P", "WP", "V", dtype="float32"),
    *, K: int, V: int, W: int, C: int, BKD: int, BVD: int, WP: int, BQ: int, BKV: int, EPS: float,
):
    T = hl.dim("T")
    NQ = hl.cdiv(C, BQ)
    pid, b, h = hl.grid(hl.cdiv(T, C) * NQ, hl.dim("B"), hl.dim("H"))
    n = pid // NQ
    t0 = n * C + (pid % NQ) * BQ
    tq = t0 + hl.iota(BQ)
    rows_ok = ((pid % NQ) * BQ + hl.iota(BQ) < C) & (tq < T)
    kd, vd = hl.tile(0, BKD), hl.tile(0, BVD)
    gammas = gamma_q[kd].to("float32") * gamma_k[kd].to("float32") * (K ** -0.5)
    qg, qn = _queries(q, b, t0, h, kd, rows_ok, gammas, K, EPS)
    dov = dout.load((b, hl.tile(t0, BQ), h, vd), mask=rows_ok[:, None]).to("float32")      # [BQ, BVD]

    s = sink[h].to("float32")
    blk_end = hl.minimum(t0 + BQ, T)

    # Pass 1, the forward's online softmax from the sink (logit s, value 0) over the cache, BKV
    # entries a step (a GPU never holds the whole gathered cache), then the block: m, den, o.
    @hl.loop(0, WP, BKV, carry=(hl.zeros((BQ,)) + s, hl.zeros((BQ,)) + 1.0, hl.zeros((BQ, BVD))), pipelined=True)
    def cache_fwd(c, m, den, acc):
        ids = idx.load((b, h, n, hl.tile(c, BKV)), other=-1).to("int32")   # [BKV], -1 = empty
        kc = k[b, ids, h, kd].to("float32")
        l = hl.dot(kc, qg, trans_b=True) * _logit_factor(kc, K, EPS)[:, None] + _mask(ids >= 0)[:, None]
        return _online(l, v[b, ids, h, vd].to("float32"), m, den, acc)

    @hl.loop(n * C, blk_end, BKV, carry=cache_fwd, pipelined=True)
    def forward(j, m, den, acc):
        tk = j + hl.iota(BKV)
        kt = k[b, hl.tile(j, BKV), h, kd].to("float32")
        l = hl.dot(kt, qg, trans_b=True) * _logit_factor(kt, K, EPS)[:, None] + _mask(tk[:, None] <= tq[None, :])
        return _online(l, v[b, hl.tile(j, BKV), h, vd].to("float32"), m, den, acc)

    m, den, acc = forward
    d = hl.sum(dov * acc, 1) / den                                          # D_t = do_t . o_t  [BQ]
    lse_t = m + hl.log(den)

    # Pass 2: P and dS of the cache entries (their dv and W partials of this tile go to its own
    # slot rows) and of the block tokens; U accumulates over both.
    @hl.loop(0, WP, BKV, carry=hl.zeros((BQ, BKD)), pipelined=True)
    def cache_bwd(c, uacc):
        ids = idx.load((b, h, n, hl.tile(c, BKV)), other=-1).to("int32")
        kc = k[b, ids, h, kd].to("float32")
        vc = v[b, ids, h, vd].to("float32")
        knc, fc = _parts(kc, K, EPS)
        lc = hl.dot(kc, qg, trans_b=True) * fc[:, None] + _mask(ids >= 0)[:, None]
        pc = hl.exp(lc - lse_t[None, :])                                     # [BKV, BQ]
        dsc = pc * (hl.dot(vc, dov, trans_b=True) - d[None, :])
        slot = (b, h, pid, hl.tile(c, BKV))
        dvc.store(slot + (vd,), hl.dot(pc, dov))
        wc.store(slot + (kd,), hl.dot(dsc, qn))
        return hl.dot(dsc, knc, uacc, trans_a=True)

    @hl.loop(n * C, blk_end, BKV, carry=cache_bwd, pipelined=True)
    def block(j, uacc):
        tk = j + hl.iota(BKV)
        kt = k[b, hl.tile(j, BKV), h, kd].to("float32")
        vt = v[b, hl.tile(j, BKV), h, vd].to("float32")
        kn, f = _parts(kt, K, EPS)
        l = hl.dot(kt, qg, trans_b=True) * f[:, None] + _mask(tk[:, None] <= tq[None, :])
        p = hl.exp(l - lse_t[None, :])
        ds = p * (hl.dot(vt, dov, trans_b=True) - d[None, :])
        return hl.dot(ds, kn, uacc, trans_a=True)

    rows = (b, hl.tile(t0, BQ), h)
    u.store(rows + (kd,), block, mask=rows_ok[:, None])
    lse.store(rows, lse_t, mask=rows_ok)
    delta.store(rows, d, mask=rows_ok)
    dsink_t.store(rows, -hl.exp(s - lse_t) * d, mask=rows_ok)


@hl.kernel
def cache_read_bwd_key(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    gamma_q: hl.In("K"), gamma_k: hl.In("K"), dout: hl.In("B", "T", "H", "V"),
    lse: hl.In("B", "T", "H", dtype="float32"), delta: hl.In("B", "T", "H", dtype="float32"),
    wk: hl.Out("B", "T", "H", "K", dtype="float32"), dv: hl.Out("B", "T", "H", "V", dtype="float32"),
    *, K: int, V: int, C: int, BKD: int, BVD: int, BQ: int, BKV: int, EPS: float,
):
    T = hl.dim("T")
    NK = hl.cdiv(C, BKV)                                   # key tiles per cache block
    pid, b, h = hl.grid(hl.cdiv(T, C) * NK, hl.dim("B"), hl.dim("H"))
    n = pid // NK
    j0 = n * C + (pid % NK) * BKV
    tk = j0 + hl.iota(BKV)
    keys_ok = ((pid % NK) * BKV + hl.iota(BKV) < C) & (tk < T)
    end = hl.minimum(n * C + C, T)                         # the block's queries end here
    kd, vd = hl.tile(0, BKD), hl.tile(0, BVD)
    gammas = gamma_q[kd].to("float32") * gamma_k[kd].to("float32") * (K ** -0.5)
    kt = k.load((b, hl.tile(j0, BKV), h, kd), mask=keys_ok[:, None]).to("float32")   # [BKV, BKD]
    vt = v.load((b, hl.tile(j0, BKV), h, vd), mask=keys_ok[:, None]).to("float32")   # [BKV, BVD]
    _, f = _parts(kt, K, EPS)

    @hl.loop(j0, end, BQ, carry=(hl.zeros((BKV, BVD)), hl.zeros((BKV, BKD))), pipelined=True)
    def queries(i, dvacc, wacc):
        tq = i + hl.iota(BQ)
        seen = tq < end
        qg, qn = _queries(q, b, i, h, kd, seen, gammas, K, EPS)
        dov = dout.load((b, hl.tile(i, BQ), h, vd), mask=seen[:, None]).to("float32")   # [BQ, BVD]
        lse_t = lse.load((b, hl.tile(i, BQ), h), mask=seen)
        d = delta.load((b, hl.tile(i, BQ), h), mask=seen)
        l = hl.dot(kt, qg, trans_b=True) * f[:, None] + _mask((tk[:, None] <= tq[None, :]) & seen[None, :])
        p = hl.exp(l - lse_t[None, :])                                      # [BKV, BQ]
        ds = p * (hl.dot(vt, dov, trans_b=True) - d[None, :])
        return hl.dot(p, dov, dvacc), hl.dot(ds, qn, wacc)

    dvacc, wacc = queries
    rows = (b, hl.tile(j0, BKV), h)
    dv.store(rows + (vd,), dvacc, mask=keys_ok[:, None])
    wk.store(rows + (kd,), wacc, mask=keys_ok[:, None])


def rmsnorm_backward(x: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """dL/dx [..., K] float32 of y = rmsnorm(x) = x r, r = 1 / sqrt(mean(x^2) + eps), given
    grad = dL/dy: r (grad - y mean(grad * y)). y comes scaled as in ``hola_dsl.norms`` (no
    overflow for any float32 x); r = (y / x) is taken from the same scaled parts."""
    x = x.float()
    y = norms.normalize(x, eps, mean=True)
    s = norms._row_scale(x, math.sqrt(eps))
    xs = x / s
    e = math.sqrt(eps) / s
    r = torch.rsqrt((xs * xs).mean(-1, keepdim=True) + e * e) / s
    return r * (grad - y * (grad * y).mean(-1, keepdim=True))


def consts(K: int, V: int, W: int, block_size: int, eps: float, schedule: Mapping) -> dict:
    """Compile-time constants of the query kernel (the key kernel takes those it declares)."""
    return dict(K=K, V=V, W=W, C=block_size, BKD=spec.pow2(K), BVD=spec.pow2(V), WP=spec.pow2(W),
                BQ=min(int(schedule["BQ"]), spec.pow2(block_size)),
                BKV=min(int(schedule["BKV"]), spec.pow2(block_size)), EPS=float(eps))


def plan(schedule: Mapping, q, k, v, idx, gamma_q, gamma_k, sink, do, *, block_size: int, eps: float,
         offsets: Optional[list[int]] = None) -> spec.Plan:
    """Two launches over (query tile, b, h) then (key tile, b, h); the result is (dq, dk, dv,
    dgamma_q, dgamma_k, dsink), each in its input's dtype. Packed sequences (``offsets``) are
    not supported yet: ``hola_dsl.ops`` differentiates those calls with autograd instead."""
    if offsets is not None:
        raise ValueError("offsets: cache_read_backward takes no packed sequences (cu_seqlens) yet")
    q, k, v, idx, gamma_q, gamma_k, sink, do = spec.dense(q, k, v, idx, gamma_q, gamma_k, sink, do)
    B, T, H, K = q.shape
    V, NB, W = v.shape[-1], idx.shape[2], idx.shape[-1]
    c = consts(K, V, W, block_size, eps, schedule)
    tiles = NB * -(-block_size // c["BQ"])
    dev, f32 = q.device, torch.float32
    u, wk = spec.poisoned((B, T, H, K), f32, dev), spec.poisoned((B, T, H, K), f32, dev)
    lse, delta, dsink_t = (spec.poisoned((B, T, H), f32, dev) for _ in range(3))
    wc = spec.poisoned((B, H, tiles, c["WP"], K), f32, dev)
    dvc = spec.poisoned((B, H, tiles, c["WP"], V), f32, dev)
    dv = spec.poisoned((B, T, H, V), f32, dev)
    query = dict(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, dout=do,
                 u=u, lse=lse, delta=delta, dsink_t=dsink_t, wc=wc, dvc=dvc)
    key = dict(q=q, k=k, v=v, gamma_q=gamma_q, gamma_k=gamma_k, dout=do, lse=lse, delta=delta, wk=wk, dv=dv)
    key_consts = {n: c[n] for n in ("K", "V", "C", "BKD", "BVD", "BQ", "BKV", "EPS")}
    launches = (spec.Launch(cache_read_bwd_query, c, query),
                spec.Launch(cache_read_bwd_key, key_consts, key)) if B * T * H else ()

    def finish():
        if not launches:
            zeros = lambda x: torch.zeros_like(x)
            return tuple(zeros(x) for x in (q, k, v, gamma_q, gamma_k, sink))
        # Every query tile of block n wrote its cache entries' partial sums; add them to the keys.
        ids = idx.repeat_interleave(tiles // NB, dim=2)[..., :W]                   # [B, H, tiles, W]
        ok = ids >= 0
        bb = torch.arange(B, device=dev).view(B, 1, 1, 1).expand_as(ids)
        hh = torch.arange(H, device=dev).view(1, H, 1, 1).expand_as(ids)
        rows = ((bb * T + ids.clamp(min=0)) * H + hh)[ok]                          # into [B * T * H]
        w_tot = wk.view(B * T * H, K).index_add(0, rows, wc[..., :W, :][ok])
        dv_tot = dv.view(B * T * H, V).index_add(0, rows, dvc[..., :W, :][ok])
        gq, gk = gamma_q.float(), gamma_k.float()
        a = gq * gk / math.sqrt(K)
        qn = norms.normalize(q.float(), eps, mean=True)
        da = (qn * u).sum((0, 1, 2))
        dq = rmsnorm_backward(q, a * u, eps)
        dk = rmsnorm_backward(k, a * w_tot.view(B, T, H, K), eps)
        return (dq.to(q.dtype), dk.to(k.dtype), dv_tot.view(B, T, H, V).to(v.dtype),
                (da * gk / math.sqrt(K)).to(gamma_q.dtype), (da * gq / math.sqrt(K)).to(gamma_k.dtype),
                dsink_t.sum((0, 1)).to(sink.dtype))

    return spec.Plan(launches, finish)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1,
            offsets: Optional[list[int]] = None) -> tuple[tuple, dict]:
    """The forward's example call (``cache_read.example``) plus do of q's shape but V, ``dtype``."""
    from hola_dsl.kernels import cache_read
    inputs, options = cache_read.example(dims, dtype, B, T, H, offsets=offsets)
    return inputs + (torch.empty((*inputs[0].shape[:3], dims["V"]), dtype=dtype, device="meta"),), options


SPEC = spec.KernelSpec("cache_read_backward", (cache_read_bwd_query, cache_read_bwd_key), plan, example)
