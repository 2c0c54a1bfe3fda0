"""Chunked gated delta rule, forward (docs/math.md section 1), as phases joined by scratch tensors.

The fused kernel (delta_scan.py) puts everything on the sequential path and redoes the chunk's
triangular solve in every V-tile program. Here, as in flash-linear-attention's split, only the
work that depends on the carried state runs in order:

  delta_scan_prepare       one program per (chunk, b, h), all chunks in parallel:
                           chunk-local gate sums, A = strict_lower(diag(beta) K K^T * Gamma),
                           Tm = (I + A)^-1 by 16 x 16 blocks, W = Tm diag(beta) (K exp G),
                           U = Tm diag(beta) V; for recur_output also (Q K^T * Gamma, causal).
  delta_scan_recur         one program per (V tile, b, h), sequential over chunks, two
                           products a chunk: u = U - W S (= beta * residual, so m = ||u|| is
                           free: written as the fused kernel writes it, a scale and a scaled sum
                           of squares per V tile, combined on the host), then S <- exp(G_last) S + (K exp(G_last - G))^T u; keeps u and
                           each chunk's starting state for the output phase.
  delta_scan_output        one program per (V tile, chunk, b h), all chunks in parallel:
                           o = scale ((Q exp G) S_c + (Q K^T * Gamma, causal) u).
  delta_scan_recur_output  recur that writes o itself (FlashQLA style: four products a chunk,
                           no per-chunk states in memory).

The inverse is fla's solve_tril: the 16 x 16 diagonal blocks by forward substitution
(``hl.unit_lower_inverse``), the blocks below them merged with matmuls,
Tm_rs = -Tm_rr (sum_{s <= l < r} A_rl Tm_ls), which is block forward substitution. It is never
the power product (I - A)(I + A^2)(I + A^4)..., which loses every digit on repeated keys
(docs/design.md). Gate sums follow decay.py: no float64.

Dtypes. Dot operands are in the input dtype (bf16/fp16 tensor cores), accumulation in float32,
and float32 intermediates are rounded to the input dtype where they feed a dot, as fla does,
except where one rounding costs too much of docs/tolerances.md's bf16 tolerance (5e-3): there the float32
operand goes in as two input-dtype parts, hi + lo (``_dot_split``: one more dot, ~16 bits kept).
Rounding everything as fla does measured 5.1e-3 on o (bf16, T = 1000, beta = 1, no decay; eager
backend, which rounds operands exactly as tensor cores do); with the splits below the worst of
docs/tolerances.md's hard cases is 3.4e-3 (o's own bf16 rounding is 1.7e-3). float32 inputs keep everything in
float32 and take one dot per product.
  Tm      float32 (registers), applied to K and V split: on repeated keys its rounding was
          amplified (o 4.0e-3 -> 2.9e-3, final state 3.3e-3 -> 2.1e-4).
  u (update operand)  split: the state update's rounding of u (state 4.1e-3 -> 2.9e-3).
Scratch tensors (delta_scan.py's plan allocates them; NT = cdiv(T, BT) chunks, TP = NT BT rows, so
the last chunk is whole and later phases read it without masks):
  w       [B, TP, H, K] input dtype: W, a dot operand on the sequential path (splitting it too
          would double the recurrence's dots; its rounding costs ~2e-3 of the state at worst).
  u       [B, TP, H, V] float32: U is no dot operand, and u = U - W S cancels against it.
  gh, gl  [B, TP, H] int32, float32: chunk-local prefix sums of the gates' coarse parts (exact
          counts of 2^-F) and fine parts (decay.py): every decay is exp of them.
  aqk     [B, TP, H, BT] input dtype: (Q K^T * Gamma, causal), a dot operand (recur_output).
  un      [B, TP, H, V] float32: u = U - W S for the output phase, which splits it.
  hs      [B, NT, H, V, K] input dtype: the state at each chunk start, transposed (S^T, as
          the recurrence carries it), a dot operand of the output phase.
Padding past T loads q = k = v = 0, g = 0, beta = 0: those rows of W and U are 0, so u = 0 there
and the state is unchanged; their gate sums repeat the last token's, so the chunk's last row
holds the whole chunk's sums.
"""

from hola_dsl import lang as hl
from hola_dsl.kernels import decay

BC = 16     # rows of a diagonal block of the triangular inverse


