"""Chunked gated delta rule, forward (SPEC.md section 1), one program per (V tile, b, h).

Each program walks the chunks of its sequence in order, carrying its slice of the state in
float32 (transposed, [BV, BK]). Inside a chunk (WY/UT form, G = cumsum(g), Gamma_ij = exp(G_i - G_j),
the sums split so that no decay cancels, in float32: decay.py):
    Tm = (I + strict_lower(diag(beta) K K^T * Gamma))^-1     by forward substitution
    u  = Tm diag(beta) (V - diag(exp(G)) K S)                 (= beta * residual, per token)
    o  = scale * ((Q exp(G)) S + (Q K^T * Gamma, causal) u)
    S <- exp(G_last) S + (K exp(G_last - G))^T u
Padding past T loads g = 0 and beta = k = v = 0, so it changes neither outputs nor state.
m = ||u|| needs all V columns, and float32 squares of u overflow above ~1e19 and go subnormal
below ~1e-19. So each program writes, per token, a scale of its columns, s = mean |u| (at least
2^-100, so 1 / s is finite), to uscale[iv], and the sum of squares of u / s
(each term at most BV^2) to usq[iv] (``norm_parts``, which the phases share); the host combines
the V tiles exactly (``model.norms.combine_norms``). A row mean, unlike a row max, vectorises on
a CPU.
On GPUs the phases of delta_scan_phases.py take the solve off the sequential path; this kernel
is the schedule's split "fused".
"""

from hola_dsl import lang as hl
from hola_dsl.kernels import decay


def norm_parts(u):
    """(s, sum((u / s)^2)) per row of a float32 tile u [rows, cols]: s = max(mean |u|, 2^-100),
    so every scaled square is at most cols^2 and 1 / s is finite; ||u_row|| = s sqrt(sum), which
    ``model.norms.combine_norms`` takes over several column tiles."""
    s = hl.maximum(hl.sum(hl.abs(u) * (1.0 / u.shape[1]), 1), 2.0 ** -100)
    us = u * (1.0 / s)[:, None]
    return s, hl.sum(us * us, 1)


@hl.kernel
def delta_scan(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    g: hl.In("B", "T", "H"), beta: hl.In("B", "T", "H"), h0: hl.In("B", "H", "K", "V"),
    o: hl.Out("B", "T", "H", "V"), uscale: hl.Out("NV", "B", "T", "H", dtype="float32"),
    usq: hl.Out("NV", "B", "T", "H", dtype="float32"),
    ht: hl.Out("B", "H", "K", "V", dtype="float32"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, BK: int, BV: int, HAS_H0: bool, STORE_FINAL: bool,
):
    T = hl.dim("T")
    iv, b, h = hl.grid(hl.cdiv(V, BV), hl.dim("B"), hl.dim("H"))
    keys = hl.tile(0, BK)                    # all K key dims, padded to BK
    cols = hl.tile(iv * BV, BV)              # this program's value columns
    i = hl.iota(BT)
    causal = i[:, None] >= i[None, :]
    strict = i[:, None] > i[None, :]
    last = i == BT - 1

    # The state is carried transposed, St = S^T [BV, BK]: the update then transposes the small
    # u [BT, BV] instead of the [BT, BK] key tile, which keeps registers down on GPUs.
    St0 = h0[b, h, keys, cols].to("float32").T if HAS_H0 else hl.zeros((BV, BK))

    @hl.loop(0, hl.cdiv(T, BT), carry=St0, pipelined=True)
    def St(c, St):
        rows = hl.tile(c * BT, BT)
        kc = k[b, rows, h, keys].to("float32")                       # [BT, BK]
        bc = beta[b, rows, h].to("float32")                          # [BT]
        # Log-decay sums since the chunk start, split so that no decay below cancels (decay.py).
        steps, lo = decay.split(g[b, rows, h].to("float32"), BT)
        Hs, Ls = hl.cumsum(steps, 0), hl.cumsum(lo, 0)               # [BT] int32, float32
        gamma = decay.segment(Hs, Ls, Hs, Ls, BT, causal)            # [BT, BT] exp(G_i - G_j)
        A = hl.where(strict, hl.dot(kc * bc[:, None], kc, trans_b=True) * gamma, 0.0)
        Tm = hl.unit_lower_inverse(A)                                # (I + A)^-1
        eG = decay.from_start(Hs, Ls, BT)                            # [BT] exp(G)
        # u = Tm diag(beta) (V - diag(exp G) K S): never forms the [BT, BK] W = Tm diag(beta exp G) K
        resid = v[b, rows, h, cols].to("float32") - eG[:, None] * hl.dot(kc, St, trans_b=True)
        u = hl.dot(Tm, resid * bc[:, None])                          # [BT, BV] = beta * e
        uscale[iv, b, rows, h], usq[iv, b, rows, h] = norm_parts(u)  # [BT] each: m's part, scaled
        qc = q[b, rows, h, keys].to("float32")                       # [BT, BK]
        inner = hl.where(causal, hl.dot(qc, kc, trans_b=True) * gamma, 0.0)
        o[b, rows, h, cols] = (hl.dot(qc * eG[:, None], St, trans_b=True) + hl.dot(inner, u)) * scale
        H_last, L_last = decay.last(Hs, BT), decay.last(Ls, BT)      # padding has g = 0
        decay_to_end = decay.to_end(Hs, Ls, H_last, L_last, BT)      # [BT] exp(G_last - G_j)
        return decay.over_chunk(H_last, L_last, BT) * St + hl.dot(u, kc * decay_to_end[:, None], trans_a=True)

    if STORE_FINAL:
        ht[b, h, keys, cols] = St.T
