"""The mixer's fused glue (model.fused): each Function's forward and hand-written backward equal
the plain torch formula it replaces, evaluated with autograd in float64, within float32
rounding; the float64 Functions pass gradcheck; l2norm keeps ops.l2norm's range."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hola_dsl import ops
from hola_dsl.testing import rel_err
from model import fused

TOL = 2e-6   # a few float32 roundings, relative (docs/tolerances.md's 1e-5 is for whole kernels)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grads(f, inputs: list[torch.Tensor], dy: torch.Tensor) -> tuple[torch.Tensor, list]:
    """f(*inputs) and the gradients of <f(*inputs), dy> with respect to each input."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    y = f(*leaves)
    return y.detach(), list(torch.autograd.grad(y, leaves, dy.to(y.dtype)))


def _matches_float64(new, old, inputs: list[torch.Tensor], dy: torch.Tensor) -> None:
    """new(*float32 inputs) and its gradients are within TOL of old(*float64 inputs)'s."""
    y, gs = _grads(new, inputs, dy)
    ry, rgs = _grads(old, [x.double() for x in inputs], dy.double())
    assert y.dtype == inputs[0].dtype
    assert rel_err(y, ry) <= TOL
    for g, rg, x in zip(gs, rgs, inputs):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert rel_err(g, rg) <= TOL


# ---------------------------------------------------------------- depthwise causal convolution

