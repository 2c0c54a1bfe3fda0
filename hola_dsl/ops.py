"""The public API of docs/api.md: delta_scan, cache_select (with lola_select, policy
"lola"'s selection from keys, values and block-start states) and cache_read, every backend behind them.

Each function checks its arguments' shapes, dtypes and devices (see ``hola_dsl.validate``),
normalises what every backend shares (scale, optional q/k L2 norm), picks the backend and hands
over, one of two ways:

* a DSL backend (``Backend.dsl``) runs inside a ``torch.library`` custom op (``hola::delta_scan``,
  ``hola::cache_select``, ``hola::cache_read``): opaque to ``torch.compile`` (a fake
  implementation gives its outputs' shapes), with the value checks and the tuned-config lookup
  inside it, so that they run at run time and a compiled graph has no break. Its autograd
  formula calls the op's backward kernel through the same backend (``hola::<op>_backward``);
  a config given to the forward is not the backward's, which uses its own tuned or default one
  (its chunk included: the scan's backward runs at its schedule's chunk, not ``chunk_size``).
* a backend autograd follows by itself (the PyTorch reference; the eager interpreter for an op
  without a backward kernel when a gradient is needed) is called directly; its value checks
  are skipped while ``torch.compile`` traces (they need the values).
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any, Callable, Optional

import torch
from torch import Tensor

import schedules
from hola_dsl import backends, validate
from hola_dsl import kernels, norms, spec, varlen
from schedules.lookup import config_for
from schedules.space import shown

L2NORM_EPS = 1e-6


def l2norm(x: torch.Tensor, eps: float = L2NORM_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, computed in float32 without overflow or
    underflow for any float32 entries (scaled before squaring), returned in x's dtype."""
    return norms.normalize(x.float(), eps, mean=False).to(x.dtype)


def _packed(offsets: Optional[list[int]]) -> dict:
    """The backends' option for packed sequences: ``offsets`` (checked cu_seqlens as ints),
    passed only when there are some, so a call without them reaches a backend unchanged."""
    return {} if offsets is None else {"offsets": offsets}


def _offsets_of(offsets: list[int]) -> Optional[list[int]]:
    """The custom ops carry offsets as a list, [] for none."""
    return list(offsets) or None


def _sequences(name: str, n: int, offsets: list[int]) -> int:
    """Check that a per-sequence tensor's leading dim ``n`` is the number of packed sequences."""
    if n != len(offsets) - 1:
        raise ValueError(f"{name}: dim N is {n}, expected one per sequence of cu_seqlens, N = {len(offsets) - 1}")
    return 1     # stands for B = 1 in the shape checks that follow


def _scheduled(run: Callable[[Optional[dict]], Any], config: Optional[dict],
               tuned: Callable[[], Optional[dict]]) -> Any:
    """``run(config)`` with the caller's config (the backend checks it: a bad one is a
    ConfigError naming ``config`` and the knob). Without one, ``run`` gets the tuned config
    (``tuned()``, already checked against its record's target), and the backend's default if
    the backend still rejects it: a tuning record never stops a kernel call (docs/design.md)."""
    if config is not None:
        return run(config)
    tuned_config = tuned()
    if tuned_config is None:
        return run(None)
    try:
        return run(tuned_config)
    except schedules.ConfigError as exc:
        warnings.warn(f"tuned schedule skipped ({exc}); using the backend's default", RuntimeWarning, stacklevel=3)
        return run(None)


# ---------------------------------------------------------------- which way a call goes

@torch.compiler.assume_constant_result
def _tuned_items(kernel: str, backend: str, device: torch.device, dtype: torch.dtype, dims: tuple,
                 T: int) -> Optional[tuple]:
    config = config_for(kernel, backend, device, dtype, dict(dims), T)
    return None if config is None else tuple(config.items())


