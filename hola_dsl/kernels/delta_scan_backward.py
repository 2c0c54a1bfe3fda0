"""Chunked gated delta rule, backward (docs/math.md section 1): the gradients of o and the final state
with respect to q, k, v, g, beta and the initial state, and ``SPEC``, how a call launches it.

Recompute, don't save. The forward (delta_scan.py) keeps nothing for the backward, and its
result stays what docs/api.md says; the backward recomputes the per-chunk states S_c from
the inputs with the forward's own phases (delta_scan_phases.py: prepare, then the recurrence),
as flash-linear-attention does. Saving them would cost B (T / BT) H K V numbers per layer for
the whole of training's forward pass (at T = 4096, BT = 64, 128 x 128 heads: 16 K values per
token and head, eight times the size of q, k and v together); recomputing costs one more
forward, whose sequential part is two products a chunk. On the CPU the recompute (prepare and
recurrence) measured ~35% of the backward's time at B=8, T=256, H=2, K=V=64 (one thread);
saving instead would need the forward (the CPU's is the fused kernel, at the caller's chunk) to
run the phases at the backward's chunk and return W, u, the Q K^T block and the states through
the custom op: not done. Only the m the scan also returns carries
no gradient: it is a selection score (docs/math.md section 2), not part of the model's loss path.

Per chunk (its positions i, G = cumsum(g) from the chunk start, D = exp(G), Gamma_ij =
exp(G_i - G_j), S the state at the chunk start, S' at its end, dS' the gradient of S'; decays
from decay.py, no float64), the forward is
    A  = strict_lower(diag(beta) K K^T * Gamma),  Tm = (I + A)^-1
    W  = Tm diag(beta D) K,  U = Tm diag(beta) V,  u = U - W S
    o  = scale (diag(D) Q S + P u),   P = (Q K^T * Gamma, causal)
    S' = exp(G_last) S + Kt^T u,      Kt = diag(exp(G_last - G)) K
and the backward, in three kernels after the two recomputing phases:

  delta_scan_backward_recur  one program per (V tile, b, h), sequential over chunks in reverse:
                             du = scale P^T dO + Kt dS' (P from prepare's stored Q K^T block),
                             dS = exp(G_last) dS' + scale (Q D)^T dO - W^T du; keeps du and every
                             chunk's dS' (float32); dS at the start is the initial state's.
  delta_scan_backward_grads  one program per (chunk, b h), all chunks in parallel, V in steps:
                             dP = scale dO u^T, dv = diag(beta) Tm^T du,
                             dW = -du S^T, dKt = u dS'^T, dTm = du (beta V)^T + dW (beta D K)^T,
                             dA = -Tm^T dTm Tm^T (strictly lower), then dq, dk, dbeta and the
                             per-position terms dG_i of every decay (each exp(G_i - G_j) gives
                             +x to i and -x to j); dg is their reverse cumsum within the chunk
                             (g_t enters G_i for i >= t of its chunk only: the chunk-to-chunk
                             decay is exp(G_last)).

Everything accumulates in float32 (the DSL's dots do); stored in the dtype of each input.
Padding past T loads q = k = v = 0, g = 0, beta = 0, dO = 0: every term of those rows is 0.
"""


from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec, validate
from hola_dsl.kernels import decay, delta_scan_phases as phases


def _pieces(K: int, CK: int) -> list:
    return [hl.tile(j * CK, CK) for j in range(hl.cdiv(K, CK))]


