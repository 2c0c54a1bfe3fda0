"""Softmax read of the exact cache (docs/math.md section 3): the DSL kernel, one program per (query
tile, b, h), and ``SPEC``, how a call launches it.

A query tile holds BQ positions of one cache block n (t in [nC, nC + C)). Its visible set is the
sink (logit sink_h, value 0), the cached entries idx[b, h, n] (gathered by position) and the
block's tokens up to t (causal). The softmax runs online, as FlashAttention's does (running max
m, denominator den, float32 accumulator acc): it starts from the sink alone, then streams the
gathered cache BW entries at a time and the block's tokens BKV at a time, so what a program holds
does not grow with the capacity W. Both loops are ``pipelined`` (the schedule's num_stages).

Dot operands are the inputs' dtype where that is bfloat16 or float16 (tensor cores; float32
accumulation): keys and values as loaded, the prepared queries and the probabilities P rounded
to it, as FlashAttention does. Other inputs take float32 operands (the schedule's
dot_precision says how a GPU multiplies them).

Two rewrites of the logit l_tj = (rmsnorm(q_t) gamma_q) . (rmsnorm(k_j) gamma_k) / sqrt(K) keep
the per-key work small (a block's keys are read by every query tile after them):
* gamma_k and 1/sqrt(K) are folded into the queries once, so a key tile needs only its per-row
  1/rms, applied to the float32 dot (a scale of its logits), never a normalised copy of itself;
* the logits' layout is a schedule choice (``QMAJOR``): queries x keys ([BQ, keys], as
  FlashAttention: P is the left operand of P @ V as it stands; GPUs) or keys x queries ([keys,
  BQ]: the queries' operand of the key dot is the same in every step, so a backend that wants it
  transposed transposes it once per program, and the softmax's reductions run down the key axis;
  the CPU's form).

With ``STORE_LSE`` the kernel also writes lse[b, t, h] = log(exp(sink_h) + sum_j exp(l_tj)) over
the visible set (float32; what a backward pass recomputes P from).
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


# A power of two, so scaling by it is exact; 2^16 covers sqrt(K) |gamma| up to 65536. float16
# operands take none: 2^-16 is below float16's normal range, and float16 keys (at most 65504)
# cannot overflow a float32 dot.
QUERY_SCALE = 2.0 ** -16
LOW_PRECISION = ("bfloat16", "float16")


def operand_dtype(dtype: str) -> str:
    """The dtype of the dots' operands for inputs of ``dtype`` (a DSL dtype name)."""
    return dtype if dtype in LOW_PRECISION else "float32"


def query_scale(dtype: str) -> float:
    """The exact power of two the queries carry into the key dot for operands of ``dtype``.
    float16 queries hold gamma_q gamma_k / sqrt(K) times a unit-rms row, so a gamma product
    beyond float16's 65504 would overflow them (bfloat16 and float32 have float32's range)."""
    return 1.0 if dtype == "float16" else QUERY_SCALE


def _logit_factor(x, K: int, eps: float, scale: float = QUERY_SCALE):
    """[rows] what a key row's dot with the (``scale``-scaled) queries is multiplied by: its
    1 / rms times 1 / scale, in an order that keeps every factor a normal float32."""
    _, i, r = _rms_parts(x, K, eps)
    return i * (1.0 / scale) * r


def _mask(visible):
    """0 where ``visible``, -inf elsewhere: added to logits (which are finite), it masks them
    without a data-dependent choice between two computed values (a plain select of constants
    vectorises on a CPU where a guarded read of the logits does not)."""
    return hl.where(visible, hl.zeros(visible.shape), float("-inf"))


def _pair(keys, queries, qmajor: bool):
    """(keys, queries): a key vector and a query vector expanded to the logits' layout."""
    return (keys[None, :], queries[:, None]) if qmajor else (keys[:, None], queries[None, :])


def _step(kt, vt, qg, masked, m, den, acc, *, K: int, EPS: float, scale: float, qmajor: bool):
    """One online-softmax step over a key tile kt [keys, BKD] and its values vt [keys, BVD]
    (operand dtype) with ``masked`` (0 / -inf, broadcast to the logits): the new (m [BQ],
    den [BQ], acc [BQ, BVD]); acc None: a zero accumulator (the first step, nothing to rescale).
    The key rows' 1/rms scales the float32 dot, not the operand."""
    f = _logit_factor(kt.to("float32"), K, EPS, scale)
    if qmajor:
        l = hl.dot(qg, kt, trans_b=True) * f[None, :] + masked             # [BQ, keys]
    else:
        l = hl.dot(kt, qg, trans_b=True) * f[:, None] + masked             # [keys, BQ]
    ax = 1 if qmajor else 0
    m_new = hl.maximum(m, hl.max(l, ax))
    alpha = hl.exp(m - m_new)
    p = hl.exp(l - (m_new[:, None] if qmajor else m_new[None, :]))
    pv = hl.dot(p.to(vt.dtype), vt, None if acc is None else acc * alpha[:, None], trans_a=not qmajor)
    return m_new, den * alpha + hl.sum(p, ax), pv