def _tuned(kernel: str, backend: str, device: torch.device, dtype: torch.dtype, dims: dict, T: int) -> Optional[dict]:
    """The tuned config of a call (``schedules.lookup.config_for``); while ``torch.compile``
    traces, looked up once and held as a constant of the graph (it reads files)."""
    if not torch.compiler.is_compiling():
        return config_for(kernel, backend, device, dtype, dims, T)
    items = _tuned_items(kernel, backend, device, dtype, tuple(sorted(dims.items())), int(T))
    return None if items is None else dict(items)


@torch.compiler.assume_constant_result
def _backend_name(name: str, device_type: str, grad_of: Optional[str], op: str, dtype: torch.dtype,
                  packed: bool) -> str:
    """``backends.resolve``'s choice, by name: a constant to ``torch.compile`` (it imports
    backends and asks toolchains, which a trace must not see)."""
    return backends.resolve(name, device_type, grad_of, op, dtype, packed).name


def _resolve(name: str, device_type: str, grad_of: Optional[str], op: str, dtype: torch.dtype,
             packed: bool = False) -> backends.Backend:
    if torch.compiler.is_compiling():
        return backends.get(_backend_name(name, device_type, grad_of, op, dtype, packed))
    return backends.resolve(name, device_type, grad_of, op, dtype, packed)


def _as_custom_op(impl: backends.Backend, op: str, grad_of: Optional[str], packed: bool = False) -> bool:
    """Whether a call goes through the custom op: a DSL backend, unless a gradient is needed
    and the op has no backward kernel there, or the call is packed (the backward kernels take
    no cu_seqlens yet): then autograd follows the backend's run."""
    return impl.dsl and (grad_of is None or (not packed and backends.backward_kernel(impl, op) is not None))


def _check_values() -> bool:
    """Value checks outside the custom ops run eagerly only (they need the values)."""
    return not torch.compiler.is_compiling()


def _config_arg(config: Any) -> str:
    """A config as the custom ops carry it: JSON text, "" for None."""
    if config is None:
        return ""
    try:
        return json.dumps(config, allow_nan=False)
    except (TypeError, ValueError):
        raise schedules.ConfigError(f"config: expected a dict of knob names to numbers or strings, "
                                    f"got {shown(config)}") from None


def _config_of(text: str) -> Any:
    return None if text == "" else json.loads(text)


def _fresh(outputs: tuple, inputs: tuple) -> tuple:
    """``outputs`` with any that shares storage with an input copied (a custom op's outputs must
    not alias its inputs; a backend may hand back an input unchanged, e.g. an empty scan's state)."""
    held = {x.untyped_storage().data_ptr() for x in inputs if isinstance(x, Tensor) and x.numel()}
    return tuple(o.clone() if o.numel() and o.untyped_storage().data_ptr() in held else o for o in outputs)


def _nothing(like: Tensor) -> Tensor:
    """The stand-in for an absent tensor output of a custom op (which cannot return None)."""
    return like.new_empty(0, dtype=torch.float32)


def _backward_kernel(backend: str, op: str) -> tuple[backends.Backend, str]:
    impl = backends.get(backend)
    kernel = backends.backward_kernel(impl, op)
    if kernel is None:
        raise RuntimeError(f"backend {backend!r} has no backward kernel of {op} ({op}_backward)")
    return impl, kernel


# ---------------------------------------------------------------- delta_scan

def _scan_values(q, k, v, g, beta, initial_state, check_keys: bool) -> None:
    validate.in_range("g", g, None, 0.0)
    validate.in_range("beta", beta, 0.0, 1.0)
    for name, x in (("q", q), ("k", k), ("v", v), ("initial_state", initial_state)):
        if x is not None:
            validate.finite(name, x)
    if check_keys:
        validate.stable_keys(k, beta)


