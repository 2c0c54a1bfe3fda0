"""Host side of the three DSL kernels, shared by every DSL backend (eager, Triton, TileLang).

For each public op this module turns validated arguments plus a completed schedule into the
kernel's compile-time constants and argument tensors, allocates outputs (poisoned with NaN, or
-2 for indices, so an unwritten element fails a check), asks a backend ``Runner`` to run the
kernel, and finishes the result (e.g. m from the per-V-tile scaled partial norms).

A Runner is ``run(kdef, consts, args)``: ``kdef`` a :class:`hola_dsl.lang.KernelDef`, ``consts``
its compile-time constants, ``args`` {param name: tensor or float}. :func:`specialize` gives the
traced IR for those (cached).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from hola_dsl import ir, lang, registry
from model.norms import combine_norms

Runner = Callable[[lang.KernelDef, dict, dict], None]

_TRACES: dict = {}


def specialize(kdef: lang.KernelDef, consts: dict, args: dict[str, Any]) -> ir.Kernel:
    """The IR of ``kdef`` for ``consts`` and the dtypes of the tensors in ``args`` (cached)."""
    dtypes = {n: registry.DTYPE_NAME[x.dtype] for n, x in args.items() if isinstance(x, torch.Tensor)}
    key = (kdef.name, id(kdef), tuple(sorted(consts.items())), tuple(sorted(dtypes.items())))
    if key not in _TRACES:
        _TRACES[key] = kdef.trace(dtypes, **consts)
    return _TRACES[key]


def pow2(n: int, lo: int = 16) -> int:
    """The smallest power of two >= max(n, lo) (tile sizes are powers of two)."""
    return max(lo, 1 << (max(int(n), 1) - 1).bit_length())


def _poisoned(shape, dtype, device) -> torch.Tensor:
    fill = float("nan") if dtype.is_floating_point else -2
    return torch.full(shape, fill, dtype=dtype, device=device)


def _dense(*xs):
    """Kernels address tensors as contiguous row-major: make views dense (free when they are)."""
    return [x.contiguous() for x in xs]


def _unused(shape, dtype, device) -> torch.Tensor:
    """A stand-in for an absent optional tensor: right shape, one element of storage."""
    return torch.zeros(1, dtype=dtype, device=device).expand(*shape)


def delta_scan_consts(K: int, V: int, chunk_size: int, cfg: dict, *, has_h0: bool, store_final: bool) -> dict:
    """Compile-time constants of the fused delta_scan kernel (and of the recurrence phases) for
    head dims K, V and a schedule."""
    # tl.dot needs tiles of 16 or more; the chunk size changes no result beyond rounding.
    return dict(K=K, V=V, BT=pow2(int(cfg.get("chunk_size", chunk_size))), BK=pow2(K),
                BV=min(int(cfg["BV"]), pow2(V)), HAS_H0=has_h0, STORE_FINAL=store_final)


def delta_scan(run: Runner, cfg: dict, q, k, v, g, beta, *, scale: float, initial_state: Optional[torch.Tensor],
               output_final_state: bool, chunk_size: int):
    """SPEC.md section 1 on a DSL backend. Shapes as in ``hola_dsl.ops.delta_scan``; ``cfg`` is a
    completed schedule (``chunk_size`` in it overrides the argument only when the user gave it).
    Its ``split`` (default "fused") picks the one-kernel scan or a pipeline of phases
    (:func:`run_phases`)."""
    split = cfg.get("split", "fused")
    if split != "fused":
        return run_phases(run, cfg, q, k, v, g, beta, scale=scale, initial_state=initial_state,
                          output_final_state=output_final_state, chunk_size=chunk_size, split=split)
    from hola_dsl.kernels.delta_scan import delta_scan as kdef
    q, k, v, g, beta = _dense(q, k, v, g, beta)
    B, T, H, K = q.shape
    V = v.shape[-1]
    consts = delta_scan_consts(K, V, chunk_size, cfg, has_h0=initial_state is not None,
                               store_final=output_final_state)
    nv = -(-V // consts["BV"])
    dev = q.device
    o = _poisoned((B, T, H, V), v.dtype, dev)
    uscale = _poisoned((nv, B, T, H), torch.float32, dev)
    usq = _poisoned((nv, B, T, H), torch.float32, dev)
    ht = _poisoned((B, H, K, V), torch.float32, dev) if output_final_state else _unused((B, H, K, V), torch.float32, dev)
    h0 = initial_state.contiguous() if initial_state is not None else _unused((B, H, K, V), torch.float32, dev)
    run(kdef, consts, dict(q=q, k=k, v=v, g=g, beta=beta, h0=h0, o=o, uscale=uscale, usq=usq, ht=ht,
                           scale=float(scale)))
    return o, combine_norms(uscale, usq), (ht if output_final_state else None)


def run_phases(run: Runner, cfg: dict, q, k, v, g, beta, *, scale: float, initial_state: Optional[torch.Tensor],
               output_final_state: bool, chunk_size: int, split: str):
    """SPEC.md section 1 as a pipeline of phase kernels (``hola_dsl/kernels/delta_scan_phases.py``)
    run in order through ``run``, joined by scratch tensors this function allocates (poisoned, like
    the outputs, so a row a phase fails to write fails the check).

    ``split`` is "prepare+recur+output" (prepare W, U and gate sums in parallel over chunks; the
    sequential recurrence keeps u and every chunk's starting state; the output in parallel over
    chunks) or "prepare+recur_output" (the recurrence writes o itself from a prepared causal
    Q K^T block). Arguments and results as :func:`delta_scan`.
    """
    from hola_dsl.kernels import delta_scan_phases as phases
    from schedules.delta_scan import SPLITS
    if split not in SPLITS or split == "fused":
        raise ValueError(f"split: expected one of {[s for s in SPLITS if s != 'fused']}, got {split!r}")
    q, k, v, g, beta = _dense(q, k, v, g, beta)
    B, T, H, K = q.shape
    V = v.shape[-1]
    fused = delta_scan_consts(K, V, chunk_size, cfg, has_h0=initial_state is not None, store_final=output_final_state)
    BT, BV = fused["BT"], fused["BV"]
    # The recurrence and the output take the state, K, W and Q in pieces of 64 key columns (fla's
    # choice: a whole [BT, 128] operand does not fit in registers); prepare steps through K and V
    # prepare_cols columns at a time.
    CK = min(64, fused["BK"])
    step = int(cfg.get("prepare_cols", 64))
    rec = dict(K=K, V=V, BT=BT, CK=CK, BV=BV, HAS_H0=fused["HAS_H0"], STORE_FINAL=fused["STORE_FINAL"])
    NT, nv = -(-T // BT), -(-V // BV)
    TP = NT * BT
    dev, dt = q.device, q.dtype
    emit_o = split == "prepare+recur_output"
    o = _poisoned((B, T, H, V), v.dtype, dev)
    uscale = _poisoned((nv, B, T, H), torch.float32, dev)
    usq = _poisoned((nv, B, T, H), torch.float32, dev)
    ht = _poisoned((B, H, K, V), torch.float32, dev) if output_final_state else _unused((B, H, K, V), torch.float32, dev)
    h0 = initial_state.contiguous() if initial_state is not None else _unused((B, H, K, V), torch.float32, dev)
    w, u = _poisoned((B, TP, H, K), dt, dev), _poisoned((B, TP, H, V), torch.float32, dev)
    gh, gl = _poisoned((B, TP, H), torch.int32, dev), _poisoned((B, TP, H), torch.float32, dev)
    aqk = _poisoned((B, TP, H, BT), dt, dev) if emit_o else _unused((B, TP, H, BT), dt, dev)
    run(phases.delta_scan_prepare, dict(K=K, V=V, BT=BT, CK=min(step, fused["BK"]), CV=min(step, pow2(V)), STORE_AQK=emit_o),
        dict(q=q, k=k, v=v, g=g, beta=beta, w=w, u=u, gh=gh, gl=gl, aqk=aqk))
    if emit_o:
        run(phases.delta_scan_recur_output, rec, dict(q=q, k=k, w=w, u=u, gh=gh, gl=gl, aqk=aqk, h0=h0, o=o,
                                                      uscale=uscale, usq=usq, ht=ht, scale=float(scale)))
    else:
        un, hs = _poisoned((B, TP, H, V), torch.float32, dev), _poisoned((B, NT, H, V, K), dt, dev)
        run(phases.delta_scan_recur, rec, dict(k=k, w=w, u=u, gh=gh, gl=gl, h0=h0, un=un, hs=hs, uscale=uscale,
                                               usq=usq, ht=ht))
        consts = {n: rec[n] for n in ("K", "V", "BT", "CK", "BV")}
        run(phases.delta_scan_output, consts, dict(q=q, k=k, un=un, gh=gh, gl=gl, hs=hs, o=o, scale=float(scale)))
    return o, combine_norms(uscale, usq), (ht if output_final_state else None)


def cache_select_consts(W: int, block_size: int, policy: str, score_dtype: torch.dtype, cfg: dict) -> dict:
    """Compile-time constants of the cache_select kernel."""
    return dict(W=W, WP=pow2(W), C=block_size, BC=min(int(cfg["BC"]), pow2(block_size)),
                RECENCY=(policy == "recency"),
                SDT="float64" if score_dtype == torch.float64 else "float32")


def cache_select(run: Runner, cfg: dict, scores: torch.Tensor, *, capacity: int, block_size: int,
                 policy: str) -> torch.Tensor:
    """SPEC.md section 2 on a DSL backend: idx [B, H, NB, capacity] int64, -1 padded."""
    from hola_dsl.kernels.cache_select import cache_select as kdef
    (scores,) = _dense(scores)
    B, T, H = scores.shape
    nb = math.ceil(T / block_size)
    idx = _poisoned((B, H, nb, capacity), torch.int64, scores.device)
    if idx.numel():
        run(kdef, cache_select_consts(capacity, block_size, policy, scores.dtype, cfg), dict(scores=scores, idx=idx))
    return idx


def cache_read_consts(K: int, V: int, W: int, block_size: int, eps: float, cfg: dict) -> dict:
    """Compile-time constants of the cache_read kernel."""
    return dict(K=K, V=V, W=W, C=block_size, BKD=pow2(K), BVD=pow2(V), WP=pow2(W),
                BQ=min(int(cfg["BQ"]), pow2(block_size)), BKV=int(cfg["BKV"]), EPS=float(eps))


def cache_read(run: Runner, cfg: dict, q, k, v, idx, gamma_q, gamma_k, sink, *, block_size: int,
               eps: float) -> torch.Tensor:
    """SPEC.md section 3 on a DSL backend: o_cache [B, T, H, V] in v's dtype."""
    from hola_dsl.kernels.cache_read import cache_read as kdef
    q, k, v, idx, gamma_q, gamma_k, sink = _dense(q, k, v, idx, gamma_q, gamma_k, sink)
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = _poisoned((B, T, H, V), v.dtype, q.device)
    if o.numel():
        run(kdef, cache_read_consts(K, V, idx.shape[-1], block_size, eps, cfg),
            dict(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink, o=o))
    return o
