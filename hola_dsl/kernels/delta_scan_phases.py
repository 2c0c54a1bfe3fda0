"""Chunked gated delta rule, forward (SPEC.md section 1), as phases joined by scratch tensors.

The fused kernel (delta_scan.py) puts everything on the sequential path and redoes the chunk's
triangular solve in every V-tile program. Here, as in flash-linear-attention's split, only the
work that depends on the carried state runs in order:

  delta_scan_prepare       one program per (chunk, b, h), all chunks in parallel:
                           chunk-local gate sums, A = strict_lower(diag(beta) K K^T * Gamma),
                           Tm = (I + A)^-1 by 16 x 16 blocks, W = Tm diag(beta) (K exp G),
                           U = Tm diag(beta) V; for recur_output also (Q K^T * Gamma, causal).
  delta_scan_recur         one program per (V tile, b, h), sequential over chunks, two dots a
                           chunk: u = U - W S (= beta * residual, so m = ||u|| is free), then
                           S <- exp(G_last) S + (K exp(G_last - G))^T u; keeps u and each
                           chunk's starting state for the output phase.
  delta_scan_output        one program per (V tile, chunk, b h), all chunks in parallel:
                           o = scale ((Q exp G) S_c + (Q K^T * Gamma, causal) u).
  delta_scan_recur_output  recur that writes o itself (FlashQLA style: four dots a chunk, no
                           per-chunk states in memory).

The inverse is fla's solve_tril: the 16 x 16 diagonal blocks by forward substitution
(``hl.unit_lower_inverse``), the blocks below them merged with matmuls,
Tm_rs = -Tm_rr (sum_{s <= l < r} A_rl Tm_ls), which is block forward substitution. It is never
the power product (I - A)(I + A^2)(I + A^4)..., which loses every digit on repeated keys
(DESIGN.md). Gate sums follow decay.py: no float64.

Scratch tensors (hola_dsl.launch allocates them; NT = cdiv(T, BT) chunks, TP = NT BT rows, so
the last chunk is whole and later phases read it without masks):
  w, u    [B, TP, H, K], [B, TP, H, V]  input dtype: W and U, dot operands of the recurrence.
  gh, gl  [B, TP, H] float32: chunk-local prefix sums of the gates' coarse and fine parts
          (decay.py); float32 because every decay is exp of them (an input-dtype exponent
          would be off by whole percents).
  aqk     [B, TP, H, BT] input dtype: (Q K^T * Gamma, causal), a dot operand (recur_output).
  un      [B, TP, H, V] input dtype: u = U - W S, a dot operand of the output phase.
  hs      [B, NT, H, V, K] input dtype: the state at each chunk start, transposed (S^T, as
          the recurrence carries it), a dot operand of the output phase.
Dtypes: every dot takes its operands in the input dtype (bf16/fp16 tensor cores) and
accumulates in float32; float32 intermediates are rounded to the input dtype just before they
feed a dot, as fla does. The inverse is built in float32 (its merges are float32 dots) and
rounded only where it multiplies K and V; the carried state, u before rounding and m are float32.
float32 inputs keep everything in float32.
Padding past T loads q = k = v = 0, g = 0, beta = 0: those rows of W and U are 0, so u = 0 there
and the state is unchanged; their gate sums repeat the last token's, so the chunk's last row
holds the whole chunk's sums.
"""

from __future__ import annotations

from hola_dsl import lang as hl
from hola_dsl.kernels import decay

BC = 16     # rows of a diagonal block of the triangular inverse