def _run_scan(impl, q, k, v, g, beta, initial_state, scale, output_final_state, chunk_size, config, offsets=None):
    B, T, H, K = q.shape
    # A packed call runs the scan's packed form (its fused split; a kernel backend completes its
    # schedule as that form's, ``spec.packed_config``): a record tuned for the dense phases is
    # no schedule for it.
    def tuned():
        cfg = _tuned("delta_scan", impl.name, q.device, q.dtype, {"K": K, "V": v.shape[-1]}, T)
        fits = offsets is None or cfg is None or spec.fits_packed(kernels.spec("delta_scan"), cfg)
        return cfg if fits else None
    return _scheduled(
        lambda cfg: impl.run("delta_scan", q, k, v, g, beta, scale=float(scale), initial_state=initial_state,
                             output_final_state=bool(output_final_state), chunk_size=chunk_size, config=cfg,
                             **_packed(offsets)),
        config, tuned)


@torch.library.custom_op("hola::delta_scan", mutates_args=())
def _delta_scan_op(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, initial_state: Optional[Tensor],
                   scale: float, output_final_state: bool, chunk_size: int, backend: str, config: str,
                   check_keys: bool, offsets: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    _scan_values(q, k, v, g, beta, initial_state, check_keys)
    o, m, S = _run_scan(backends.get(backend), q, k, v, g, beta, initial_state, scale, output_final_state,
                        chunk_size, _config_of(config), _offsets_of(offsets))
    return _fresh((o, m, S if S is not None else _nothing(q)), (q, k, v, g, beta, initial_state))


@_delta_scan_op.register_fake
def _(q, k, v, g, beta, initial_state, scale, output_final_state, chunk_size, backend, config, check_keys, offsets):
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = len(offsets) - 1 if offsets else B
    S = q.new_empty((N, H, K, V), dtype=torch.float32) if output_final_state else _nothing(q)
    return v.new_empty((B, T, H, V)), q.new_empty((B, T, H), dtype=torch.float32), S


@torch.library.custom_op("hola::delta_scan_backward", mutates_args=())
def _delta_scan_backward_op(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                            initial_state: Optional[Tensor], do: Tensor, dfinal: Optional[Tensor], scale: float,
                            chunk_size: int, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    impl, kernel = _backward_kernel(backend, "delta_scan")
    B, T, H, K = q.shape
    V = v.shape[-1]
    # dfinal None (the final state was not used): the kernel starts from a zero gradient itself.
    grads = _scheduled(
        lambda cfg: impl.run(kernel, q, k, v, g, beta, do, dfinal, scale=float(scale), initial_state=initial_state,
                             chunk_size=chunk_size, config=cfg),
        None, lambda: _tuned(kernel, impl.name, q.device, q.dtype, {"K": K, "V": V}, T))
    *main, ds0 = grads
    outs = [d.to(x.dtype) for d, x in zip(main, (q, k, v, g, beta))]
    outs.append(ds0.to(initial_state.dtype) if initial_state is not None and ds0 is not None else _nothing(q))
    return _fresh(tuple(outs), (q, k, v, g, beta, initial_state, do, dfinal))


@_delta_scan_backward_op.register_fake
def _(q, k, v, g, beta, initial_state, do, dfinal, scale, chunk_size, backend):
    ds0 = torch.empty_like(initial_state) if initial_state is not None else _nothing(q)
    return tuple(torch.empty_like(x) for x in (q, k, v, g, beta)) + (ds0,)


def _scan_setup(ctx, inputs, output):
    q, k, v, g, beta, initial_state, scale, _, chunk_size, backend, _, _, _ = inputs
    ctx.save_for_backward(q, k, v, g, beta, initial_state)
    ctx.options = (scale, chunk_size, backend)
    ctx.mark_non_differentiable(output[1])          # m: selection uses the scores as numbers


def _scan_backward(ctx, do, dm, dfinal):
    q, k, v, g, beta, initial_state = ctx.saved_tensors
    if dfinal is not None and dfinal.numel() == 0:  # the stand-in state of a call without one
        dfinal = None
    grads = _delta_scan_backward_op(q, k, v, g, beta, initial_state, do, dfinal, *ctx.options)
    return grads[:5] + (grads[5] if initial_state is not None else None,) + (None,) * 7


_delta_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)


def delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
    config: Optional[dict] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
):
    """Gated delta-rule scan (docs/math.md section 1).

    q, k: [B, T, H, K]; v: [B, T, H, V]; g (log-decay, <= 0), beta (in [0, 1]): [B, T, H];
    initial_state: [B, H, K, V] or None. Returns (o [B, T, H, V] in v's dtype,
    m [B, T, H] float32 surprise scores, final_state [B, H, K, V] float32 or None). Through a
    DSL backend's backward kernel m carries no gradient (selection uses it as numbers).
    cu_seqlens: None, or int32/int64 offsets [N + 1] of N sequences packed along T with B = 1
    (``hola_dsl.varlen``); the states are then per sequence, [N, H, K, V].
    """
    dims = validate.same_dims({
        "q": validate.tensor("q", q, "BTHK"),
        "k": validate.tensor("k", k, "BTHK"),
        "v": validate.tensor("v", v, "BTHV"),
        "g": validate.tensor("g", g, "BTH"),
        "beta": validate.tensor("beta", beta, "BTH"),
    })
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got k {k.dtype}, v {v.dtype}")
    offsets = None if cu_seqlens is None else validate.cu_seqlens(cu_seqlens, dims["B"], dims["T"])
    if initial_state is not None:
        state_dims = validate.tensor("initial_state", initial_state, "BHKV")
        if offsets is not None:
            state_dims["B"] = _sequences("initial_state", state_dims["B"], offsets)
        validate.same_dims({"q, k, v": dims, "initial_state": state_dims})
    device = validate.same_device(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state)
    validate.positive_int("chunk_size", chunk_size, power_of_two=True)
    if scale is None:
        scale = dims["K"] ** -0.5
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale: expected a finite float or None, got {scale!r}")
    grad_of = backends.needs_grad(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state)
    packed = offsets is not None
    impl = _resolve(backend, device.type, grad_of, "delta_scan", q.dtype, packed)
    if _as_custom_op(impl, "delta_scan", grad_of, packed):
        if use_qk_l2norm:         # (NaN or inf in q or k stays NaN: the op's check still names them)
            q, k = l2norm(q), l2norm(k)
        # Dense before the op: its forward and its backward (which gets the saved inputs) would
        # each copy a strided view (a model's v is a slice of one projection) to the kernel layout.
        q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
        o, m, S = _delta_scan_op(q, k, v, g, beta, initial_state, float(scale), bool(output_final_state),
                                 int(chunk_size), impl.name, _config_arg(config), not use_qk_l2norm, offsets or [])
        return o, m, (S if output_final_state else None)
    if _check_values():
        _scan_values(q, k, v, g, beta, initial_state, False)
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    elif _check_values():
        validate.stable_keys(k, beta)
    return _run_scan(impl, q, k, v, g, beta, initial_state, scale, output_final_state, chunk_size, config, offsets)


