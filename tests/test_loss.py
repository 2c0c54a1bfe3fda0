"""The fused linear + cross entropy (model/loss.py) against float64 F.cross_entropy(h @ W.T):
loss and gradients of h and W, chunks that do not divide the rows, ignored targets, one row,
huge logits, bfloat16; and the LM's training and evaluation losses through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hola_dsl.testing import TOLERANCE, rel_err
from model.config import HOLAConfig
from model.lm import HOLALM
from model.loss import IGNORE_INDEX, linear_cross_entropy
from model.train import rows_loss, scored_targets


def _inputs(N, D, V, *, seed=0, h_scale=1.0, dtype=torch.float32, ignored=0):
    gen = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, D, generator=gen) * h_scale).to(dtype)
    W = (torch.randn(V, D, generator=gen) * D ** -0.5).to(dtype)
    y = torch.randint(0, V, (N,), generator=gen)
    if ignored:
        y[torch.randperm(N, generator=gen)[:ignored]] = IGNORE_INDEX
    return h, W, y


def _oracle(h, W, y, reduction="mean"):
    """float64 loss, dh, dW of F.cross_entropy(h @ W.T)."""
    h64, W64 = h.double().requires_grad_(), W.double().requires_grad_()
    loss = F.cross_entropy(h64 @ W64.T, y, ignore_index=IGNORE_INDEX, reduction=reduction)
    return (loss.detach(), *torch.autograd.grad(loss, (h64, W64)))


def _fused(h, W, y, **kw):
    h, W = h.clone().requires_grad_(), W.clone().requires_grad_()
    loss = linear_cross_entropy(h, W, y, **kw)
    return (loss.detach(), *torch.autograd.grad(loss, (h, W)))


def _assert_close(got, want, tol):
    for name, g, w in zip(("loss", "dh", "dW"), got, want):
        assert g.dtype == (torch.float32 if name == "loss" else g.dtype)
        err = rel_err(g, w)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("N, chunk_rows, ignored, reduction", [
    (37, 8, 0, "mean"),        # 8 does not divide 37: a short last chunk
    (37, 5, 9, "mean"),        # ignored targets spread over the chunks
    (37, 64, 9, "sum"),        # one chunk larger than the rows
    (1, 4, 0, "mean"),         # one row
])
def test_matches_float64_cross_entropy(N, chunk_rows, ignored, reduction):
    h, W, y = _inputs(N, 24, 50, seed=N + ignored, ignored=ignored)
    got = _fused(h, W, y, chunk_rows=chunk_rows, reduction=reduction)
    _assert_close(got, _oracle(h, W, y, reduction), TOLERANCE[torch.float32])


def test_huge_logits_do_not_overflow():
    # logits of size ~1e4: exp overflows float32 without the max subtracted.
    h, W, y = _inputs(20, 16, 40, seed=3, h_scale=3e3)
    got = _fused(h, W, y, chunk_rows=7)
    want = _oracle(h, W, y)
    assert want[0] > 1e3
    _assert_close(got, want, TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    h, W, y = _inputs(33, 32, 64, seed=5, dtype=dtype, ignored=4)
    loss, dh, dW = _fused(h, W, y, chunk_rows=8)
    assert dh.dtype == dW.dtype == dtype and loss.dtype == torch.float32
    _assert_close((loss, dh, dW), _oracle(h, W, y), TOLERANCE[dtype])


def test_all_targets_ignored_is_zero_loss_and_zero_gradients():
    h, W, y = _inputs(9, 8, 10)
    y[:] = IGNORE_INDEX
    for reduction in ("mean", "sum"):
        loss, dh, dW = _fused(h, W, y, chunk_rows=4, reduction=reduction)
        assert loss.item() == 0 and not dh.any() and not dW.any()


def test_scaled_loss_scales_gradients_and_no_grad_gives_the_same_loss():
    h, W, y = _inputs(12, 8, 30, seed=7, ignored=2)
    hg, Wg = h.clone().requires_grad_(), W.clone().requires_grad_()
    loss = linear_cross_entropy(hg, Wg, y, chunk_rows=5)
    (3 * loss).backward()
    _, dh, dW = _oracle(h, W, y)
    assert rel_err(hg.grad, 3 * dh) <= 1e-5 and rel_err(Wg.grad, 3 * dW) <= 1e-5
    with torch.no_grad():
        assert torch.equal(linear_cross_entropy(hg, Wg, y, chunk_rows=5), loss.detach())
    # Only h needs a gradient: W's is not computed, h's is the same.
    loss_h = linear_cross_entropy(hg, W, y, chunk_rows=5)
    assert rel_err(torch.autograd.grad(loss_h, hg)[0], dh) <= 1e-5


def test_float64_softmax_for_evaluation():
    h, W, y = _inputs(30, 16, 40, seed=2, ignored=3)
    with torch.no_grad():
        got = linear_cross_entropy(h, W, y, chunk_rows=30, reduction="sum", softmax_dtype=torch.float64)
        want = F.cross_entropy((h @ W.T).double(), y, ignore_index=IGNORE_INDEX, reduction="sum")
    assert got.dtype == torch.float64 and abs(got.item() - want.item()) <= 1e-9 * abs(want.item())


@pytest.mark.parametrize("kw, words", [
    (dict(h=torch.zeros(4, 8, dtype=torch.int64)), ["h", "float32"]),
    (dict(weight=torch.zeros(10, 7)), ["weight", "[vocab, 8]"]),
    (dict(weight=torch.zeros(10, 8, dtype=torch.float64)), ["weight", "dtype"]),
    (dict(targets=torch.zeros(5, dtype=torch.int64)), ["targets", "[4]"]),
    (dict(targets=torch.zeros(4)), ["targets", "integer"]),
    (dict(targets=torch.tensor([0, 1, 10, 2])), ["targets", "[0, 10)", "got 10"]),
    (dict(targets=torch.tensor([0, 1, -1, 2])), ["targets", "got -1"]),
    (dict(chunk_rows=0), ["chunk_rows", "got 0"]),
    (dict(reduction="none"), ["reduction", "'none'"]),
    (dict(softmax_dtype=torch.float16), ["softmax_dtype"]),
])
def test_bad_arguments_are_named(kw, words):
    args = dict(h=torch.zeros(4, 8), weight=torch.zeros(10, 8), targets=torch.zeros(4, dtype=torch.int64))
    args.update(kw)
    with pytest.raises(ValueError) as err:
        linear_cross_entropy(args.pop("h"), args.pop("weight"), args.pop("targets"), **args)
    assert str(err.value).startswith(words[0] + ":") and all(w in str(err.value) for w in words), str(err.value)


def _tiny_lm() -> HOLALM:
    torch.manual_seed(0)
    return HOLALM(HOLAConfig(vocab_size=48, d_model=16, n_layers=1, n_heads=2, head_k_dim=8, head_v_dim=8,
                             cache_capacity=4, cache_block=16, chunk_size=16, variant="hola", backend="reference"))


def test_training_loss_is_the_masked_cross_entropy_of_the_logits():
    """rows_loss (what `hola train` steps on) gives the loss and the parameter gradients of the
    masked mean cross entropy of the model's logits, scaled for DDP's averaging."""
    lm = _tiny_lm()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 48, (2, 20), generator=gen), torch.randint(0, 48, (2, 20), generator=gen)
    mask = torch.rand(2, 20, generator=gen) < 0.6
    params = list(lm.parameters())
    logits = lm(x)
    old = F.cross_entropy(logits.reshape(-1, 48), scored_targets(y, mask).reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="sum") * 2 / 30   # world 2, 30 scored in the global batch
    new = rows_loss(lm, x, y, mask, scored=30, world=2)
    assert abs(new.item() - old.item()) <= 1e-5 * abs(old.item())
    for a, b in zip(torch.autograd.grad(new, params), torch.autograd.grad(old, params)):
        assert rel_err(a, b) <= 1e-5
    assert lm(x).shape == (2, 20, 48)            # without targets: the logits, for generation
    with pytest.raises(ValueError, match="targets: expected token ids shaped like input_ids"):
        lm(x, targets=y[:, :5])
