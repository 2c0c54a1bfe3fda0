"""The gradient of the cache read (docs/math.md section 3), FlashAttention-style: the DSL kernels and
``SPEC``, how a call launches them.

With qn_t = rmsnorm(q_t), kn_j = rmsnorm(k_j), a = gamma_q gamma_k / sqrt(K), the logits are
l_tj = sum_d qn_t[d] a[d] kn_j[d] and the sink's is sink_h (value 0). For P = softmax(l_t),
D_t = do_t . o_t and dS_tj = P_tj (do_t . v_j - D_t) (the sink's: -P_t,sink D_t):

    dv_j = sum_t P_tj do_t            U_t = sum_j dS_tj kn_j       W_j = sum_t dS_tj qn_t
    dsink_h = -sum_t P_t,sink D_t     dL/da = sum_t qn_t * U_t     (= sum_j kn_j * W_j)

and the gradients of the normalised rows are a * U_t (queries) and a * W_j (keys), which the
RMSNorm's backward (``_rms_grad``) takes to dq and dk inside the kernels; dgamma_q =
dL/da gamma_k / sqrt(K), dgamma_k = dL/da gamma_q / sqrt(K).

Two kernels, no atomics (race-free on every backend): every output row has one program that
writes it, and partial sums shared by several programs go through scratch that a later launch
reads.

* ``cache_read_bwd_query``, one program per (query tile, b, h) as the forward: it recomputes
  the forward's online softmax (the row max m and denominator den, hence o and D), then walks
  the visible set again with P = exp(l - m) / den; both walks take the gathered cache
  BW = min(BKV, W rounded up to a power of two) entries a step (a GPU program never holds the
  whole cache in registers; a small cache is not padded to BKV), the block BKV tokens a step. It
  writes dq (U through the RMSNorm's backward), the row's log-sum-exp and D (for the second
  kernel), its tile's sums of dL/da and of the sink's gradient, and its cache entries' dv and W
  partial sums into a scratch slot of its own ([B, H, tiles, W, .]).
* ``cache_read_bwd_key``, one program per (key tile, b, h) of a block: the queries that see a
  block key in the causal part are the block's later queries, so the key tile finds them itself
  (a loop from its own position to the block's end) and accumulates its dv and W. A key also
  sits in the caches of later blocks, in any number of slots (one per query tile of each such
  block, and a row of idx may repeat a key): the plan sorts the slots by the key they hold
  (``_slots_by_key``, a few torch ops on idx), so the slots of a key tile's keys are one
  contiguous run, which the key program then sums BQ slots a step as a one-hot product
  (hit[key, slot] = 1 where the slot holds the key) with the gathered partial rows. With the
  totals it applies the RMSNorm's backward and writes dk and dv.

``finish`` only sums the per-tile dL/da and sink partials ([B, H, tiles, K] and [B, H, tiles]).
"""

import math
from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec
from hola_dsl.kernels import cache_read as forward_kernel
from hola_dsl.kernels.cache_read import QUERY_SCALE, _mask, _rms_parts


def _parts(x, K: int, eps: float):
    """(rmsnorm(x) [rows, cols], the logit factor of x as a key row [rows]) of a float32 tile."""
    xs, i, r = _rms_parts(x, K, eps)
    return xs * r[:, None], i * (1.0 / QUERY_SCALE) * r


def _rms_grad(y, ri, g, K: int):
    """dL/dx [rows, cols] of y = rmsnorm(x) = x ri[:, None] given g = dL/dy [rows, cols]:
    ri (g - y mean(g y)). ri = r i of ``_rms_parts`` is at most 1 / sqrt(eps), so nothing
    overflows for any float32 x; padded columns have y = 0."""
    return ri[:, None] * (g - y * (hl.sum(g * y, 1) * (1.0 / K))[:, None])


def _queries(q, b, t0, h, kd, rows_ok, gammas, K: int, eps: float):
    """(qg, qn, ri) of the query tile from t0: qg [BQ, BKD] the forward's scaled, gamma-folded
    queries (a key dot times the key's logit factor is the logit), qn = rmsnorm(q) and ri [BQ]
    its rows' 1 / rms (for the RMSNorm's backward, ``_rms_grad``)."""
    qt = q.load((b, hl.tile(t0, rows_ok.shape[0]), h, kd), mask=rows_ok[:, None]).to("float32")
    qs, i, rq = _rms_parts(qt, K, eps)
    return qs * (rq * QUERY_SCALE)[:, None] * gammas[None, :], qs * rq[:, None], rq * i


