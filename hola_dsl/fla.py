"""A flash-linear-attention drop-in: ``chunk_gated_delta_rule`` and
``fused_recurrent_gated_delta_rule`` with fla's (0.6) names, argument order, defaults, layouts
and dtypes, computed by ``hola_dsl.ops.delta_scan`` on any of its backends.

    from hola_dsl.fla import chunk_gated_delta_rule     # instead of fla.ops.gated_delta_rule
    o, final_state = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0,
                                            output_final_state=True, cu_seqlens=cu)

Layouts as fla's: q, k [B, T, H, K]; v [B, T, HV, V]; g, beta [B, T, HV] (HV a multiple of H:
grouped value heads, value head i reads q/k head i // (HV / H)); initial_state and final_state
[N, HV, K, V] ([N, HV, V, K] with ``state_v_first``), N = B, or the number of sequences with
``cu_seqlens`` (B = 1). o [B, T, HV, V] in v's dtype, final_state float32.

Supported besides: ``use_qk_l2norm_in_kernel``, ``use_beta_sigmoid_in_kernel`` (beta =
sigmoid(beta)), ``use_gate_in_kernel`` with ``A_log``/``dt_bias`` (g = -exp(A_log) *
softplus(g + dt_bias)), ``chunk_size`` (16, 32 or 64, as fla), ``cu_seqlens_cpu`` (must equal
cu_seqlens), the deprecated ``transpose_state_layout``. Arguments fla accepts that this does not
support (``allow_neg_eigval``: beta beyond 1; ``chunk_indices``, ``cp_context``, ``gk``, ``gv``,
``head_first``, anything else in ``**kwargs``) raise, never pass silently. ``hola_backend`` (not
an fla name, so it cannot clash) picks the backend of ``hola_dsl.ops`` (default "auto").
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F

from hola_dsl import ops

FLA_CHUNK_SIZES = (16, 32, 64)


def _unsupported(name: str, value: Any, why: str) -> None:
    raise ValueError(f"{name}={value!r:.60} is not supported by hola_dsl.fla ({why})")


def _state_layout(state_v_first: bool, kwargs: dict) -> bool:
    """fla's ``transpose_state_layout`` alias of ``state_v_first`` (deprecated there too)."""
    if "transpose_state_layout" in kwargs:
        if state_v_first:
            raise ValueError("Cannot pass both `state_v_first` and the deprecated `transpose_state_layout`.")
        warnings.warn("`transpose_state_layout` is deprecated and renamed to `state_v_first`.",
                      DeprecationWarning, stacklevel=3)
        state_v_first = bool(kwargs.pop("transpose_state_layout"))
    return state_v_first


def _gate(g: torch.Tensor, A_log: Optional[torch.Tensor], dt_bias: Optional[torch.Tensor]) -> torch.Tensor:
    """fla's in-kernel GDN gate: -exp(A_log) * softplus(g + dt_bias), per value head, float32."""
    if A_log is None:
        raise ValueError("A_log must be provided when use_gate_in_kernel=True.")
    x = g.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    return -A_log.float().exp() * F.softplus(x)