def _conv1d(xx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What model.mixer computed before: F.conv1d with groups = D."""
    return F.conv1d(xx.transpose(1, 2), w[:, None, :], groups=w.shape[0]).transpose(1, 2)


@pytest.mark.parametrize("B,T,D,S", [(2, 9, 6, 4), (3, 1, 5, 4), (1, 7, 3, 1), (2, 5, 4, 2)])
def test_conv_matches_conv1d(B, T, D, S):
    gen = _gen(B * T + S)
    xx, w = torch.randn(B, T + S - 1, D, generator=gen), torch.randn(D, S, generator=gen)
    _matches_float64(fused.depthwise_causal_conv, _conv1d, [xx, w], torch.randn(B, T, D, generator=gen))


def test_conv_gradcheck_float64():
    gen = _gen(1)
    xx = torch.randn(2, 8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused.depthwise_causal_conv, (xx, w))


def test_conv_keeps_16bit_dtype_and_rejects_bad_shapes():
    gen = _gen(2)
    xx, w = torch.randn(2, 8, 3, generator=gen), torch.randn(3, 4, generator=gen)
    y = fused.depthwise_causal_conv(xx.bfloat16(), w.bfloat16())
    assert y.dtype == torch.bfloat16
    assert rel_err(y, _conv1d(xx.bfloat16().double(), w.bfloat16().double())) <= 5e-3
    with pytest.raises(ValueError, match="xx, weight"):
        fused.depthwise_causal_conv(xx, w[:2])


# ---------------------------------------------------------------- norms

def _old_rms(x, weight=None, eps=1e-6):
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_matches_plain_formula(with_weight):
    gen = _gen(3)
    x = torch.randn(2, 5, 3, 16, generator=gen) * torch.logspace(-4, 2, 3)[:, None]   # rows near eps too
    dy = torch.randn(x.shape, generator=gen)
    if with_weight:
        w = torch.randn(16, generator=gen)
        _matches_float64(lambda a, b: fused.rms_norm(a, b, 1e-6), _old_rms, [x, w], dy)
    else:
        _matches_float64(lambda a: fused.rms_norm(a, None, 1e-6), _old_rms, [x], dy)


def test_rms_norm_gradcheck_float64():
    gen = _gen(4)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fused.rms_norm(a, b, 1e-3), (x, w))


def _old_l2(x, eps=ops.L2NORM_EPS):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def test_l2norm_matches_plain_formula_and_ops():
    gen = _gen(5)
    x = torch.randn(2, 7, 2, 16, generator=gen) * torch.logspace(-5, 3, 7)[:, None, None]
    dy = torch.randn(x.shape, generator=gen)
    _matches_float64(lambda a: fused.l2norm(a, ops.L2NORM_EPS), _old_l2, [x], dy)
    assert rel_err(fused.l2norm(x, ops.L2NORM_EPS), ops.l2norm(x)) <= TOL
    assert fused.l2norm(x.bfloat16(), ops.L2NORM_EPS).dtype == torch.bfloat16


def test_l2norm_over_float32_range():
    """Rows whose squares overflow or underflow float32 normalise as ops.l2norm's do; the
    gradient is the float64 formula's."""
    rows = torch.tensor([[3e38, -1e38, 2.0, 0.0], [1e25, 1e24, -3e24, 7.0], [1e-30, -4e-31, 0.0, 2e-45],
                         [0.0, 0.0, 0.0, 0.0], [1e-3, 2e-3, -1e-3, 5e-4]])
    y = fused.l2norm(rows, ops.L2NORM_EPS)
    assert torch.isfinite(y).all() and rel_err(y, ops.l2norm(rows)) <= TOL
    assert y[3].eq(0).all()
    dy = torch.randn(rows.shape, generator=_gen(6))
    _, (g,) = _grads(lambda a: fused.l2norm(a, ops.L2NORM_EPS), [rows], dy)
    _, (rg,) = _grads(_old_l2, [rows.double()], dy.double())
    for i in range(len(rows)):   # row by row: the gradients span 60 decades
        assert rel_err(g[i], rg[i]) <= TOL, i


# ---------------------------------------------------------------- the mixer through them

def test_mixer_glue_matches_float64_old_path():
    """_features and _output of a small mixer, new in float32 against the old formulas in
    float64 (F.conv1d, ops.l2norm's formula, plain RMSNorm): outputs and parameter gradients."""
    from model import mixer as mx
    from model.config import HOLAConfig
    torch.manual_seed(0)
    m = mx.HOLAMixer(HOLAConfig(d_model=16, n_layers=1, n_heads=2, head_k_dim=8, head_v_dim=8,
                                cache_capacity=4, cache_block=8, chunk_size=8, vocab_size=32))
    x = torch.randn(2, 11, 16, generator=_gen(7))

    def glue(mod, xin, old: bool):
        mod.zero_grad()
        if old:
            xx = torch.cat([mod._tail0(2, xin.device, xin.dtype), mod.qkv_proj(xin)], 1)
            q, k, v = F.silu(_conv1d(xx, mod.conv_weight)).split(mod.dims, -1)
            q, k = (_old_l2(t.reshape(2, 11, 2, 8)) for t in (q, k))
            gate = F.silu(mod.gate_proj(xin)).reshape(2, 11, 2, 8)
            y = mod.o_proj((_old_rms(v.reshape(2, 11, 2, 8) + q + k, mod.o_norm_weight) * gate).reshape(2, 11, -1))
        else:
            q, k, v, *_ = mod._features(xin, mod._tail0(2, xin.device, xin.dtype))
            y = mod._output(xin, v + q + k)
        y.square().sum().backward()
        return y.detach(), {n: p.grad.clone() for n, p in mod.named_parameters() if p.grad is not None}

    y, grads = glue(m, x, old=False)
    ry, rgrads = glue(m.double(), x.double(), old=True)
    assert rel_err(y, ry) <= TOL
    assert grads.keys() == rgrads.keys() and "conv_weight" in grads
    for name in grads:
        assert rel_err(grads[name], rgrads[name]) <= 1e-5, name


def test_row_scale_is_the_inf_norm_bit_for_bit():
    """hola_dsl.norms' row scale (abs + amax) equals linalg.vector_norm(x, inf), which it
    replaced for speed, on every kind of row: the kernels' finish steps see the same numbers."""
    from hola_dsl import norms
    inf, nan = float("inf"), float("nan")
    x = torch.randn(6, 3, 9, generator=_gen(8)) * 1e3
    x[0, 0] = torch.tensor([0.0, -0.0, 0, 0, 0, 0, 0, 0, 0])
    x[1, 1, 4], x[2, 2, 0], x[3, 0, 8], x[4, 1, :] = -inf, nan, 3e38, 1e-45
    for floor in (0.0, 1e-3):
        want = torch.linalg.vector_norm(x, inf, dim=-1, keepdim=True)
        if floor > 0:
            want = want.clamp(min=floor)
        want = torch.where(want > 0, want, torch.ones_like(want))
        assert torch.equal(norms._row_scale(x, floor).isnan(), want.isnan())
        assert torch.equal(norms._row_scale(x, floor).nan_to_num(), want.nan_to_num())