@hl.kernel
def delta_scan_prepare(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    g: hl.In("B", "T", "H"), beta: hl.In("B", "T", "H"),
    w: hl.Out("B", "TP", "H", "K"), u: hl.Out("B", "TP", "H", "V"),
    gh: hl.Out("B", "TP", "H", dtype="float32"), gl: hl.Out("B", "TP", "H", dtype="float32"),
    aqk: hl.Out("B", "TP", "H", "BT"),
    *, K: int, V: int, BT: int, BK: int, BVP: int, STORE_AQK: bool,
):
    c, b, h = hl.grid(hl.cdiv(hl.dim("TP"), BT), hl.dim("B"), hl.dim("H"))
    NB = BT // BC
    dt = k.dtype
    keys, vals = hl.tile(0, BK), hl.tile(0, BVP)
    i = hl.iota(BC)
    strict, causal = i[:, None] > i[None, :], i[:, None] >= i[None, :]
    rows = [hl.tile(c * BT + n * BC, BC) for n in range(NB)]

    # Gate sums from the chunk start, block by block (the coarse sums stay exact: decay.py).
    Hs, Ls, bs = [], [], []
    for n in range(NB):
        hi, lo = decay.split(g[b, rows[n], h].to("float32"), BT)
        Hn, Ln = hl.cumsum(hi, 0), hl.cumsum(lo, 0)
        if n:
            Hn, Ln = Hn + decay.last(Hs[-1], BC), Ln + decay.last(Ls[-1], BC)
        gh[b, rows[n], h] = Hn
        gl[b, rows[n], h] = Ln
        Hs.append(Hn)
        Ls.append(Ln)
        bs.append(beta[b, rows[n], h].to("float32"))
    kb = [k[b, rows[n], h, keys] for n in range(NB)]                 # [BC, BK] input dtype

    # Tm = (I + A)^-1 block row by block row, in float32.
    Tm = {}
    A = {}
    for r in range(NB):
        for s in range(r + 1):
            gamma = decay.segment(Hs[r], Ls[r], Hs[s], Ls[s], strict if s == r else None)
            A[r, s] = bs[r][:, None] * hl.dot(kb[r], kb[s], trans_b=True) * gamma
        Tm[r, r] = hl.unit_lower_inverse(A[r, r])
        for s in range(r - 1, -1, -1):
            acc = None
            for m in range(s, r):
                acc = hl.dot(A[r, m], Tm[m, s], acc)
            Tm[r, s] = -hl.dot(Tm[r, r], acc)

    # W = Tm diag(beta) (K exp G), U = Tm diag(beta) V, by block rows.
    kg = [(kb[n].to("float32") * (bs[n] * decay.from_start(Hs[n], Ls[n]))[:, None]).to(dt) for n in range(NB)]
    vb = [(v[b, rows[n], h, vals].to("float32") * bs[n][:, None]).to(dt) for n in range(NB)]
    for r in range(NB):
        W = U = None
        for s in range(r + 1):
            t = Tm[r, s].to(dt)
            W = hl.dot(t, kg[s], W)
            U = hl.dot(t, vb[s], U)
        w[b, rows[r], h, keys] = W
        u[b, rows[r], h, vals] = U

    if STORE_AQK:
        for r in range(NB):
            qr = q[b, rows[r], h, keys]
            for s in range(NB):
                if s <= r:
                    gamma = decay.segment(Hs[r], Ls[r], Hs[s], Ls[s], causal if s == r else None)
                    blk = hl.dot(qr, kb[s], trans_b=True) * gamma
                else:
                    blk = hl.zeros((BC, BC))
                aqk[b, rows[r], h, hl.tile(s * BC, BC)] = blk


def _initial_state(h0, b, h, keys, cols, BV: int, BK: int, HAS_H0: bool):
    """The state's [BV, BK] slice S^T in float32: initial_state's, or zeros."""
    return h0[b, h, keys, cols].to("float32").T if HAS_H0 else hl.zeros((BV, BK))


def _recur_chunk(c, St, Sd, k, w, u, gh, gl, msq, iv, b, h, keys, cols, BT: int):
    """One chunk of the recurrence for state S^T = ``St`` (float32, [BV, BK]; ``Sd`` the same in
    the input dtype): writes m's partial sums of squares; returns u = U - W S [BT, BV] float32,
    the chunk's gate sums (H, L) and the next state."""
    rows = hl.tile(c * BT, BT)
    uc = u[b, rows, h, cols].to("float32") - hl.dot(w[b, rows, h, keys], Sd, trans_b=True)
    msq[iv, b, rows, h] = hl.sum(uc * uc, 1)
    Hc, Lc = gh[b, rows, h], gl[b, rows, h]
    end = c * BT + BT - 1
    H_last, L_last = gh[b, end, h], gl[b, end, h]
    ud = (uc * decay.to_end(Hc, Lc, H_last, L_last)[:, None]).to(Sd.dtype)
    St_next = decay.over_chunk(H_last, L_last) * St + hl.dot(ud, k[b, rows, h, keys], trans_a=True)
    return uc, Hc, Lc, St_next


