"""Chunked gated delta rule, forward (SPEC.md section 1): the DSL kernel, one program per
(V tile, b, h), and ``SPEC``, how a call launches it.

Each program walks the chunks of its sequence in order, carrying its slice of the state in
float32 (transposed, [BV, BK]). Inside a chunk (WY/UT form, G = cumsum(g), Gamma_ij = exp(G_i - G_j)):
    Tm = (I + strict_lower(diag(beta) K K^T * Gamma))^-1     by forward substitution
    u  = Tm diag(beta) (V - diag(exp(G)) K S)                 (= beta * residual, per token)
    o  = scale * ((Q exp(G)) S + (Q K^T * Gamma, causal) u)
    S <- exp(G_last) S + (K exp(G_last - G))^T u
Padding past T loads g = 0 and beta = k = v = 0, so it changes neither outputs nor state.
m = ||u|| needs all V columns, and float32 squares of u overflow above ~1e19 and go subnormal
below ~1e-19. So each program writes, per token, a scale of its columns, s = mean |u| (at least
2^-100, so 1 / s is finite), to uscale[iv], and the sum of squares of u / s
(each term at most BV^2) to usq[iv]; the plan's finishing step combines the V tiles exactly
(``hola_dsl.norms.combine_norms``). A row mean, unlike a row max, vectorises on a CPU.
"""

from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, norms, spec


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
        # Log decay since chunk start, summed in float64: the decays below are differences of
        # these sums, and with strong gates (|G| ~ 600 over a chunk) float32 sums lose 1e-4 of an
        # exponent per step, a 1e-5 relative error in the final state.
        G64 = hl.cumsum(g[b, rows, h].to("float64"), 0)              # [BT]
        G = G64.to("float32")
        # Mask before exp: above the diagonal G_i - G_j > 0 could overflow.
        gamma = hl.exp(hl.where(causal, (G64[:, None] - G64[None, :]).to("float32"), float("-inf")))
        A = hl.where(strict, hl.dot(kc * bc[:, None], kc, trans_b=True) * gamma, 0.0)
        Tm = hl.unit_lower_inverse(A)                                # (I + A)^-1
        # u = Tm diag(beta) (V - diag(exp G) K S): never forms the [BT, BK] W = Tm diag(beta exp G) K
        resid = v[b, rows, h, cols].to("float32") - hl.exp(G)[:, None] * hl.dot(kc, St, trans_b=True)
        u = hl.dot(Tm, resid * bc[:, None])                          # [BT, BV] = beta * e
        su = hl.maximum(hl.sum(hl.abs(u) * (1.0 / BV), 1), 2.0 ** -100)   # [BT]
        us = u * (1.0 / su)[:, None]
        uscale[iv, b, rows, h] = su
        usq[iv, b, rows, h] = hl.sum(us * us, 1)
        qc = q[b, rows, h, keys].to("float32")                       # [BT, BK]
        inner = hl.where(causal, hl.dot(qc, kc, trans_b=True) * gamma, 0.0)
        o[b, rows, h, cols] = (hl.dot(qc * hl.exp(G)[:, None], St, trans_b=True) + hl.dot(inner, u)) * scale
        G_last = hl.sum(hl.where(last, G64, 0.0), 0)                 # padding has g = 0
        decay = hl.exp((G_last - G64).to("float32"))                 # [BT] exp(G_last - G_j)
        # The chunk-to-chunk decay compounds over the sequence, so it keeps the float64 sum's
        # digits: exp(hi + lo) = exp(hi) (1 + lo) with hi = float32(G_last), |lo| <= 1 ulp(hi)
        # (a float32 exp, not a libm call; 5% of the CPU scan when it was one).
        hi = G_last.to("float32")
        lo = (G_last - hi.to("float64")).to("float32")
        return hl.exp(hi) * (1.0 + lo) * St + hl.dot(u, kc * decay[:, None], trans_a=True)

    if STORE_FINAL:
        ht[b, h, keys, cols] = St.T


def consts(K: int, V: int, chunk_size: int, schedule: Mapping, *, has_h0: bool, store_final: bool) -> dict:
    """Compile-time constants for head dims K, V and a schedule (its ``chunk_size``, when it has
    one, wins over the call's)."""
    # tl.dot needs tiles of 16 or more; the chunk size changes no result beyond rounding.
    return dict(K=K, V=V, BT=spec.pow2(int(schedule.get("chunk_size", chunk_size))), BK=spec.pow2(K),
                BV=min(int(schedule["BV"]), spec.pow2(V)), HAS_H0=has_h0, STORE_FINAL=store_final)


def plan(schedule: Mapping, q, k, v, g, beta, *, scale: float, initial_state: Optional[torch.Tensor],
         output_final_state: bool, chunk_size: int) -> spec.Plan:
    """One launch over (V tile, b, h); m is finished from the V tiles' scaled partial norms.
    Shapes as in ``hola_dsl.ops.delta_scan``."""
    q, k, v, g, beta = spec.dense(q, k, v, g, beta)
    B, T, H, K = q.shape
    V = v.shape[-1]
    c = consts(K, V, chunk_size, schedule, has_h0=initial_state is not None, store_final=output_final_state)
    nv = -(-V // c["BV"])
    dev = q.device
    o = spec.poisoned((B, T, H, V), v.dtype, dev)
    uscale = spec.poisoned((nv, B, T, H), torch.float32, dev)
    usq = spec.poisoned((nv, B, T, H), torch.float32, dev)
    ht = (spec.poisoned if output_final_state else spec.unused)((B, H, K, V), torch.float32, dev)
    h0 = initial_state.contiguous() if initial_state is not None else spec.unused((B, H, K, V), torch.float32, dev)
    args = dict(q=q, k=k, v=v, g=g, beta=beta, h0=h0, o=o, uscale=uscale, usq=usq, ht=ht, scale=float(scale))
    return spec.Plan((spec.Launch(delta_scan, c, args),),
                     lambda: (o, norms.combine_norms(uscale, usq), ht if output_final_state else None))


def example(dims: Mapping[str, int], dtype: torch.dtype) -> tuple[tuple, dict]:
    """A call with an initial state and the final state asked for: every kernel feature traced."""
    K, V = dims["K"], dims["V"]
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(1, 1, 1, K), x(1, 1, 1, K), x(1, 1, 1, V), x(1, 1, 1, dt=torch.float32), x(1, 1, 1))
    return inputs, dict(scale=K ** -0.5, initial_state=x(1, 1, K, V, dt=torch.float32), output_final_state=True,
                        chunk_size=dims.get("chunk_size", 64))


SPEC = spec.KernelSpec("delta_scan", (delta_scan,), plan, example, caller_knobs=("chunk_size",))
