"""The mixer's torch glue as autograd Functions with hand-written backwards.

Each of these is a few elementwise passes and one reduction over the last dim. Left to
autograd they cost a saved tensor and a kernel launch per primitive op, forward and backward
(and ``F.conv1d``'s depthwise backward on a CPU is several times the forward); fused, the
backward is the closed form below. Results equal the plain formulas within float32 rounding
(tests/test_mixer_glue.py compares them with float64). First derivatives only: nothing here
is checked for double backward (no caller takes one).
"""

from __future__ import annotations

from typing import Optional

import torch


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for the 16-bit types (their sums accumulate in float32), else ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


class _DepthwiseCausalConv(torch.autograd.Function):
    """y[b, t, d] = sum_j w[d, j] xx[b, t + j, d]: S shifted multiply-adds, forward and back."""

    @staticmethod
    def forward(ctx, xx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        S = weight.shape[1]
        T = xx.shape[1] - (S - 1)
        acc = _compute_dtype(xx.dtype)
        # wt [S, D]: one contiguous row per tap; a strided row of weight [D, S] as the broadcast
        # operand makes every pass several times slower.
        xa, wt = xx.to(acc), weight.t().to(acc).contiguous()
        y = xa[:, 0:T] * wt[0]
        for j in range(1, S):
            y.addcmul_(xa[:, j:j + T], wt[j])
        ctx.save_for_backward(xa, wt)
        ctx.dtypes = (xx.dtype, weight.dtype)
        return y.to(xx.dtype)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        xa, wt = ctx.saved_tensors
        S, T = wt.shape[0], dy.shape[1]
        dy = dy.to(xa.dtype)
        dxx = dwt = None
        if ctx.needs_input_grad[0]:
            dxx = xa.new_zeros(xa.shape)
            for j in range(S):
                dxx[:, j:j + T].addcmul_(dy, wt[j])
            dxx = dxx.to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            dwt = torch.stack([(dy * xa[:, j:j + T]).sum((0, 1)) for j in range(S)])
            dwt = dwt.t().to(ctx.dtypes[1])
        return dxx, dwt


def depthwise_causal_conv(xx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The depthwise convolution of ``xx`` with ``weight``, valid windows only.

    xx: [B, T + S - 1, D] (the S - 1 inputs before the first output in front); weight: [D, S],
    tap S - 1 on the newest input. Returns y [B, T, D] in xx's dtype, y[:, t] =
    sum_j weight[:, j] * xx[:, t + j] (``F.conv1d`` with groups=D on the transposed input).
    """
    if xx.dim() != 3 or weight.dim() != 2 or weight.shape[0] != xx.shape[2] or xx.shape[1] < weight.shape[1] - 1:
        raise ValueError(f"xx, weight: expected [B, T + S - 1, D] and [D, S], got {tuple(xx.shape)} and "
                         f"{tuple(weight.shape)}")
    return _DepthwiseCausalConv.apply(xx, weight)


class _RMSNorm(torch.autograd.Function):
    """xhat = x r, r = (mean(x^2) + eps)^(-1/2); y = xhat * weight.
    dx = r (g - xhat mean(xhat g)) with g = dy * weight; dweight = sum(dy xhat)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
        # ||x||^2 / n: one fused reduction, no x * x temporary (it overflows where x * x does)
        r = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1] + eps)
        xhat = x * r
        ctx.save_for_backward(xhat, r, weight)
        return xhat if weight is None else xhat * weight

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        xhat, r, weight = ctx.saved_tensors
        dx = dw = None
        g = dy if weight is None else dy * weight
        if ctx.needs_input_grad[0]:
            dot = torch.linalg.vecdot(xhat, g.to(xhat.dtype), dim=-1).unsqueeze(-1) / xhat.shape[-1]
            dx = torch.addcmul(g, xhat, dot, value=-1).mul_(r).to(xhat.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            dw = (dy * xhat).sum_to_size(weight.shape).to(weight.dtype)
        return dx, dw, None


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dim, times ``weight`` when given (broadcast
    against x, e.g. [x.shape[-1]]). Computed in x's dtype, as written (no rescaling)."""
    return _RMSNorm.apply(x, weight, eps)


class _L2Norm(torch.autograd.Function):
    """y = x r, r = (sum(x^2) + eps)^(-1/2), in float32; dx = r (dy - y sum(y dy)).

    The sum of squares is taken in float64, where no float32 square overflows or underflows,
    and r is applied as twice h = sqrt(r): r ranges over [~1e-39, 1e3] and would be subnormal
    in float32 for rows near float32's largest values, h (over [~3e-20, 32]) never is."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.float()
        ss = torch.linalg.vector_norm(xf, dim=-1, keepdim=True, dtype=torch.float64).square()
        h = (ss + eps).pow(-0.25).float()
        y = xf * h * h
        ctx.save_for_backward(y, h)
        ctx.dtype = x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        y, h = ctx.saved_tensors
        dy = dy.float()
        dot = (y * dy).sum(-1, keepdim=True)
        return ((dy - y * dot) * h * h).to(ctx.dtype), None


def l2norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, computed in float32 without overflow or
    underflow for any float32 entries, returned in x's dtype: ``hola_dsl.ops.l2norm``'s
    result (within float32 rounding) with a fused backward. x: [..., K]."""
    if x.shape[-1] == 0:
        return x
    return _L2Norm.apply(x, eps)