def norm_parts(u):
    """(s, sum((u / s)^2)) per row of a float32 tile u [rows, cols]: s = max(mean |u|, 2^-100),
    so every scaled square is at most cols^2 and 1 / s is finite; ||u_row|| = s sqrt(sum), which
    ``hola_dsl.norms.combine_norms`` takes over several column tiles. The fused kernel
    (delta_scan.py) writes m's parts with it too."""
    s = hl.maximum(hl.sum(hl.abs(u) * (1.0 / u.shape[1]), 1), 2.0 ** -100)
    us = u * (1.0 / s)[:, None]
    return s, hl.sum(us * us, 1)


def _dot_split(a, b, acc=None, *, trans_a: bool = False):
    """op(a) @ b (op(a) = a^T with ``trans_a``) where one operand is float32 and the other in the
    input dtype: the float32 one goes in as two input-dtype parts, hi + lo, so the product keeps
    ~16 of its bits (one bf16 rounding, 8 bits, of the update's u cost the state 1e-3 relative on
    docs/tolerances.md's hard cases) on input-dtype tensor cores. float32 inputs take one dot."""
    dt = b.dtype if a.dtype == "float32" else a.dtype
    if dt == "float32":
        return hl.dot(a, b, acc, trans_a=trans_a)
    x = a if a.dtype == "float32" else b
    hi = x.to(dt)
    lo = (x - hi.to("float32")).to(dt)
    if x is a:
        return hl.dot(lo, b, hl.dot(hi, b, acc, trans_a=trans_a), trans_a=trans_a)
    return hl.dot(a, lo, hl.dot(a, hi, acc, trans_a=trans_a), trans_a=trans_a)


def _gram_row(k, b, h, rows, r: int, K: int, CK: int) -> list:
    """[k_r k_s^T for s <= r]: the [BC, BC] float32 blocks of block row r of the chunk's K K^T
    (block rows ``rows`` of k [B, T, H, K]), summed over steps of CK key columns (a loop: one
    step's loads are live at a time)."""
    @hl.loop(0, hl.cdiv(K, CK), carry=[hl.zeros((BC, BC)) for _ in range(r + 1)])
    def sums(j, *acc):
        cols = hl.tile(j * CK, CK)
        kr = k[b, rows[r], h, cols]
        ks = [k[b, rows[s], h, cols] for s in range(r)] + [kr]
        return tuple(hl.dot(kr, ks[s], a, trans_b=True) for s, a in enumerate(acc))
    return list(sums)


def _apply_lower(Tm, x, scales, out, b, h, rows, N: int, CN: int):
    """out's block rows r = sum_{s <= r} Tm_rs diag(scales_s) x_s (x, out [B, T, H, N]), by steps
    of CN columns; ``Tm`` blocks are float32, diag(scales) x is rounded to x's dtype."""
    dt = x.dtype

    @hl.loop(0, hl.cdiv(N, CN))
    def step(j):
        cols = hl.tile(j * CN, CN)
        xs = [(x[b, r, h, cols].to("float32") * sc[:, None]).to(dt) for r, sc in zip(rows, scales)]
        for r in range(len(rows)):
            acc = None
            for s in range(r + 1):
                acc = _dot_split(Tm[r, s], xs[s], acc)
            out[b, rows[r], h, cols] = acc