@hl.kernel
def delta_scan_recur(
    k: hl.In("B", "T", "H", "K"), w: hl.In("B", "TP", "H", "K"), u: hl.In("B", "TP", "H", "V"),
    gh: hl.In("B", "TP", "H", dtype="float32"), gl: hl.In("B", "TP", "H", dtype="float32"),
    h0: hl.In("B", "H", "K", "V"),
    un: hl.Out("B", "TP", "H", "V"), hs: hl.Out("B", "NT", "H", "V", "K"),
    msq: hl.Out("NV", "B", "T", "H", dtype="float32"), ht: hl.Out("B", "H", "K", "V", dtype="float32"),
    *, K: int, V: int, BT: int, BK: int, BV: int, HAS_H0: bool, STORE_FINAL: bool,
):
    iv, b, h = hl.grid(hl.cdiv(V, BV), hl.dim("B"), hl.dim("H"))
    keys, cols = hl.tile(0, BK), hl.tile(iv * BV, BV)

    @hl.loop(0, hl.dim("NT"), carry=_initial_state(h0, b, h, keys, cols, BV, BK, HAS_H0), pipelined=True)
    def St(c, St):
        Sd = St.to(k.dtype)
        hs[b, c, h, cols, keys] = Sd
        uc, _, _, St_next = _recur_chunk(c, St, Sd, k, w, u, gh, gl, msq, iv, b, h, keys, cols, BT)
        un[b, hl.tile(c * BT, BT), h, cols] = uc
        return St_next

    if STORE_FINAL:
        ht[b, h, keys, cols] = St.T


@hl.kernel
def delta_scan_output(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), un: hl.In("B", "TP", "H", "V"),
    gh: hl.In("B", "TP", "H", dtype="float32"), gl: hl.In("B", "TP", "H", dtype="float32"),
    hs: hl.In("B", "NT", "H", "V", "K"), o: hl.Out("B", "T", "H", "V"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, BK: int, BV: int,
):
    iv, c, bh = hl.grid(hl.cdiv(V, BV), hl.dim("NT"), hl.dim("B") * hl.dim("H"))
    b, h = bh // hl.dim("H"), bh % hl.dim("H")
    rows, keys, cols = hl.tile(c * BT, BT), hl.tile(0, BK), hl.tile(iv * BV, BV)
    i = hl.iota(BT)
    qc, kc = q[b, rows, h, keys], k[b, rows, h, keys]
    Hc, Lc = gh[b, rows, h], gl[b, rows, h]
    inner = hl.dot(qc, kc, trans_b=True) * decay.segment(Hc, Lc, Hc, Lc, i[:, None] >= i[None, :])
    qs = hl.dot(qc, hs[b, c, h, cols, keys], trans_b=True)            # [BT, BV]
    o[b, rows, h, cols] = (decay.from_start(Hc, Lc)[:, None] * qs + hl.dot(inner.to(k.dtype), un[b, rows, h, cols])) * scale


@hl.kernel
def delta_scan_recur_output(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), w: hl.In("B", "TP", "H", "K"),
    u: hl.In("B", "TP", "H", "V"), gh: hl.In("B", "TP", "H", dtype="float32"),
    gl: hl.In("B", "TP", "H", dtype="float32"), aqk: hl.In("B", "TP", "H", "BT"),
    h0: hl.In("B", "H", "K", "V"), o: hl.Out("B", "T", "H", "V"),
    msq: hl.Out("NV", "B", "T", "H", dtype="float32"), ht: hl.Out("B", "H", "K", "V", dtype="float32"),
    scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, BK: int, BV: int, HAS_H0: bool, STORE_FINAL: bool,
):
    iv, b, h = hl.grid(hl.cdiv(V, BV), hl.dim("B"), hl.dim("H"))
    keys, cols = hl.tile(0, BK), hl.tile(iv * BV, BV)

    @hl.loop(0, hl.cdiv(hl.dim("TP"), BT), carry=_initial_state(h0, b, h, keys, cols, BV, BK, HAS_H0), pipelined=True)
    def St(c, St):
        Sd = St.to(k.dtype)
        uc, Hc, Lc, St_next = _recur_chunk(c, St, Sd, k, w, u, gh, gl, msq, iv, b, h, keys, cols, BT)
        rows = hl.tile(c * BT, BT)
        qs = hl.dot(q[b, rows, h, keys], Sd, trans_b=True)          # [BT, BV]
        o[b, rows, h, cols] = (decay.from_start(Hc, Lc)[:, None] * qs + hl.dot(aqk[b, rows, h, :], uc.to(k.dtype))) * scale
        return St_next

    if STORE_FINAL:
        ht[b, h, keys, cols] = St.T
