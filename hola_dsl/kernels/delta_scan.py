"""Chunked gated delta rule, forward (docs/math.md section 1): the DSL kernel, one program per
(V tile, b, h), and ``SPEC``, how a call launches it.

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
(each term at most BV^2) to usq[iv] (``delta_scan_phases.norm_parts``, which the phases use
too); the plan's finishing step combines the V tiles exactly (``hola_dsl.norms.combine_norms``).
A row mean, unlike a row max, vectorises on a CPU.

This kernel is the schedule's split "fused" (the CPU's choice). On GPUs the phases of
delta_scan_phases.py take the solve off the sequential path: ``plan`` launches them, joined by
scratch tensors it allocates, when the schedule's ``split`` names them (schedules/delta_scan.py).
"""

from typing import Mapping, Optional

import torch

from hola_dsl import lang as hl, norms, spec
from hola_dsl.kernels import decay, delta_scan_phases as phases
from schedules.delta_scan import SPLITS


@hl.kernel
def delta_scan(
    q: hl.In("B", "T", "H", "K"), k: hl.In("B", "T", "H", "K"), v: hl.In("B", "T", "H", "V"),
    g: hl.In("B", "T", "H"), beta: hl.In("B", "T", "H"), h0: hl.In("N", "H", "K", "V"),
    o: hl.Out("B", "T", "H", "V"), uscale: hl.Out("NV", "B", "T", "H", dtype="float32"),
    usq: hl.Out("NV", "B", "T", "H", dtype="float32"),
    ht: hl.Out("N", "H", "K", "V", dtype="float32"), cu: hl.In("NS", dtype="int32"),
    scale: hl.Scalar("float32"),
    *, K: int, V: int, BT: int, BK: int, BV: int, HAS_H0: bool, STORE_FINAL: bool, VARLEN: bool,
):
    iv, n, h = hl.grid(hl.cdiv(V, BV), hl.dim("N"), hl.dim("H"))
    # Sequence n: batch row b, packed positions [bos, eos). Dense batches have N = B.
    b, bos, eos = (0, cu[n], cu[n + 1]) if VARLEN else (n, None, hl.dim("T"))
    keys = hl.tile(0, BK)                    # all K key dims, padded to BK
    cols = hl.tile(iv * BV, BV)              # this program's value columns
    i = hl.iota(BT)
    causal = i[:, None] >= i[None, :]
    strict = i[:, None] > i[None, :]
    last = i == BT - 1

    # The state is carried transposed, St = S^T [BV, BK]: the update then transposes the small
    # u [BT, BV] instead of the [BT, BK] key tile, which keeps registers down on GPUs.
    St0 = h0[n, h, keys, cols].to("float32").T if HAS_H0 else hl.zeros((BV, BK))

    @hl.loop(0, hl.cdiv(eos - bos if VARLEN else eos, BT), carry=St0, pipelined=True)
    def St(c, St):
        start = bos + c * BT if VARLEN else c * BT
        rows = hl.tile(start, BT)
        # Rows past the sequence load as padding (zeros); in a dense batch the dim masks them.
        ok = start + i < eos if VARLEN else None
        ok2 = ok[:, None] if VARLEN else None
        kc = k.load((b, rows, h, keys), mask=ok2).to("float32")     # [BT, BK]
        bc = beta.load((b, rows, h), mask=ok).to("float32")          # [BT]
        # Log-decay sums since the chunk start, split so that no decay below cancels (decay.py).
        steps, lo = decay.split(g.load((b, rows, h), mask=ok).to("float32"), BT)
        Hs, Ls = hl.cumsum(steps, 0), hl.cumsum(lo, 0)               # [BT] int32, float32
        gamma = decay.segment(Hs, Ls, Hs, Ls, BT, causal)            # [BT, BT] exp(G_i - G_j)
        A = hl.where(strict, hl.dot(kc * bc[:, None], kc, trans_b=True) * gamma, 0.0)
        Tm = hl.unit_lower_inverse(A)                                # (I + A)^-1
        eG = decay.from_start(Hs, Ls, BT)                            # [BT] exp(G)
        # u = Tm diag(beta) (V - diag(exp G) K S): never forms the [BT, BK] W = Tm diag(beta exp G) K
        resid = v.load((b, rows, h, cols), mask=ok2).to("float32") - eG[:, None] * hl.dot(kc, St, trans_b=True)
        u = hl.dot(Tm, resid * bc[:, None])                          # [BT, BV] = beta * e
        us, usum = phases.norm_parts(u)                              # [BT] each: m's part, scaled
        uscale.store((iv, b, rows, h), us, mask=ok)
        usq.store((iv, b, rows, h), usum, mask=ok)
        qc = q.load((b, rows, h, keys), mask=ok2).to("float32")     # [BT, BK]
        inner = hl.where(causal, hl.dot(qc, kc, trans_b=True) * gamma, 0.0)
        o.store((b, rows, h, cols), (hl.dot(qc * eG[:, None], St, trans_b=True) + hl.dot(inner, u)) * scale, mask=ok2)
        H_last, L_last = decay.last(Hs, BT), decay.last(Ls, BT)      # padding has g = 0
        decay_to_end = decay.to_end(Hs, Ls, H_last, L_last, BT)      # [BT] exp(G_last - G_j)
        return decay.over_chunk(H_last, L_last, BT) * St + hl.dot(u, kc * decay_to_end[:, None], trans_a=True)

    if STORE_FINAL:
        ht[n, h, keys, cols] = St.T