@hl.kernel
def cache_read_bwd_query(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    idx: hl.In("B", "H", "NB", "W", dtype="int64"), gamma_q: hl.In("K"), gamma_k: hl.In("K"),
    sink: hl.In("H"), dout: hl.In("B", "T", "H", "V"), o: hl.In("B", "T", "H", "V"),
    lse: hl.In("B", "T", "H", dtype="float32"),
    dq: hl.Out("B", "T", "H", "K"), delta: hl.Out("B", "T", "H", dtype="float32"),
    da: hl.Out("B", "H", "P", "K", dtype="float32"),
    dsink: hl.Out("B", "H", "P", dtype="float32"),
    wc: hl.Out("B", "H", "P", "W", "K", dtype="float32"), dvc: hl.Out("B", "H", "P", "W", "V", dtype="float32"),
    *, K: int, V: int, W: int, C: int, BKD: int, BVD: int, WP: int, BW: int, BQ: int, BKV: int, EPS: float,
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
    qg, qn, _ = _queries(q, b, t0, h, kd, rows_ok, gammas, K, EPS)
    dov = dout.load((b, hl.tile(t0, BQ), h, vd), mask=rows_ok[:, None]).to("float32")      # [BQ, BVD]

    s = sink[h].to("float32")
    blk_end = hl.minimum(t0 + BQ, T)
    rows = (b, hl.tile(t0, BQ), h)
    # The forward's output and log-sum-exp: D_t = do_t . o_t, P = exp(l - lse) (rows past the
    # block or T load 0s: their q, hence logits, are 0 too, so nothing overflows).
    d = hl.sum(dov * o.load(rows + (vd,), mask=rows_ok[:, None]).to("float32"), 1)   # [BQ]
    lse_t = lse.load(rows, mask=rows_ok)

    # P and dS of the cache entries (their dv and W partials of this tile go to its own
    # slot rows; rows past W are masked by the slot dim) and of the block tokens; U accumulates
    # over both.
    @hl.loop(0, WP, BW, carry=hl.zeros((BQ, BKD)), pipelined=True)
    def cache_bwd(c, uacc):
        ids = idx.load((b, h, n, hl.tile(c, BW)), other=-1).to("int32")
        kc = k[b, ids, h, kd].to("float32")
        vc = v[b, ids, h, vd].to("float32")
        knc, fc = _parts(kc, K, EPS)
        lc = hl.dot(kc, qg, trans_b=True) * fc[:, None] + _mask(ids >= 0)[:, None]
        pc = hl.exp(lc - lse_t[None, :])                                     # [BW, BQ]
        dsc = pc * (hl.dot(vc, dov, trans_b=True) - d[None, :])
        slot = (b, h, pid, hl.tile(c, BW))
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

    # rmsnorm(q) again rather than held through the block loop (GPU registers, shared memory)
    _, qn, qri = _queries(q, b, t0, h, kd, rows_ok, gammas, K, EPS)
    dq.store(rows + (kd,), _rms_grad(qn, qri, gammas[None, :] * block, K), mask=rows_ok[:, None])
    delta.store(rows, d, mask=rows_ok)
    # This tile's sums (rows past the block or T hold q = 0 and do = 0, hence qn = U = 0).
    da.store((b, h, pid, kd), hl.sum(qn * block, 0))
    dsink.store((b, h, pid), hl.sum(hl.where(rows_ok, -hl.exp(s - lse_t) * d, 0.0), 0))


@hl.kernel
def cache_read_bwd_key(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    gamma_q: hl.In("K"), gamma_k: hl.In("K"), dout: hl.In("B", "T", "H", "V"),
    lse: hl.In("B", "T", "H", dtype="float32"), delta: hl.In("B", "T", "H", dtype="float32"),
    wc: hl.In("B", "H", "S", "K", dtype="float32"), dvc: hl.In("B", "H", "S", "V", dtype="float32"),
    slots: hl.In("B", "H", "E", dtype="int32"), slot_keys: hl.In("B", "H", "E", dtype="int32"),
    first: hl.In("B", "H", "NKT", dtype="int32"), last: hl.In("B", "H", "NKT", dtype="int32"),
    dk: hl.Out("B", "T", "H", "K"), dv: hl.Out("B", "T", "H", "V"),
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
        qg, qn, _ = _queries(q, b, i, h, kd, seen, gammas, K, EPS)
        dov = dout.load((b, hl.tile(i, BQ), h, vd), mask=seen[:, None]).to("float32")   # [BQ, BVD]
        lse_t = lse.load((b, hl.tile(i, BQ), h), mask=seen)
        d = delta.load((b, hl.tile(i, BQ), h), mask=seen)
        l = hl.dot(kt, qg, trans_b=True) * f[:, None] + _mask((tk[:, None] <= tq[None, :]) & seen[None, :])
        p = hl.exp(l - lse_t[None, :])                                      # [BKV, BQ]
        ds = p * (hl.dot(vt, dov, trans_b=True) - d[None, :])
        return hl.dot(p, dov, dvacc), hl.dot(ds, qn, wacc)

    # The cache slots holding this tile's keys: entries first..last of the slots sorted by key.
    e_end = last[b, h, pid]

    @hl.loop(first[b, h, pid], e_end, BQ, carry=queries)
    def cached(e, dvacc, wacc):
        ok = e + hl.iota(BQ) < e_end
        at = slots.load((b, h, hl.tile(e, BQ)), mask=ok, other=-1)                     # [BQ], -1 = none
        key = slot_keys.load((b, h, hl.tile(e, BQ)), mask=ok, other=-1)
        hit = hl.where(tk[:, None] == key[None, :], hl.full((BKV, BQ), 1.0), 0.0)      # [BKV, BQ]
        return hl.dot(hit, dvc[b, h, at, vd], dvacc), hl.dot(hit, wc[b, h, at, kd], wacc)

    dvacc, wacc = cached
    rows = (b, hl.tile(j0, BKV), h)
    dv.store(rows + (vd,), dvacc, mask=keys_ok[:, None])
    # rmsnorm(k) again rather than held through both loops (a GPU program keeps it in shared memory)
    ks, ik, rk = _rms_parts(kt, K, EPS)
    dk.store(rows + (kd,), _rms_grad(ks * rk[:, None], rk * ik, gammas[None, :] * wacc, K), mask=keys_ok[:, None])


def consts(K: int, V: int, W: int, block_size: int, eps: float, schedule: Mapping) -> dict:
    """Compile-time constants of the query kernel (the key kernel takes those it declares)."""
    WP, BKV = spec.pow2(W), min(int(schedule["BKV"]), spec.pow2(block_size))
    return dict(K=K, V=V, W=W, C=block_size, BKD=spec.pow2(K), BVD=spec.pow2(V), WP=WP, BW=min(BKV, WP),
                BQ=min(int(schedule["BQ"]), spec.pow2(block_size)), BKV=BKV, EPS=float(eps))


def _slots_by_key(idx: torch.Tensor, T: int, C: int, BQ: int, BKV: int) -> tuple[torch.Tensor, ...]:
    """The cache slots of the query pass's scratch sorted by the key they hold, and each key
    tile's run of them: (slots [B, H, E] int32: slot p * W + w of query tile p, -1 past the
    filled ones; slot_keys [B, H, E] int32: their keys; first, last [B, H, NB * NK] int32: key
    tile i's slots are entries first[i]..last[i] - 1), E = tiles * W. Works on meta tensors."""
    B, H, NB, W = idx.shape
    NQ, NK = -(-C // BQ), -(-C // BKV)
    dev = idx.device
    keys = idx[:, :, :, None, :].expand(B, H, NB, NQ, W).reshape(B, H, NB * NQ * W)
    keys = torch.where(keys >= 0, keys, T)                 # empty slots sort after every key
    keys, order = keys.sort(dim=-1, stable=True)
    slots = torch.where(keys < T, order, -1).to(torch.int32)
    start = (torch.arange(NB, device=dev)[:, None] * C + torch.arange(NK, device=dev)[None, :] * BKV)
    stop = torch.minimum(start + BKV, torch.arange(1, NB + 1, device=dev)[:, None] * C).clamp(max=T)
    bounds = torch.cat((start.reshape(-1), stop.reshape(-1))).expand(B, H, 2 * NB * NK).contiguous()
    found = torch.searchsorted(keys, bounds).to(torch.int32).view(B, H, 2, NB * NK)
    return slots, keys.to(torch.int32), found[:, :, 0].contiguous(), found[:, :, 1].contiguous()


def _forward(schedule: Mapping, q, k, v, idx, gamma_q, gamma_k, sink, block_size: int, eps: float):
    """(the forward's launch, o, lse): ``cache_read`` with its lse, for a call that has neither."""
    B, T, H, _ = q.shape
    o = spec.poisoned(v.shape, v.dtype, q.device)
    lse = spec.poisoned((B, T, H), torch.float32, q.device)
    unused = spec.unused((1,), torch.int32, q.device)
    c = forward_kernel.consts(q.shape[-1], v.shape[-1], idx.shape[-1], block_size, eps, schedule, store_lse=True)
    args = dict(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, o=o, block_start=unused,
                block_end=unused, lse=lse)
    return spec.Launch(forward_kernel.cache_read, c, args), o, lse


def _saved(name: str, x, shape: tuple, dtype: torch.dtype):
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape or x.dtype != dtype:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected the forward's {name}, a tensor {shape} of {dtype}, got {got}")
    return x.contiguous()


def plan(schedule: Mapping, q, k, v, idx, gamma_q, gamma_k, sink, do, *, block_size: int, eps: float,
         offsets: Optional[list[int]] = None, o: Optional[torch.Tensor] = None,
         lse: Optional[torch.Tensor] = None) -> spec.Plan:
    """Launches over (query tile, b, h) then (key tile, b, h); the result is (dq, dk, dv,
    dgamma_q, dgamma_k, dsink), each in its input's dtype. ``o`` and ``lse``: the forward's
    output and log-sum-exp (``cache_read`` with ``lse=True``; ``hola_dsl.ops`` saves them);
    without them the forward kernel runs first to make them. Packed sequences (``offsets``)
    are not supported yet: ``hola_dsl.ops`` differentiates those calls with autograd instead."""
    if offsets is not None:
        raise ValueError("offsets: cache_read_backward takes no packed sequences (cu_seqlens) yet")
    q, k, v, idx, gamma_q, gamma_k, sink, do = spec.dense(q, k, v, idx, gamma_q, gamma_k, sink, do)
    B, T, H, K = q.shape
    V, NB, W = v.shape[-1], idx.shape[2], idx.shape[-1]
    c = consts(K, V, W, block_size, eps, schedule)
    forward = ()
    if o is None and lse is None:
        launch, o, lse = _forward(schedule, q, k, v, idx, gamma_q, gamma_k, sink, block_size, eps)
        forward = (launch,)
    o = _saved("o", o, (B, T, H, V), v.dtype)
    lse = _saved("lse", lse, (B, T, H), torch.float32)
    tiles = NB * -(-block_size // c["BQ"])
    dev, f32 = q.device, torch.float32
    dq, dk, dv = spec.poisoned(q.shape, q.dtype, dev), spec.poisoned(k.shape, k.dtype, dev), spec.poisoned(v.shape, v.dtype, dev)
    delta = spec.poisoned((B, T, H), f32, dev)
    da, dsink = spec.poisoned((B, H, tiles, K), f32, dev), spec.poisoned((B, H, tiles), f32, dev)
    wc = spec.poisoned((B, H, tiles, W, K), f32, dev)
    dvc = spec.poisoned((B, H, tiles, W, V), f32, dev)
    slots, slot_keys, first, last = _slots_by_key(idx, T, block_size, c["BQ"], c["BKV"])
    query = dict(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, dout=do, o=o, lse=lse,
                 dq=dq, delta=delta, da=da, dsink=dsink, wc=wc, dvc=dvc)
    key = dict(q=q, k=k, v=v, gamma_q=gamma_q, gamma_k=gamma_k, dout=do, lse=lse, delta=delta,
               wc=wc.view(B, H, tiles * W, K), dvc=dvc.view(B, H, tiles * W, V), slots=slots, slot_keys=slot_keys,
               first=first, last=last, dk=dk, dv=dv)
    key_consts = {n: c[n] for n in ("K", "V", "C", "BKD", "BVD", "BQ", "BKV", "EPS")}
    launches = forward + (spec.Launch(cache_read_bwd_query, c, query),
                          spec.Launch(cache_read_bwd_key, key_consts, key)) if B * T * H else ()

    def finish():
        if not launches:
            return tuple(torch.zeros_like(x) for x in (q, k, v, gamma_q, gamma_k, sink))
        dl_da = da.sum((0, 1, 2))
        gq, gk = gamma_q.float(), gamma_k.float()
        return (dq, dk, dv, (dl_da * gk / math.sqrt(K)).to(gamma_q.dtype),
                (dl_da * gq / math.sqrt(K)).to(gamma_k.dtype), dsink.sum((0, 2)).to(sink.dtype))

    return spec.Plan(launches, finish)


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1,
            offsets: Optional[list[int]] = None) -> tuple[tuple, dict]:
    """The forward's example call (``cache_read.example``) plus do of q's shape but V, ``dtype``
    (no saved o and lse: the plan then launches the forward kernel too, so a trace holds every
    kernel a call may run)."""
    inputs, options = forward_kernel.example(dims, dtype, B, T, H, offsets=offsets)
    return inputs + (torch.empty((*inputs[0].shape[:3], dims["V"]), dtype=dtype, device="meta"),), options


SPEC = spec.KernelSpec("cache_read_backward", (forward_kernel.cache_read, cache_read_bwd_query, cache_read_bwd_key),
                       plan, example)