@hl.kernel
def delta_scan_backward_recur(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), w: hl.In("B", "TP", "H", "K"),
    gh: hl.In("B", "TP", "H", dtype="int32"), gl: hl.In("B", "TP", "H", dtype="float32"),
    aqk: hl.In("B", "TP", "H", "BT"), dout: hl.In("B", "T", "H", "V"),
    dht: hl.In("B", "H", "K", "V", dtype="float32"),
    dhs: hl.Out("B", "NT", "H", "V", "K", dtype="float32"), du: hl.Out("B", "TP", "H", "V", dtype="float32"),
    dh0: hl.Out("B", "H", "K", "V", dtype="float32"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, CK: int, BV: int, HAS_DFINAL: bool, STORE_DH0: bool,
):
    iv, b, h = hl.grid(hl.cdiv(V, BV), hl.dim("B"), hl.dim("H"))
    NT = hl.dim("NT")
    pieces, cols = _pieces(K, CK), hl.tile(iv * BV, BV)
    dS0 = [dht[b, h, p, cols].T if HAS_DFINAL else hl.zeros((BV, CK)) for p in pieces]

    # dS^T [BV, K] in pieces of CK key columns (the forward's recurrence carries S^T the same way).
    @hl.loop(0, NT, carry=dS0, pipelined=True)
    def dSt(i, *dSt):
        c = NT - 1 - i
        rows = hl.tile(c * BT, BT)
        for p, s in zip(pieces, dSt):
            dhs[b, c, h, cols, p] = s                                   # gradient of chunk c's end state
        Hc, Lc = gh[b, rows, h], gl[b, rows, h]
        end = c * BT + BT - 1
        H_last, L_last = gh[b, end, h], gl[b, end, h]
        doc = dout[b, rows, h, cols].to("float32")                        # [BT, BV]
        a = aqk[b, rows, h, :]
        duc = hl.dot(a, doc.to(a.dtype), trans_a=True) * scale          # scale P^T dO
        ke = decay.to_end(Hc, Lc, H_last, L_last, BT)[:, None]
        eG = decay.from_start(Hc, Lc, BT)[:, None] * scale
        for p, s in zip(pieces, dSt):
            duc = hl.dot(k[b, rows, h, p].to("float32") * ke, s, duc, trans_b=True)   # + Kt dS'
        du[b, rows, h, cols] = duc
        chunk = decay.over_chunk(H_last, L_last, BT)
        return tuple(hl.dot(doc, q[b, rows, h, p].to("float32") * eG,
                            chunk * s - hl.dot(duc, w[b, rows, h, p].to("float32"), trans_a=True), trans_a=True)
                     for p, s in zip(pieces, dSt))

    if STORE_DH0:
        for p, s in zip(pieces, dSt):
            dh0[b, h, p, cols] = s.T