def consts(K: int, V: int, chunk_size: int, schedule: Mapping, *, has_h0: bool, store_final: bool) -> dict:
    """Compile-time constants of the fused kernel (and of the recurrence phases) for head dims K,
    V and a schedule (its ``chunk_size``, when it has one, wins over the call's)."""
    # tl.dot needs tiles of 16 or more; the chunk size changes no result beyond rounding.
    return dict(K=K, V=V, BT=spec.pow2(int(schedule.get("chunk_size", chunk_size))), BK=spec.pow2(K),
                BV=min(int(schedule["BV"]), spec.pow2(V)), HAS_H0=has_h0, STORE_FINAL=store_final)


def plan(schedule: Mapping, q, k, v, g, beta, *, scale: float, initial_state: Optional[torch.Tensor],
         output_final_state: bool, chunk_size: int, offsets: Optional[list[int]] = None) -> spec.Plan:
    """The schedule's ``split`` (default "fused"): one launch over (V tile, b, h), or the phases
    (:func:`plan_phases`); m is finished from the V tiles' scaled partial norms. Shapes as in
    ``hola_dsl.ops.delta_scan``. ``offsets`` (checked cu_seqlens, ``hola_dsl.varlen``): one
    program per (V tile, sequence, h) reading its bounds from them, always the fused split
    (the phases have no packed form yet)."""
    split = schedule.get("split", "fused") if offsets is None else "fused"
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r:.80}")
    q, k, v, g, beta = spec.dense(q, k, v, g, beta)
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if offsets is None else len(offsets) - 1
    c = consts(K, V, chunk_size, schedule, has_h0=initial_state is not None, store_final=output_final_state)
    nv = -(-V // c["BV"])
    dev = q.device
    o = spec.poisoned((B, T, H, V), v.dtype, dev)
    uscale = spec.poisoned((nv, B, T, H), torch.float32, dev)
    usq = spec.poisoned((nv, B, T, H), torch.float32, dev)
    ht = (spec.poisoned if output_final_state else spec.unused)((N, H, K, V), torch.float32, dev)
    h0 = initial_state.contiguous() if initial_state is not None else spec.unused((N, H, K, V), torch.float32, dev)
    if split == "fused":
        cu = (spec.unused((2,), torch.int32, dev) if offsets is None
              else torch.tensor(offsets, dtype=torch.int32, device=dev))
        args = dict(q=q, k=k, v=v, g=g, beta=beta, h0=h0, o=o, uscale=uscale, usq=usq, ht=ht, cu=cu,
                    scale=float(scale))
        launches = (spec.Launch(delta_scan, {**c, "VARLEN": offsets is not None}, args),)
    else:
        launches = plan_phases(split, schedule, c, q, k, v, g, beta, h0, o, uscale, usq, ht, float(scale))
    return spec.Plan(launches, lambda: (o, norms.combine_norms(uscale, usq), ht if output_final_state else None))


def plan_phases(split: str, schedule: Mapping, fused: Mapping, q, k, v, g, beta, h0, o, uscale, usq, ht,
                scale: float) -> tuple[spec.Launch, ...]:
    """The launches of a split scan (``hola_dsl/kernels/delta_scan_phases.py``), joined by scratch
    tensors allocated here (poisoned, like the outputs, so a row a phase fails to write fails the
    check). ``fused``: the fused kernel's constants for this call; the other arguments as the
    plan has them (dense inputs, the poisoned outputs, initial state or its stand-in).

    "prepare+recur+output": prepare W, U and gate sums in parallel over chunks; the sequential
    recurrence keeps u and every chunk's starting state; the output in parallel over chunks.
    "prepare+recur_output": the recurrence writes o itself from a prepared causal Q K^T block.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT, BV = fused["BT"], fused["BV"]
    # The recurrence and the output take the state, K, W and Q in pieces of 64 key columns (fla's
    # choice: a whole [BT, 128] operand does not fit in registers); prepare steps through K and V
    # prepare_cols columns at a time.
    CK = min(64, fused["BK"])
    step = int(schedule.get("prepare_cols", 64))
    rec = dict(K=K, V=V, BT=BT, CK=CK, BV=BV, HAS_H0=fused["HAS_H0"], STORE_FINAL=fused["STORE_FINAL"])
    NT = -(-T // BT)
    TP = NT * BT
    dev, dt = q.device, q.dtype
    emit_o = split == "prepare+recur_output"
    w, u = spec.poisoned((B, TP, H, K), dt, dev), spec.poisoned((B, TP, H, V), torch.float32, dev)
    gh, gl = spec.poisoned((B, TP, H), torch.int32, dev), spec.poisoned((B, TP, H), torch.float32, dev)
    aqk = (spec.poisoned if emit_o else spec.unused)((B, TP, H, BT), dt, dev)
    prepare = spec.Launch(phases.delta_scan_prepare,
                          dict(K=K, V=V, BT=BT, CK=min(step, fused["BK"]), CV=min(step, spec.pow2(V)),
                               STORE_AQK=emit_o),
                          dict(q=q, k=k, v=v, g=g, beta=beta, w=w, u=u, gh=gh, gl=gl, aqk=aqk))
    if emit_o:
        return (prepare, spec.Launch(phases.delta_scan_recur_output, rec,
                                     dict(q=q, k=k, w=w, u=u, gh=gh, gl=gl, aqk=aqk, h0=h0, o=o, uscale=uscale,
                                          usq=usq, ht=ht, scale=scale)))
    un, hs = spec.poisoned((B, TP, H, V), torch.float32, dev), spec.poisoned((B, NT, H, V, K), dt, dev)
    out = {n: rec[n] for n in ("K", "V", "BT", "CK", "BV")}
    return (prepare,
            spec.Launch(phases.delta_scan_recur, rec,
                        dict(k=k, w=w, u=u, gh=gh, gl=gl, h0=h0, un=un, hs=hs, uscale=uscale, usq=usq, ht=ht)),
            spec.Launch(phases.delta_scan_output, out,
                        dict(q=q, k=k, un=un, gh=gh, gl=gl, hs=hs, o=o, scale=scale)))


def example(dims: Mapping[str, int], dtype: torch.dtype, B: int = 1, T: int = 1, H: int = 1,
            offsets: Optional[list[int]] = None) -> tuple[tuple, dict]:
    """A call of B x T x H with an initial state and the final state asked for: every kernel
    feature traced (``offsets``: packed sequences, B = 1, T = offsets[-1], a state each)."""
    K, V = dims["K"], dims["V"]
    B, T, N = (B, T, B) if offsets is None else (1, offsets[-1], len(offsets) - 1)
    x = lambda *shape, dt=dtype: torch.empty(shape, dtype=dt, device="meta")
    inputs = (x(B, T, H, K), x(B, T, H, K), x(B, T, H, V), x(B, T, H, dt=torch.float32), x(B, T, H))
    return inputs, dict(scale=K ** -0.5, initial_state=x(N, H, K, V, dt=torch.float32), output_final_state=True,
                        chunk_size=dims.get("chunk_size", 64), **({} if offsets is None else {"offsets": list(offsets)}))


SPEC = spec.KernelSpec("delta_scan", (delta_scan, phases.delta_scan_prepare, phases.delta_scan_recur,
                                      phases.delta_scan_output, phases.delta_scan_recur_output),
                       plan, example, caller_knobs=("chunk_size",), packed_knobs=(("split", "fused"),))