# ---------------------------------------------------------------- cache_select

def _run_select(impl, scores, capacity, block_size, policy, config, offsets=None):
    return _scheduled(
        lambda cfg: impl.run("cache_select", scores, capacity=capacity, block_size=block_size, policy=policy,
                             config=cfg, **_packed(offsets)),
        config, lambda: _tuned("cache_select", impl.name, scores.device, scores.dtype,
                                   {"W": capacity, "C": block_size}, scores.shape[1]))


@torch.library.custom_op("hola::cache_select", mutates_args=())
def _cache_select_op(scores: Tensor, capacity: int, block_size: int, policy: str, backend: str,
                     config: str, offsets: list[int]) -> Tensor:
    if policy == "hola":
        validate.no_nan("scores", scores)
    idx = _run_select(backends.get(backend), scores, capacity, block_size, policy, _config_of(config),
                      _offsets_of(offsets))
    return _fresh((idx,), (scores,))[0]


@_cache_select_op.register_fake
def _(scores, capacity, block_size, policy, backend, config, offsets):
    B, T, H = scores.shape
    nb = varlen.block_offsets(offsets, block_size)[-1] if offsets else -(-T // block_size)
    return scores.new_empty((B, H, nb, capacity), dtype=torch.int64)


def cache_select(
    scores: torch.Tensor,
    *,
    capacity: int = 64,
    block_size: int = 256,
    policy: str = "hola",
    backend: str = "auto",
    config: Optional[dict] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Block-wise top-w cache selection (docs/math.md section 2).

    scores: [B, T, H] (ignored for policy "recency"). Returns idx [B, H, NB, capacity] int64 with
    NB = ceil(T / block_size); row n lists Cache_n best first (higher score, then later position),
    padded with -1. Not differentiable (the scores are used as numbers).
    cu_seqlens (offsets [N + 1], B = 1, ``hola_dsl.varlen``): blocks restart at each sequence;
    idx is [1, H, sum_i ceil(len_i / block_size), capacity], each sequence's rows in turn, its
    entries packed positions (a sequence's own position + cu_seqlens[i]).
    """
    sdims = validate.tensor("scores", scores, "BTH", dtypes=validate.FLOAT_DTYPES + (torch.float64,))
    offsets = None if cu_seqlens is None else validate.cu_seqlens(cu_seqlens, sdims["B"], sdims["T"])
    validate.positive_int("capacity", capacity)
    validate.positive_int("block_size", block_size)
    if policy == "lola":
        raise ValueError('policy: "lola" scores with keys, values and block-start states, not scores; '
                         'call hola_dsl.ops.lola_select(k, v, states, ...)')
    validate.policy(policy)
    impl = _resolve(backend, scores.device.type, None, "cache_select", scores.dtype)
    if _as_custom_op(impl, "cache_select", None):
        return _cache_select_op(scores.detach(), capacity, block_size, policy, impl.name, _config_arg(config),
                                offsets or [])
    if policy == "hola" and _check_values():
        validate.no_nan("scores", scores)
    return _run_select(impl, scores, capacity, block_size, policy, config, offsets)


# ---------------------------------------------------------------- cache_read

def _read_values(q, k, v, idx, gamma_q, gamma_k, sink, block_size: int, offsets=None) -> None:
    if offsets is None:
        validate.cache_index(idx, q.shape[1], block_size)
    else:
        validate.packed_cache_index(idx, offsets, block_size)
    for name, x in (("q", q), ("k", k), ("v", v), ("gamma_q", gamma_q), ("gamma_k", gamma_k), ("sink", sink)):
        validate.finite(name, x)


def _read_dims(q, v, idx, block_size: int) -> dict:
    return {"K": q.shape[-1], "V": v.shape[-1], "W": idx.shape[-1], "C": block_size}


def _run_read(impl, q, k, v, idx, gamma_q, gamma_k, sink, block_size, eps, config, offsets=None, lse=False):
    """o, or (o, lse) with ``lse`` (DSL backends: what the backward kernel reuses)."""
    return _scheduled(
        lambda cfg: impl.run("cache_read", q, k, v, idx, gamma_q, gamma_k, sink, block_size=block_size,
                             eps=float(eps), config=cfg, **_packed(offsets), **({"lse": True} if lse else {})),
        config, lambda: _tuned("cache_read", impl.name, q.device, q.dtype, _read_dims(q, v, idx, block_size),
                                   q.shape[1]))


@torch.library.custom_op("hola::cache_read", mutates_args=())
def _cache_read_op(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, gamma_q: Tensor, gamma_k: Tensor, sink: Tensor,
                   block_size: int, eps: float, backend: str, config: str, offsets: list[int]) -> tuple[Tensor, Tensor]:
    """(o, lse): the log-sum-exp [B, T, H] is what the backward kernel needs of the forward."""
    offsets = _offsets_of(offsets)
    _read_values(q, k, v, idx, gamma_q, gamma_k, sink, block_size, offsets)
    o, lse = _run_read(backends.get(backend), q, k, v, idx, gamma_q, gamma_k, sink, block_size, eps,
                       _config_of(config), offsets, lse=True)
    return _fresh((o, lse), (q, k, v, idx, gamma_q, gamma_k, sink))


@_cache_read_op.register_fake
def _(q, k, v, idx, gamma_q, gamma_k, sink, block_size, eps, backend, config, offsets):
    return v.new_empty((*q.shape[:3], v.shape[-1])), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("hola::cache_read_backward", mutates_args=())
def _cache_read_backward_op(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, gamma_q: Tensor, gamma_k: Tensor,
                            sink: Tensor, do: Tensor, o: Tensor, lse: Tensor, block_size: int, eps: float,
                            backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    impl, kernel = _backward_kernel(backend, "cache_read")
    grads = _scheduled(
        lambda cfg: impl.run(kernel, q, k, v, idx, gamma_q, gamma_k, sink, do, block_size=block_size,
                             eps=float(eps), config=cfg, o=o, lse=lse),
        None, lambda: _tuned(kernel, impl.name, q.device, q.dtype, _read_dims(q, v, idx, block_size), q.shape[1]))
    inputs = (q, k, v, gamma_q, gamma_k, sink)
    return _fresh(tuple(d.to(x.dtype) for d, x in zip(grads, inputs)), inputs + (idx, do, o, lse))


@_cache_read_backward_op.register_fake
def _(q, k, v, idx, gamma_q, gamma_k, sink, do, o, lse, block_size, eps, backend):
    return tuple(torch.empty_like(x) for x in (q, k, v, gamma_q, gamma_k, sink))


def _read_setup(ctx, inputs, output):
    q, k, v, idx, gamma_q, gamma_k, sink, block_size, eps, backend, _, offsets = inputs
    if offsets:     # never reached: packed calls that need a gradient do not take the custom op
        raise RuntimeError("hola::cache_read: no backward kernel for packed sequences (cu_seqlens)")
    ctx.save_for_backward(q, k, v, idx, gamma_q, gamma_k, sink, *output)
    ctx.mark_non_differentiable(output[1])          # lse: the backward kernel's input, not an API output
    ctx.options = (block_size, eps, backend)


def _read_backward(ctx, do, dlse):
    q, k, v, idx, gamma_q, gamma_k, sink, o, lse = ctx.saved_tensors
    dq, dk, dv, dgq, dgk, dsink = _cache_read_backward_op(q, k, v, idx, gamma_q, gamma_k, sink, do, o, lse,
                                                          *ctx.options)
    return dq, dk, dv, None, dgq, dgk, dsink, None, None, None, None, None


_cache_read_op.register_autograd(_read_backward, setup_context=_read_setup)


def lola_select(
    k: torch.Tensor,
    v: torch.Tensor,
    states: torch.Tensor,
    *,
    capacity: int = 64,
    block_size: int = 256,
    backend: str = "auto",
    config: Optional[dict] = None,
) -> torch.Tensor:
    """Cache selection of policy "lola" (docs/math.md section 2): LoLA's self-recall error.

    k: [B, T, H, K] (unit L2, as the scan sees it); v: [B, T, H, V]; states: [B, H, NB, K, V]
    with NB = ceil(T / block_size), row n the scan's state after the first n * block_size tokens
    (row 0 is not read; cast to float32). Cache_n = the ``capacity`` best of Cache_{n-1} and
    block n-1's tokens by sre_j = ||v_j - S^T k_j||, S = states[:, :, n]. Returns idx
    [B, H, NB, capacity] int64 as ``cache_select`` does: best first (higher sre, then later
    position), -1 padded; ``cache_read`` takes it unchanged.
    """
    dims = validate.same_dims({
        "k": validate.tensor("k", k, "BTHK"),
        "v": validate.tensor("v", v, "BTHV"),
        "states": validate.tensor("states", states, ("B", "H", "NB", "K", "V"),
                                  dtypes=validate.FLOAT_DTYPES + (torch.float64,)),
    })
    if v.dtype != k.dtype:
        raise TypeError(f"v: expected the dtype of k ({k.dtype}), got {v.dtype}")
    validate.positive_int("capacity", capacity)
    validate.positive_int("block_size", block_size)
    nb = -(-dims["T"] // block_size)
    if dims["NB"] != nb:
        raise ValueError(f"states: dim NB is {dims['NB']}, expected ceil(T / block_size) = "
                         f"ceil({dims['T']} / {block_size}) = {nb}")
    device = validate.same_device(k=k, v=v, states=states)
    for name, x in (("k", k), ("v", v), ("states", states)):
        validate.finite(name, x)
    states = states.float()
    impl = backends.resolve(backend, device.type, op="lola_select", dtype=k.dtype)
    return _scheduled(
        lambda cfg: impl.run("lola_select", k, v, states, capacity=capacity, block_size=block_size, config=cfg),
        config, lambda: config_for("lola_select", impl.name, device, k.dtype,
                                   {"K": dims["K"], "V": dims["V"], "W": capacity, "C": block_size}, dims["T"]))


def cache_read(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    gamma_q: torch.Tensor,
    gamma_k: torch.Tensor,
    sink: torch.Tensor,
    *,
    block_size: int = 256,
    eps: float = 1e-6,
    backend: str = "auto",
    config: Optional[dict] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Softmax read of the exact cache plus the causal block and a sink (docs/math.md section 3).

    q, k: [B, T, H, K]; v: [B, T, H, V]; idx: [B, H, NB, W] int64 from ``cache_select``;
    gamma_q, gamma_k: [K]; sink: [H] logits. Returns o_cache [B, T, H, V] in v's dtype (before
    the sigmoid gate). cu_seqlens: as ``cache_select``'s, whose packed idx this reads.
    """
    dims = validate.same_dims({
        "q": validate.tensor("q", q, "BTHK"),
        "k": validate.tensor("k", k, "BTHK"),
        "v": validate.tensor("v", v, "BTHV"),
        "idx": validate.tensor("idx", idx, ("B", "H", "NB", "W"), dtypes=(torch.int64,)),
        "gamma_q": validate.tensor("gamma_q", gamma_q, "K"),
        "gamma_k": validate.tensor("gamma_k", gamma_k, "K"),
        "sink": validate.tensor("sink", sink, "H"),
    })
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected the dtype of q ({q.dtype}), got k {k.dtype}, v {v.dtype}")
    validate.positive_int("block_size", block_size)
    offsets = None if cu_seqlens is None else validate.cu_seqlens(cu_seqlens, dims["B"], dims["T"])
    if offsets is None:
        nb, rule = -(-dims["T"] // block_size), f"ceil(T / block_size) = ceil({dims['T']} / {block_size})"
    else:
        nb, rule = varlen.block_offsets(offsets, block_size)[-1], "sum_i ceil(len_i / block_size) over cu_seqlens"
    if dims["NB"] != nb:
        raise ValueError(f"idx: dim NB is {dims['NB']}, expected {rule} = {nb}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps: expected a positive float, got {eps!r}")
    device = validate.same_device(q=q, k=k, v=v, idx=idx, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink)
    grad_of = backends.needs_grad(q=q, k=k, v=v, gamma_q=gamma_q, gamma_k=gamma_k, sink=sink)
    packed = offsets is not None
    impl = _resolve(backend, device.type, grad_of, "cache_read", q.dtype, packed)
    if _as_custom_op(impl, "cache_read", grad_of, packed):
        return _cache_read_op(q, k, v, idx, gamma_q, gamma_k, sink, int(block_size), float(eps), impl.name,
                              _config_arg(config), offsets or [])[0]
    if _check_values():
        _read_values(q, k, v, idx, gamma_q, gamma_k, sink, block_size, offsets)
    return _run_read(impl, q, k, v, idx, gamma_q, gamma_k, sink, block_size, eps, config, offsets)
