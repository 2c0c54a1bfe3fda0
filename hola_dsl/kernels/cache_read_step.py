"""The cache read of a decode step (docs/math.md section 3 for the newest queries): the DSL kernel,
one program per (query, b, h), and ``SPEC``, how a call launches it.

A decoding sequence holds its visible set in one slot buffer per (b, h): slots [0, W) are the
cache (position -1 marks an empty slot), slots [W, W + C) the pending block, the current
block's tokens in position order. Row b has ``plen[b]`` pending tokens, its T new tokens
last; query t of row b sees the sink (logit sink_h, value 0), the cache and the first
plen[b] - T + t + 1 pending tokens. Rows may be at different positions: each reads only its
own pending length, so the loop over the pending block runs as far as the row needs.

The arithmetic is the prefill kernel's (``cache_read.py``): gamma_k and 1/sqrt(K) folded into
the (2^-16-scaled) query, a per-key logit factor, an online softmax started from the sink and
the cache. One query per program, so logits are reductions over a broadcast, not dots.
"""

from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec
from hola_dsl.kernels.cache_read import QUERY_SCALE, _logit_factor, _mask


@hl.kernel
def cache_read_step(
    q: hl.In("B", "T", "H", "K"), sk: hl.In("B", "H", "N", "K"), sv: hl.In("B", "H", "N", "V"),
    spos: hl.In("B", "H", "N", dtype="int64"), plen: hl.In("B", dtype="int32"),
    gamma_q: hl.In("K"), gamma_k: hl.In("K"), sink: hl.In("H"), o: hl.Out("B", "T", "H", "V"),
    *, K: int, V: int, W: int, BKD: int, BVD: int, WP: int, BKV: int, EPS: float,
):
    T = hl.dim("T")
    t, b, h = hl.grid(T, hl.dim("B"), hl.dim("H"))
    kd, vd = hl.tile(0, BKD), hl.tile(0, BVD)
    qt = q[b, t, h, kd].to("float32")                                       # [BKD]
    gammas = gamma_q[kd].to("float32") * gamma_k[kd].to("float32") * (K ** -0.5)
    # _rms_parts for one row, as scalars (a 1-row tile's reductions would be one GPU thread's)
    iq = 1.0 / hl.maximum(hl.sum(hl.abs(qt) * (1.0 / K), 0), EPS ** 0.5)
    qs = qt * iq
    eq = EPS ** 0.5 * iq
    rq = hl.rsqrt(hl.sum(qs * qs, 0) / K + eq * eq)
    qg = (qs * (rq * QUERY_SCALE) * gammas)[None, :]                       # [1, BKD]

    slot = hl.iota(WP)
    in_cache = slot < W
    ids = spos.load((b, h, hl.tile(0, WP)), mask=in_cache, other=-1).to("int32")   # [WP]
    kc = sk.load((b, h, hl.tile(0, WP), kd), mask=in_cache[:, None]).to("float32")  # [WP, BKD]
    vc = sv.load((b, h, hl.tile(0, WP), vd), mask=in_cache[:, None]).to("float32")
    lc = hl.sum(kc * qg, 1) * _logit_factor(kc, K, EPS) + _mask(ids >= 0)            # [WP]
    s = sink[h].to("float32")
    m0 = hl.maximum(hl.max(lc, 0), s)
    p = hl.exp(lc - m0)
    den0 = hl.exp(s - m0) + hl.sum(p, 0)
    acc0 = hl.sum(p[:, None] * vc, 0)                                          # [BVD]
    seen = plen[b] - T + t + 1                                                 # pending tokens visible

    @hl.loop(0, seen, BKV, carry=(m0, den0, acc0))
    def softmax(j, m, den, acc):
        ok = j + hl.iota(BKV) < seen
        kt = sk.load((b, h, hl.tile(W + j, BKV), kd), mask=ok[:, None]).to("float32")   # [BKV, BKD]
        vt = sv.load((b, h, hl.tile(W + j, BKV), vd), mask=ok[:, None]).to("float32")
        l = hl.sum(kt * qg, 1) * _logit_factor(kt, K, EPS) + _mask(ok)
        m_new = hl.maximum(m, hl.max(l, 0))
        alpha = hl.exp(m - m_new)
        pj = hl.exp(l - m_new)
        return m_new, den * alpha + hl.sum(pj, 0), acc * alpha + hl.sum(pj[:, None] * vt, 0)

    _, den, acc = softmax
    o[b, t, h, vd] = acc / den


def consts(K: int, V: int, W: int, eps: float, schedule: Mapping) -> dict:
    """Compile-time constants for head dims K, V, capacity W and eps."""
    return dict(K=K, V=V, W=W, BKD=spec.pow2(K), BVD=spec.pow2(V), WP=spec.pow2(W),
                BKV=int(schedule["BKV"]), EPS=float(eps))


def plan(schedule: Mapping, q, sk, sv, spos, plen, gamma_q, gamma_k, sink, *, capacity: int, eps: float,
         o: Optional[torch.Tensor] = None) -> spec.Plan:
    """One launch over (query, b, h): o_cache [B, T, H, V] in sv's dtype (written into ``o`` when
    given, dense). Shapes as in ``hola_dsl.decode.cache_read_step``."""
    B, T, H, K = q.shape
    V = sv.shape[-1]
    o = spec.poisoned((B, T, H, V), sv.dtype, q.device) if o is None else o
    args = dict(q=q, sk=sk, sv=sv, spos=spos, plen=plen, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, o=o)
    launches = (spec.Launch(cache_read_step, consts(K, V, capacity, eps, schedule), args),) if o.numel() else ()
    return spec.Plan(launches, lambda: o)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1) -> tuple[tuple, dict]:
    """T new queries per row against W cache slots and a whole pending block of C."""
    K, V, W, C = dims["K"], dims["V"], dims["W"], dims["C"]
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(B, T, H, K), x(B, H, W + C, K), x(B, H, W + C, V), x(B, H, W + C, dt=torch.int64),
              x(B, dt=torch.int32), x(K, dt=torch.float32), x(K, dt=torch.float32), x(H, dt=torch.float32))
    return inputs, dict(capacity=W, eps=1e-6)


SPEC = spec.KernelSpec("cache_read_step", (cache_read_step,), plan, example)