@hl.kernel
def cache_read(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    idx: hl.In("B", "H", "NB", "W", dtype="int64"), gamma_q: hl.In("K"), gamma_k: hl.In("K"),
    sink: hl.In("H"), o: hl.Out("B", "T", "H", "V"),
    block_start: hl.In("NBS", dtype="int32"), block_end: hl.In("NBS", dtype="int32"),
    lse: hl.Out("B", "T", "H", dtype="float32"),
    *, K: int, V: int, W: int, C: int, BKD: int, BVD: int, WP: int, BW: int, BQ: int, BKV: int,
    EPS: float, QMAJOR: bool, STORE_LSE: bool, VARLEN: bool,
):
    dt = operand_dtype(k.dtype)
    scale = query_scale(dt)
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
    # The queries carry 2^-16 (exact; none for float16, see query_scale) so that a key dot cannot
    # overflow for keys up to float32's largest (|k . qg| <= ||k|| |gamma|); each key row's logit
    # factor carries 2^16 back, applied to the float32 dot. The scaled queries qs, not qt times a
    # per-row factor: 1/s times 2^-16 can be subnormal.
    qg = (qs * (rq * scale)[:, None] * gammas[None, :]).to(dt)            # [BQ, BKD]
    step = dict(K=K, EPS=EPS, scale=scale, qmajor=QMAJOR)

    s = sink[h].to("float32")                                              # the sink alone: m = s, den = 1
    m0 = hl.zeros((BQ,)) + s
    den0 = hl.full((BQ,), 1.0)

    def cache_step(j, m, den, acc):
        ids = idx.load((b, h, n, hl.tile(j, BW)), other=-1).to("int32")   # [BW], -1 = empty
        kc = k[b, ids, h, kd].to(dt)                                       # [BW, BKD]
        vc = v[b, ids, h, vd].to(dt)                                       # [BW, BVD]
        visible, _ = _pair(ids >= 0, tq, QMAJOR)
        return _step(kc, vc, qg, _mask(visible), m, den, acc, **step)

    if BW == WP:                       # the whole cache in one step: no loop around it
        cached = cache_step(0, m0, den0, None)
    else:
        cached = hl.loop(0, WP, BW, carry=(m0, den0, hl.zeros((BQ, BVD))), pipelined=True)(cache_step)

    @hl.loop(bs, hl.minimum(t0 + BQ, T), BKV, carry=cached, pipelined=True)
    def softmax(j, m, den, acc):
        tk = j + hl.iota(BKV)
        kt = k[b, hl.tile(j, BKV), h, kd].to(dt)                           # [BKV, BKD]
        vt = v[b, hl.tile(j, BKV), h, vd].to(dt)
        kk, qq = _pair(tk, tq, QMAJOR)
        return _step(kt, vt, qg, _mask(kk <= qq), m, den, acc, **step)

    m, den, acc = softmax
    o.store((b, hl.tile(t0, BQ), h, vd), acc / den[:, None], mask=rows_ok[:, None])
    if STORE_LSE:
        lse.store((b, hl.tile(t0, BQ), h), m + hl.log(den), mask=rows_ok)


def consts(K: int, V: int, W: int, block_size: int, eps: float, schedule: Mapping, *, varlen: bool = False,
           store_lse: bool = False) -> dict:
    """Compile-time constants for head dims K, V, capacity W, the cache block, eps, whether the
    sequences are packed and whether the kernel writes lse. The cache streams in steps of BKV entries (all of it at once when W
    fits one step). A space without a ``layout`` knob (TileLang's) keeps the keys-major form."""
    layout = schedule.get("layout", "keys")
    if layout not in ("keys", "queries"):
        raise ValueError(f"schedule: layout must be 'keys' or 'queries', got {layout!r}")
    WP, BKV = spec.pow2(W), int(schedule["BKV"])
    return dict(K=K, V=V, W=W, C=block_size, BKD=spec.pow2(K), BVD=spec.pow2(V), WP=WP, BW=min(BKV, WP),
                BQ=min(int(schedule["BQ"]), spec.pow2(block_size)), BKV=BKV, EPS=float(eps),
                QMAJOR=layout == "queries", STORE_LSE=bool(store_lse), VARLEN=varlen)


def plan(schedule: Mapping, q, k, v, idx, gamma_q, gamma_k, sink, *, block_size: int, eps: float,
         offsets: Optional[list[int]] = None, lse: bool = False) -> spec.Plan:
    """One launch over (query tile, b, h) (none for an empty output): o_cache [B, T, H, V] in v's
    dtype; with ``lse``, (o_cache, lse [B, T, H] float32), lse being the log of the softmax's
    denominator including the sink (see the module docstring).
    ``offsets`` (checked cu_seqlens): programs over (query tile of an idx row, h), each row's
    block and sequence end from host tables (``hola_dsl.varlen.block_table``)."""
    if not isinstance(lse, bool):
        raise TypeError(f"lse: expected a bool, got {lse!r} ({type(lse).__name__})")
    q, k, v, idx, gamma_q, gamma_k, sink = spec.dense(q, k, v, idx, gamma_q, gamma_k, sink)
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = spec.poisoned((B, T, H, V), v.dtype, q.device)
    lse_out = (spec.poisoned if lse else spec.unused)((B, T, H), torch.float32, q.device)
    if offsets is None:
        start = end = spec.unused((1,), torch.int32, q.device)
    else:
        start, end = varlen.block_table(offsets, block_size, q.device)
    args = dict(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, o=o, block_start=start,
                block_end=end, lse=lse_out)
    c = consts(K, V, idx.shape[-1], block_size, eps, schedule, varlen=offsets is not None, store_lse=lse)
    launches = (spec.Launch(cache_read, c, args),) if o.numel() else ()
    return spec.Plan(launches, (lambda: (o, lse_out)) if lse else (lambda: o))


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