@hl.kernel
def delta_scan_prepare(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    g: hl.In("B", "T", "H"), beta: hl.In("B", "T", "H"),
    w: hl.Out("B", "TP", "H", "K"), u: hl.Out("B", "TP", "H", "V", dtype="float32"),
    gh: hl.Out("B", "TP", "H", dtype="int32"), gl: hl.Out("B", "TP", "H", dtype="float32"),
    aqk: hl.Out("B", "TP", "H", "BT"),
    *, K: int, V: int, BT: int, CK: int, CV: int, STORE_AQK: bool,
):
    c, b, h = hl.grid(hl.cdiv(hl.dim("TP"), BT), hl.dim("B"), hl.dim("H"))
    NB = BT // BC
    i = hl.iota(BC)
    strict = i[:, None] > i[None, :]
    rows = [hl.tile(c * BT + n * BC, BC) for n in range(NB)]

    # Gate sums from the chunk start, block by block (the coarse sums stay exact: decay.py).
    Hs, Ls, bs = [], [], []
    for n in range(NB):
        steps, lo = decay.split(g[b, rows[n], h].to("float32"), BT)
        Hn, Ln = hl.cumsum(steps, 0), hl.cumsum(lo, 0)
        if n:
            Hn, Ln = Hn + decay.last(Hs[-1], BC), Ln + decay.last(Ls[-1], BC)
        gh[b, rows[n], h] = Hn
        gl[b, rows[n], h] = Ln
        Hs.append(Hn)
        Ls.append(Ln)
        bs.append(beta[b, rows[n], h].to("float32"))

    # Tm = (I + A)^-1, A = strict_lower(diag(beta) K K^T * Gamma), block row by block row, in
    # float32: diagonal blocks by forward substitution, the rest by block forward substitution.
    Tm = {}
    for r in range(NB):
        kk = _gram_row(k, b, h, rows, r, K, CK)
        A = [bs[r][:, None] * kk[s] * decay.segment(Hs[r], Ls[r], Hs[s], Ls[s], BT, strict if s == r else None)
             for s in range(r + 1)]
        Tm[r, r] = hl.unit_lower_inverse(A[r])
        for s in range(r - 1, -1, -1):
            acc = None
            for m in range(s, r):
                acc = hl.dot(A[m], Tm[m, s], acc)
            Tm[r, s] = -hl.dot(Tm[r, r], acc)

    # W = Tm diag(beta) (K exp G), U = Tm diag(beta) V (Tm split into two input-dtype parts).
    _apply_lower(Tm, k, [bs[n] * decay.from_start(Hs[n], Ls[n], BT) for n in range(NB)], w, b, h, rows, K, CK)
    _apply_lower(Tm, v, bs, u, b, h, rows, V, CV)

    if STORE_AQK:                     # (Q K^T * Gamma, causal) for the recurrence that writes o
        # Whole-chunk tiles: one [BT, BT] product, and the chunk's gate sums in one piece (the
        # same sums as the blocks': the coarse ones are exact, the fine ones tiny).
        rows = hl.tile(c * BT, BT)
        steps, lo = decay.split(g[b, rows, h].to("float32"), BT)
        Hc, Lc = hl.cumsum(steps, 0), hl.cumsum(lo, 0)
        qk = None
        for p in _pieces(K, CK):
            qk = hl.dot(q[b, rows, h, p], k[b, rows, h, p], qk, trans_b=True)
        i = hl.iota(BT)
        aqk[b, rows, h, :] = qk * decay.segment(Hc, Lc, Hc, Lc, BT, i[:, None] >= i[None, :])


def _pieces(K: int, CK: int) -> list:
    """Index entries of the key dims in pieces of CK (the state and K, W, Q are handled a piece at
    a time, as fla does with 64 columns: a whole [BT, 128] operand would not fit in registers)."""
    return [hl.tile(j * CK, CK) for j in range(hl.cdiv(K, CK))]


def _initial_state(h0, b, h, pieces, cols, BV: int, CK: int, HAS_H0: bool) -> list:
    """The state's [BV, CK] pieces of S^T in float32: initial_state's, or zeros."""
    return [h0[b, h, p, cols].to("float32").T if HAS_H0 else hl.zeros((BV, CK)) for p in pieces]


def _recur_chunk(c, St, Sd, k, w, u, gh, gl, uscale, usq, iv, b, h, pieces, cols, BT: int):
    """One chunk of the recurrence for state S^T in pieces ``St`` (float32, [BV, CK] each; ``Sd``
    the same in the input dtype): writes m's part over this V tile (``norm_parts``: a scale and
    the scaled sum of squares); returns u = U - W S [BT, BV] float32, the chunk's gate sums
    (H, L) and the next state's pieces."""
    rows = hl.tile(c * BT, BT)
    ws = None
    for p, s in zip(pieces, Sd):
        ws = hl.dot(w[b, rows, h, p], s, ws, trans_b=True)
    uc = u[b, rows, h, cols].to("float32") - ws
    uscale[iv, b, rows, h], usq[iv, b, rows, h] = norm_parts(uc)
    Hc, Lc = gh[b, rows, h], gl[b, rows, h]
    end = c * BT + BT - 1
    H_last, L_last = gh[b, end, h], gl[b, end, h]
    ud = uc * decay.to_end(Hc, Lc, H_last, L_last, BT)[:, None]
    chunk = decay.over_chunk(H_last, L_last, BT)
    St_next = tuple(chunk * s + _dot_split(ud, k[b, rows, h, p], trans_a=True) for p, s in zip(pieces, St))
    return uc, Hc, Lc, St_next