@hl.kernel
def delta_scan_backward_grads(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    beta: hl.In("B", "T", "H"), gh: hl.In("B", "TP", "H", dtype="int32"),
    gl: hl.In("B", "TP", "H", dtype="float32"), un: hl.In("B", "TP", "H", "V", dtype="float32"),
    hs: hl.In("B", "NT", "H", "V", "K"), dout: hl.In("B", "T", "H", "V"),
    du: hl.In("B", "TP", "H", "V", dtype="float32"), dhs: hl.In("B", "NT", "H", "V", "K", dtype="float32"),
    dq: hl.Out("B", "T", "H", "K"), dk: hl.Out("B", "T", "H", "K"), dv: hl.Out("B", "T", "H", "V"),
    dg: hl.Out("B", "T", "H"), dbeta: hl.Out("B", "T", "H"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, CK: int, CV: int,
):
    c, bh = hl.grid(hl.dim("NT"), hl.dim("B") * hl.dim("H"))
    b, h = bh // hl.dim("H"), bh % hl.dim("H")
    rows = hl.tile(c * BT, BT)
    pieces = _pieces(K, CK)
    i = hl.iota(BT)
    strict = i[:, None] > i[None, :]

    Hc, Lc = gh[b, rows, h], gl[b, rows, h]
    end = c * BT + BT - 1
    bc = beta[b, rows, h].to("float32")
    # The [BT, BT] products stay live through the V loop (a few registers at the GPUs' BT = 16):
    # redone after it, their [BT, K] operands, split in two for 3xTF32, spilled float32 on NVIDIA.
    gamma, P, kkg = _chunk_products(q, k, b, h, rows, pieces, Hc, Lc, BT, strict)
    Tm = hl.unit_lower_inverse(bc[:, None] * kkg)                        # (I + A)^-1
    nk = len(pieces)

    # V in steps of CV columns; carries dP, dTm, per key piece dQ's state term, dKt and dW, and
    # per row dbeta's U term and <S, dS'> (the same in every row).
    zk = [hl.zeros((BT, CK)) for _ in range(3 * nk)]

    @hl.loop(0, hl.cdiv(V, CV), carry=[hl.zeros((BT, BT)), hl.zeros((BT, BT))] + zk + [hl.zeros((BT,)), hl.zeros((BT,))])
    def acc(j, dP, dTm, *rest):
        dQs, dKt, dW = list(rest[:nk]), list(rest[nk:2 * nk]), list(rest[2 * nk:3 * nk])
        db, sds = rest[3 * nk], rest[3 * nk + 1]
        cols = hl.tile(j * CV, CV)
        doc = dout[b, rows, h, cols].to("float32")
        uc, duc = un[b, rows, h, cols], du[b, rows, h, cols]
        vc = v[b, rows, h, cols].to("float32")
        dP = hl.dot(doc, uc, dP, trans_b=True)
        dTm = hl.dot(duc, vc * bc[:, None], dTm, trans_b=True)
        tdu = hl.dot(Tm, duc, trans_a=True)                              # Tm^T dU
        dv[b, rows, h, cols] = tdu * bc[:, None]
        db = db + hl.sum(tdu * vc, 1)                                    # dbeta's U term
        for n, p in enumerate(pieces):
            S = hs[b, c, h, cols, p].to("float32")                       # [CV, CK] of S^T
            dS = dhs[b, c, h, cols, p]
            dQs[n] = hl.dot(doc, S, dQs[n])
            dKt[n] = hl.dot(uc, dS, dKt[n])
            dW[n] = hl.dot(duc, S, dW[n])                                # -dW
            sds = sds + hl.sum(hl.sum(S * dS, 1), 0)
        return (dP, dTm, *dQs, *dKt, *dW, db, sds)

    dP, dTm = acc[0], acc[1]
    dQs, dKt, dW = list(acc[2:2 + nk]), list(acc[2 + nk:2 + 2 * nk]), list(acc[2 + 2 * nk:2 + 3 * nk])
    dbeta_acc, sds = acc[2 + 3 * nk], acc[3 + 3 * nk]
    eG = decay.from_start(Hc, Lc, BT)                                    # [BT] exp(G)
    ke = decay.to_end(Hc, Lc, gh[b, end, h], gl[b, end, h], BT)          # [BT] exp(G_last - G)
    wk = bc * eG                                                         # W = Tm diag(beta D) K

    dP = dP * scale
    dPg = dP * gamma                                                     # d(Q K^T) through P
    x = dP * P
    dG = hl.sum(x, 1) - hl.sum(x, 0)                                     # P's decays
    # exp(G_last) of the carried state: <S, dS'> exp(G_last), given to the last row
    dG_last = sds * decay.over_chunk(gh[b, end, h], gl[b, end, h], BT)

    # Tm = (I + A)^-1: dA = -Tm^T dTm Tm^T on the strict lower part, dTm with W's term
    # (dW (beta D K)^T) added; A = diag(beta) (K K^T * Gamma).
    dTm = dTm - _sum_dots(dW, [k[b, rows, h, p].to("float32") * wk[:, None] for p in pieces], trans_b=True)
    dA = hl.where(strict, -hl.dot(hl.dot(Tm, dTm, trans_a=True), Tm, trans_b=True), 0.0)
    e = dA * kkg                                                         # dbeta's A term per (i, j)
    dbeta_acc = dbeta_acc + hl.sum(e, 1)
    eb = e * bc[:, None]
    dG = dG + hl.sum(eb, 1) - hl.sum(eb, 0)                              # A's decays
    dAb = dA * gamma * bc[:, None]                                       # d(K K^T)
    dAs = dAb + dAb.T                                                    # both of dk's K K^T terms in one dot

    # Key pieces one at a time: each accumulator is finished and stored.
    for n, p in enumerate(pieces):
        qn, kn = q[b, rows, h, p].to("float32"), k[b, rows, h, p].to("float32")
        dqn = dQs[n] * (eG * scale)[:, None]
        dG = dG + hl.sum(qn * dqn, 1)                                    # Q's exp(G)
        dq[b, rows, h, p] = hl.dot(dPg, kn, dqn)
        ktn = dKt[n] * ke[:, None]
        kt = hl.sum(kn * ktn, 1)                                         # Kt's exp(G_last - G_j)
        dG = dG - kt
        dG_last = dG_last + hl.sum(kt, 0)
        tdw = hl.dot(Tm, dW[n], trans_a=True)                            # -Tm^T dW
        xw = hl.sum(tdw * kn, 1) * eG
        dbeta_acc = dbeta_acc - xw
        dG = dG - bc * xw                                                # W's exp(G)
        dkn = hl.dot(dPg, qn, ktn - tdw * wk[:, None], trans_a=True)
        dk[b, rows, h, p] = hl.dot(dAs, kn, dkn)
    dbeta[b, rows, h] = dbeta_acc
    dG = dG + hl.where(i == BT - 1, dG_last, 0.0)
    # g_t enters G_i for every i >= t of its chunk: dg is the reverse cumsum of dG.
    dg[b, rows, h] = hl.sum(hl.where(i[:, None] <= i[None, :], dG[None, :], 0.0), 1)


def _chunk_products(q, k, b, h, rows, pieces, Hc, Lc, BT: int, strict):
    """(Gamma [BT, BT] (0 above the diagonal), P = (Q K^T * Gamma, causal),
    strict_lower(K K^T * Gamma)) of a chunk, float32."""
    i = hl.iota(BT)
    gamma = decay.segment(Hc, Lc, Hc, Lc, BT, i[:, None] >= i[None, :])
    qk = kk = None
    for p in pieces:
        qp, kp = q[b, rows, h, p].to("float32"), k[b, rows, h, p].to("float32")
        qk = hl.dot(qp, kp, qk, trans_b=True)
        kk = hl.dot(kp, kp, kk, trans_b=True)
    return gamma, qk * gamma, hl.where(strict, kk * gamma, 0.0)


def _sum_dots(a: list, b: list, **kw):
    out = None
    for x, y in zip(a, b):
        out = hl.dot(x, y, out, **kw)
    return out


def consts(K: int, V: int, chunk_size: int, schedule: Mapping) -> dict:
    """Compile-time constants shared by the backward's launches: chunk BT, key pieces CK, V tile
    BV of the recurrences and V step CV of the gradients (a schedule's ``chunk_size`` wins over
    the call's)."""
    BT = spec.pow2(int(schedule.get("chunk_size", chunk_size)))
    return dict(K=K, V=V, BT=BT, BK=spec.pow2(K), CK=min(int(schedule.get("key_cols", 64)), spec.pow2(K)),
                BV=min(int(schedule["BV"]), spec.pow2(V)), CV=min(int(schedule.get("grad_cols", 32)), spec.pow2(V)),
                prepare_cols=int(schedule.get("prepare_cols", 64)))


def _check(q, k, v, g, beta, do, dfinal, initial_state, chunk_size) -> None:
    """The checks ``hola_dsl.ops`` does for the forward, on the backward's arguments (shapes,
    dtypes, devices; values were the forward's to check)."""
    dims = validate.same_dims({
        "q": validate.tensor("q", q, "BTHK"), "k": validate.tensor("k", k, "BTHK"),
        "v": validate.tensor("v", v, "BTHV"), "g": validate.tensor("g", g, "BTH"),
        "beta": validate.tensor("beta", beta, "BTH"), "do": validate.tensor("do", do, "BTHV"),
    })
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got k {k.dtype}, v {v.dtype}")
    if do.dtype not in (v.dtype, torch.float32):
        raise TypeError(f"do: expected the dtype of o ({v.dtype}) or torch.float32, got {do.dtype}")
    for name, x in (("dfinal", dfinal), ("initial_state", initial_state)):
        if x is not None:
            validate.same_dims({"q, k, v": dims, name: validate.tensor(name, x, "BHKV", dtypes=(torch.float32,))})
    validate.same_device(q=q, k=k, v=v, g=g, beta=beta, do=do, dfinal=dfinal, initial_state=initial_state)
    validate.positive_int("chunk_size", chunk_size, power_of_two=True)


def plan(schedule: Mapping, q, k, v, g, beta, do, dfinal, *, scale: float, initial_state: Optional[torch.Tensor],
         chunk_size: int) -> spec.Plan:
    """The backward of ``hola_dsl.ops.delta_scan`` for q, k (as the forward saw them: already
    L2-normalised), v [B, T, H, K | V], g, beta [B, T, H], do [B, T, H, V] (o's gradient, o's
    dtype or float32) and dfinal [B, H, K, V] float32 or None (the final state's). Returns
    (dq, dk, dv, dg, dbeta, dinitial_state or None), each in its input's dtype."""
    _check(q, k, v, g, beta, do, dfinal, initial_state, chunk_size)
    q, k, v, g, beta, do = spec.dense(q, k, v, g, beta, do)
    B, T, H, K = q.shape
    V = v.shape[-1]
    c = consts(K, V, chunk_size, schedule)
    BT, CK, BV = c["BT"], c["CK"], c["BV"]
    NT = -(-T // BT)
    TP = NT * BT
    dev, dt = q.device, q.dtype
    f32 = torch.float32
    has_h0 = initial_state is not None
    h0 = initial_state.contiguous() if has_h0 else spec.unused((B, H, K, V), f32, dev)
    dht = dfinal.contiguous() if dfinal is not None else spec.unused((B, H, K, V), f32, dev)
    nv = -(-V // BV)
    # The forward's prepare (with the Q K^T block) and recurrence recompute W, U, u and the
    # per-chunk states S_c; m's parts and the final state are not needed.
    # Scratch (spec.scratch: not filled outside tests; each is written in full before it is read).
    w, U = spec.scratch((B, TP, H, K), dt, dev), spec.scratch((B, TP, H, V), f32, dev)
    gh, gl = spec.scratch((B, TP, H), torch.int32, dev), spec.scratch((B, TP, H), f32, dev)
    aqk = spec.scratch((B, TP, H, BT), dt, dev)
    un, hs = spec.scratch((B, TP, H, V), f32, dev), spec.scratch((B, NT, H, V, K), dt, dev)
    uscale, usq = spec.scratch((nv, B, T, H), f32, dev), spec.scratch((nv, B, T, H), f32, dev)
    dhs, du = spec.scratch((B, NT, H, V, K), f32, dev), spec.scratch((B, TP, H, V), f32, dev)
    dh0 = (spec.poisoned if has_h0 else spec.unused)((B, H, K, V), f32, dev)
    dq, dk = spec.poisoned((B, T, H, K), dt, dev), spec.poisoned((B, T, H, K), dt, dev)
    dv = spec.poisoned((B, T, H, V), v.dtype, dev)
    dg, dbeta = spec.poisoned((B, T, H), g.dtype, dev), spec.poisoned((B, T, H), beta.dtype, dev)
    step = c["prepare_cols"]
    launches = (
        spec.Launch(phases.delta_scan_prepare,
                    dict(K=K, V=V, BT=BT, CK=min(step, c["BK"]), CV=min(step, spec.pow2(V)), STORE_AQK=True),
                    dict(q=q, k=k, v=v, g=g, beta=beta, w=w, u=U, gh=gh, gl=gl, aqk=aqk)),
        spec.Launch(phases.delta_scan_recur,
                    dict(K=K, V=V, BT=BT, CK=CK, BV=BV, HAS_H0=has_h0, STORE_FINAL=False),
                    dict(k=k, w=w, u=U, gh=gh, gl=gl, h0=h0, un=un, hs=hs, uscale=uscale, usq=usq,
                         ht=spec.unused((B, H, K, V), f32, dev))),
        spec.Launch(delta_scan_backward_recur,
                    dict(K=K, V=V, BT=BT, CK=CK, BV=BV, HAS_DFINAL=dfinal is not None, STORE_DH0=has_h0),
                    dict(q=q, k=k, w=w, gh=gh, gl=gl, aqk=aqk, dout=do, dht=dht, dhs=dhs, du=du, dh0=dh0,
                         scale=float(scale))),
        spec.Launch(delta_scan_backward_grads, dict(K=K, V=V, BT=BT, CK=CK, CV=c["CV"]),
                    dict(q=q, k=k, v=v, beta=beta, gh=gh, gl=gl, un=un, hs=hs, dout=do, du=du, dhs=dhs,
                         dq=dq, dk=dk, dv=dv, dg=dg, dbeta=dbeta, scale=float(scale))),
    )
    return spec.Plan(launches, lambda: (dq, dk, dv, dg, dbeta, dh0 if has_h0 else None))


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1) -> tuple[tuple, dict]:
    """A call of B x T x H with an initial state and the final state's gradient: every kernel
    feature traced."""
    K, V = dims["K"], dims["V"]
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(B, T, H, K), x(B, T, H, K), x(B, T, H, V), x(B, T, H, dt=torch.float32), x(B, T, H),
              x(B, T, H, V), x(B, H, K, V, dt=torch.float32))
    return inputs, dict(scale=K ** -0.5, initial_state=x(B, H, K, V, dt=torch.float32),
                        chunk_size=dims.get("chunk_size", 64))


SPEC = spec.KernelSpec("delta_scan_backward",
                       (phases.delta_scan_prepare, phases.delta_scan_recur, delta_scan_backward_recur,
                        delta_scan_backward_grads),
                       plan, example)
