"""Recurrent gated delta rule for decoding (docs/math.md section 1, token by token): the DSL kernel,
one program per (b, h), and ``SPEC``, how a call launches it.

Decoding adds one (or a few) tokens per sequence to a carried state, so the chunked form's
padding to a whole chunk (the triangular solve of a 64-token chunk for one token) is waste.
Each program holds its head's whole state S [BK, BV] in float32 and walks the T new tokens:
    a = exp(g_t);  u = beta_t (v_t - a S^T k_t);  o_t = scale (a S^T q_t + (k_t . q_t) u);
    S <- a S + k_t u^T
(o_t = scale S_t^T q_t rearranged, so a token costs two reductions and one update of S).
and m_t = ||u|| (the whole V is in the program, so the norm is finished here: scaled by the
row's mean magnitude first, as ``delta_scan_phases.norm_parts``). Products are reductions over a
broadcast: a matrix-vector product has no 16-row tile for a dot.

The state may be updated in place: the caller passes one tensor as ``h0`` and ``ht`` (each
program reads its slice before the loop and writes it after).
"""

from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, spec


@hl.kernel
def delta_step(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    g: hl.In("B", "T", "H"), beta: hl.In("B", "T", "H"), h0: hl.In("B", "H", "K", "V", dtype="float32"),
    o: hl.Out("B", "T", "H", "V"), m: hl.Out("B", "T", "H", dtype="float32"),
    ht: hl.Out("B", "H", "K", "V", dtype="float32"), scale: hl.Scalar("float32"),
    *, K: int, V: int, BK: int, BV: int,
):
    T = hl.dim("T")
    b, h = hl.grid(hl.dim("B"), hl.dim("H"))
    keys, cols = hl.tile(0, BK), hl.tile(0, BV)
    S0 = h0[b, h, keys, cols]                                            # [BK, BV] float32

    @hl.loop(0, T, carry=S0)
    def S(t, S):
        a = hl.exp(g[b, t, h].to("float32"))
        kt = k[b, t, h, keys].to("float32")                               # [BK]
        qt = q[b, t, h, keys].to("float32")
        Sk = hl.sum(S * kt[:, None], 0)                                  # [BV] S^T k
        Sq = hl.sum(S * qt[:, None], 0)                                  # [BV] S^T q
        u = beta[b, t, h].to("float32") * (v[b, t, h, cols].to("float32") - a * Sk)
        # o = scale (a S + k u^T)^T q, without a pass over the new state
        o[b, t, h, cols] = (a * Sq + hl.sum(kt * qt, 0) * u) * scale
        # m = ||u|| scaled first (norm_parts' rule, on the vector: reductions to scalars, which
        # every GPU thread computes itself, not a 1-row tile one thread writes for the others)
        s = hl.maximum(hl.sum(hl.abs(u) * (1.0 / BV), 0), 2.0 ** -100)
        us = u * (1.0 / s)
        m[b, t, h] = s * hl.sqrt(hl.sum(us * us, 0))
        return a * S + kt[:, None] * u[None, :]

    ht[b, h, keys, cols] = S


def consts(K: int, V: int) -> dict:
    """Compile-time constants for head dims K, V (the whole head in one program)."""
    return dict(K=K, V=V, BK=spec.pow2(K), BV=spec.pow2(V))


def plan(schedule: Mapping, q, k, v, g, beta, state, *, scale: float, in_place: bool = False,
         o: Optional[torch.Tensor] = None, m: Optional[torch.Tensor] = None) -> spec.Plan:
    """One launch over (b, h). Shapes as in ``hola_dsl.decode.delta_step``: returns (o [B, T, H, V]
    in v's dtype, m [B, T, H] float32, the new state [B, H, K, V] float32: ``state`` itself when
    ``in_place``). ``o``/``m`` given are written (they must be dense); else allocated poisoned."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dev = q.device
    o = spec.poisoned((B, T, H, V), v.dtype, dev) if o is None else o
    m = spec.poisoned((B, T, H), torch.float32, dev) if m is None else m
    ht = state if in_place else spec.poisoned((B, H, K, V), torch.float32, dev)
    args = dict(q=q, k=k, v=v, g=g, beta=beta, h0=state, o=o, m=m, ht=ht, scale=float(scale))
    launches = (spec.Launch(delta_step, consts(K, V), args),) if B * H else ()
    return spec.Plan(launches, lambda: (o, m, ht))


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1) -> tuple[tuple, dict]:
    """One new token per row (T as given) against a float32 state."""
    K, V = dims["K"], dims["V"]
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(B, T, H, K), x(B, T, H, K), x(B, T, H, V), x(B, T, H, dt=torch.float32), x(B, T, H),
              x(B, H, K, V, dt=torch.float32))
    return inputs, dict(scale=K ** -0.5)


SPEC = spec.KernelSpec("delta_step", (delta_step,), plan, example)