@hl.kernel
def delta_scan_recur(
    k: hl.In("B", "T", "H", "K"), w: hl.In("B", "TP", "H", "K"), u: hl.In("B", "TP", "H", "V", dtype="float32"),
    gh: hl.In("B", "TP", "H", dtype="int32"), gl: hl.In("B", "TP", "H", dtype="float32"),
    h0: hl.In("B", "H", "K", "V"),
    un: hl.Out("B", "TP", "H", "V", dtype="float32"), hs: hl.Out("B", "NT", "H", "V", "K"),
    uscale: hl.Out("NV", "B", "T", "H", dtype="float32"), usq: hl.Out("NV", "B", "T", "H", dtype="float32"),
    ht: hl.Out("B", "H", "K", "V", dtype="float32"),
    *, K: int, V: int, BT: int, CK: int, BV: int, HAS_H0: bool, STORE_FINAL: bool,
):
    iv, b, h = hl.grid(hl.cdiv(V, BV), hl.dim("B"), hl.dim("H"))
    pieces, cols = _pieces(K, CK), hl.tile(iv * BV, BV)

    @hl.loop(0, hl.dim("NT"), carry=_initial_state(h0, b, h, pieces, cols, BV, CK, HAS_H0), pipelined=True)
    def St(c, *St):
        Sd = [s.to(k.dtype) for s in St]
        for p, s in zip(pieces, Sd):
            hs[b, c, h, cols, p] = s
        uc, _, _, St_next = _recur_chunk(c, St, Sd, k, w, u, gh, gl, uscale, usq, iv, b, h, pieces, cols, BT)
        un[b, hl.tile(c * BT, BT), h, cols] = uc
        return St_next

    if STORE_FINAL:
        for p, s in zip(pieces, St):
            ht[b, h, p, cols] = s.T


@hl.kernel
def delta_scan_output(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), un: hl.In("B", "TP", "H", "V", dtype="float32"),
    gh: hl.In("B", "TP", "H", dtype="int32"), gl: hl.In("B", "TP", "H", dtype="float32"),
    hs: hl.In("B", "NT", "H", "V", "K"), o: hl.Out("B", "T", "H", "V"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, CK: int, BV: int,
):
    iv, c, bh = hl.grid(hl.cdiv(V, BV), hl.dim("NT"), hl.dim("B") * hl.dim("H"))
    b, h = bh // hl.dim("H"), bh % hl.dim("H")
    rows, cols = hl.tile(c * BT, BT), hl.tile(iv * BV, BV)
    qk = qs = None
    for p in _pieces(K, CK):
        qp = q[b, rows, h, p]
        qk = hl.dot(qp, k[b, rows, h, p], qk, trans_b=True)              # [BT, BT]
        qs = hl.dot(qp, hs[b, c, h, cols, p], qs, trans_b=True)          # [BT, BV]
    Hc, Lc = gh[b, rows, h], gl[b, rows, h]
    i = hl.iota(BT)
    inner = (qk * decay.segment(Hc, Lc, Hc, Lc, BT, i[:, None] >= i[None, :])).to(k.dtype)
    o[b, rows, h, cols] = (decay.from_start(Hc, Lc, BT)[:, None] * qs + _dot_split(inner, un[b, rows, h, cols])) * scale


@hl.kernel
def delta_scan_recur_output(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), w: hl.In("B", "TP", "H", "K"),
    u: hl.In("B", "TP", "H", "V", dtype="float32"), gh: hl.In("B", "TP", "H", dtype="int32"),
    gl: hl.In("B", "TP", "H", dtype="float32"), aqk: hl.In("B", "TP", "H", "BT"),
    h0: hl.In("B", "H", "K", "V"), o: hl.Out("B", "T", "H", "V"),
    uscale: hl.Out("NV", "B", "T", "H", dtype="float32"), usq: hl.Out("NV", "B", "T", "H", dtype="float32"),
    ht: hl.Out("B", "H", "K", "V", dtype="float32"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, CK: int, BV: int, HAS_H0: bool, STORE_FINAL: bool,
):
    iv, b, h = hl.grid(hl.cdiv(V, BV), hl.dim("B"), hl.dim("H"))
    pieces, cols = _pieces(K, CK), hl.tile(iv * BV, BV)

    @hl.loop(0, hl.cdiv(hl.dim("TP"), BT), carry=_initial_state(h0, b, h, pieces, cols, BV, CK, HAS_H0), pipelined=True)
    def St(c, *St):
        Sd = [s.to(k.dtype) for s in St]
        rows = hl.tile(c * BT, BT)
        qs = None
        for p, s in zip(pieces, Sd):
            qs = hl.dot(q[b, rows, h, p], s, qs, trans_b=True)          # [BT, BV]
        uc, Hc, Lc, St_next = _recur_chunk(c, St, Sd, k, w, u, gh, gl, uscale, usq, iv, b, h, pieces, cols, BT)
        o[b, rows, h, cols] = (decay.from_start(Hc, Lc, BT)[:, None] * qs + _dot_split(aqk[b, rows, h, :], uc)) * scale
        return St_next

    if STORE_FINAL:
        for p, s in zip(pieces, St):
            ht[b, h, p, cols] = s.T
