"""Block-wise selection and batched cache read (backend "reference") against the oracle."""

import pytest
import torch

from hola_dsl import ops
from hola_dsl.testing import Shape, read_inputs, rel_err, select_inputs
from hola_dsl.reference.oracle import naive_cache_read, naive_cache_select


@pytest.mark.parametrize("policy", ["hola", "recency"])
@pytest.mark.parametrize("T,W,C", [(1, 4, 16), (100, 8, 16), (257, 16, 64), (1000, 64, 256), (300, 200, 32)])
def test_select_matches_oracle_exactly(policy, T, W, C):
    scores = select_inputs(Shape(B=2, T=T, H=3), seed=T + W, ties=True)
    idx = ops.cache_select(scores, capacity=W, block_size=C, policy=policy, backend="reference")
    ref = naive_cache_select(scores, capacity=W, block_size=C, policy=policy)
    assert idx.dtype == torch.int64 and idx.shape == (2, 3, -(-T // C), W)
    assert torch.equal(idx, ref)


def test_select_ties_prefer_later_positions():
    scores = torch.zeros(1, 12, 1)
    scores[0, 2, 0] = 1.0
    idx = ops.cache_select(scores, capacity=3, block_size=4, policy="hola", backend="reference")
    assert idx[0, 0].tolist() == [[-1, -1, -1], [2, 3, 1], [2, 7, 6]]


def test_select_scores_are_numbers_in_any_float_dtype():
    scores = select_inputs(Shape(B=1, T=300, H=2), seed=1).to(torch.bfloat16)
    idx = ops.cache_select(scores, capacity=16, block_size=64, backend="reference")
    assert torch.equal(idx, naive_cache_select(scores, capacity=16, block_size=64))


@pytest.mark.parametrize("policy", ["hola", "recency"])
@pytest.mark.parametrize("T,W,C", [(1, 8, 64), (65, 8, 32), pytest.param(300, 16, 128, marks=pytest.mark.slow)])
def test_read_matches_oracle(policy, T, W, C):
    x = read_inputs(Shape(B=2, T=T, H=2, K=32, V=48, W=W, C=C), seed=T, policy=policy)
    o = ops.cache_read(**x, block_size=C, backend="reference")
    assert o.shape == (2, T, 2, 48)
    assert rel_err(o, naive_cache_read(**x, block_size=C)) <= 1e-5


def test_read_low_precision_inputs():
    x = read_inputs(Shape(B=1, T=200, H=2, K=32, V=32, W=16, C=64), torch.bfloat16, seed=4)
    o = ops.cache_read(**x, block_size=64, backend="reference")
    assert o.dtype == torch.bfloat16 and rel_err(o, naive_cache_read(**x, block_size=64)) <= 5e-3


def test_read_gradients_match_oracle():
    x = read_inputs(Shape(B=1, T=40, H=2, K=8, V=8, W=4, C=16), seed=9)
    names = ("q", "k", "v", "gamma_q", "gamma_k", "sink")
    x32 = {n: (t.clone().requires_grad_(True) if n in names else t) for n, t in x.items()}
    x64 = {n: (t.double().clone().requires_grad_(True) if n in names else t) for n, t in x.items()}
    w = torch.randn(1, 40, 2, 8)
    (ops.cache_read(**x32, block_size=16, backend="reference") * w).sum().backward()
    (naive_cache_read(**x64, block_size=16) * w.double()).sum().backward()
    for n in names:
        assert rel_err(x32[n].grad, x64[n].grad) <= 1e-4, n