def _run(q, k, v, g, beta, *, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
         use_beta_sigmoid_in_kernel, allow_neg_eigval, state_v_first, cu_seqlens, cu_seqlens_cpu=None,
         use_gate_in_kernel=False, A_log=None, dt_bias=None, chunk_size=64, hola_backend="auto"):
    """The shared body: fla's checks and conventions around one ``ops.delta_scan`` call."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"{name}: expected a tensor [B, T, heads, dim], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must have the same number of heads, but got q.shape[2]={q.shape[2]} "
                         f"and k.shape[2]={k.shape[2]}")
    H, HV = q.shape[2], v.shape[2]
    if HV % H != 0:
        raise ValueError(f"For GVA, num_v_heads (HV={HV}) must be evenly divisible by num_heads (H={H}), "
                         f"but got HV % H = {HV % H}")
    if allow_neg_eigval:
        _unsupported("allow_neg_eigval", allow_neg_eigval, "beta must stay in [0, 1]")
    if cu_seqlens_cpu is not None:
        if cu_seqlens is None or not torch.equal(cu_seqlens_cpu.cpu().long(), cu_seqlens.cpu().long()):
            raise ValueError("cu_seqlens_cpu: expected a host copy of cu_seqlens")
    if use_gate_in_kernel:
        g = _gate(g, A_log, dt_bias)
    if use_beta_sigmoid_in_kernel:
        beta = torch.sigmoid(beta.float())
    if HV != H:     # value head i reads q/k head i // (HV / H), as fla's kernels do
        q, k = (x.repeat_interleave(HV // H, dim=2) for x in (q, k))
    if initial_state is not None and state_v_first:
        initial_state = initial_state.transpose(-1, -2)
    o, _, final = ops.delta_scan(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                 output_final_state=output_final_state, use_qk_l2norm=use_qk_l2norm_in_kernel,
                                 chunk_size=chunk_size, backend=hola_backend, cu_seqlens=cu_seqlens)
    if final is not None and state_v_first:
        final = final.transpose(-1, -2).contiguous()
    return o, final


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
    chunk_indices: Optional[torch.LongTensor] = None,
    cp_context: Any = None,
    *,
    hola_backend: str = "auto",
    **kwargs,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """fla's ``chunk_gated_delta_rule`` (shapes in the module docstring): returns (o [B, T, HV, V]
    in v's dtype, final_state [N, HV, K, V] float32 or None)."""
    state_v_first = _state_layout(state_v_first, kwargs)
    if "head_first" in kwargs:
        raise DeprecationWarning("head_first has been removed. Inputs must be in `[B, T, H, ...]` format.")
    if chunk_indices is not None:
        _unsupported("chunk_indices", "<tensor>", "chunks are indexed from cu_seqlens")
    if cp_context is not None:
        _unsupported("cp_context", type(cp_context).__name__, "no context parallelism")
    chunk_size = kwargs.pop("chunk_size", 64)
    if chunk_size not in FLA_CHUNK_SIZES:
        raise ValueError(f"`chunk_size` must be 16, 32, or 64 for Gated Delta Rule, got {chunk_size}.")
    gate = {n: kwargs.pop(n) for n in ("use_gate_in_kernel", "A_log", "dt_bias") if n in kwargs}
    if kwargs:
        raise TypeError(f"chunk_gated_delta_rule: unsupported keyword arguments {sorted(kwargs)} "
                        f"(hola_dsl.fla never ignores an argument)")
    return _run(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel, allow_neg_eigval=allow_neg_eigval,
                state_v_first=state_v_first, cu_seqlens=cu_seqlens, cu_seqlens_cpu=cu_seqlens_cpu,
                chunk_size=chunk_size, hola_backend=hola_backend, **gate)


def fused_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    gk: Optional[torch.Tensor] = None,
    gv: Optional[torch.Tensor] = None,
    beta: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    A_log: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    *,
    hola_backend: str = "auto",
    **kwargs,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """fla's ``fused_recurrent_gated_delta_rule``: g None means no decay, beta None means 1; the
    same result as the chunked form (the scan agrees with the recurrence, docs/math.md section 1)."""
    state_v_first = _state_layout(state_v_first, kwargs)
    if kwargs:
        raise TypeError(f"fused_recurrent_gated_delta_rule: unsupported keyword arguments {sorted(kwargs)} "
                        f"(hola_dsl.fla never ignores an argument)")
    for name, x in (("gk", gk), ("gv", gv)):
        if x is not None:
            _unsupported(name, "<tensor>", "only the scalar per-head gate g")
    if cu_seqlens is not None and q.shape[0] != 1:
        raise ValueError(f"The batch size is expected to be 1 rather than {q.shape[0]} when using `cu_seqlens`."
                         f"Please flatten variable-length inputs before processing.")
    if use_gate_in_kernel and g is None:
        raise ValueError("`g` (raw pre-activation) must be provided when `use_gate_in_kernel=True`.")
    shape = (*v.shape[:3],)
    if g is None:
        g = torch.zeros(shape, dtype=torch.float32, device=v.device)
    if beta is None:
        beta = torch.ones(shape, dtype=q.dtype, device=q.device)
    return _run(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel, allow_neg_eigval=allow_neg_eigval,
                state_v_first=state_v_first, cu_seqlens=cu_seqlens, use_gate_in_kernel=use_gate_in_kernel,
                A_log=A_log, dt_bias=dt_bias, hola_backend=hola_backend)
