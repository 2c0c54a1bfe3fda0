"""The DSL's eager interpreter (backend "eager") against the float64 oracle (docs/tolerances.md).

Shapes follow the foundation issue: T not a multiple of the chunk or the cache block, K != V,
several heads and batches. Outputs are poisoned (NaN, or -2 for indices) by the kernels' plans (hola_dsl.spec)
before the kernel runs, and rel_err is inf on NaN, so an unwritten element fails.
"""

import math

import pytest
import torch

from hola_dsl import backends, kernels, ops, spec
from hola_dsl.testing import SCAN_CASES, TOLERANCE, Shape, run_check, scan_inputs

SHAPES = [Shape(B=2, T=1, H=2, K=32, V=48, W=8, C=64), Shape(B=2, T=65, H=2, K=32, V=48, W=8, C=64),
          pytest.param(Shape(B=1, T=300, H=3, K=32, V=48, W=16, C=128), marks=pytest.mark.slow)]


@pytest.mark.parametrize("case", SCAN_CASES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"T{s.T}")
def test_delta_scan_matches_oracle(shape, case):
    r = run_check("delta_scan", "eager", shape, case=case, seed=3)
    assert r.ok, r.errors


def test_delta_scan_v_split_and_odd_dims():
    """V split over several programs (m finished from partial sums), K and V not powers of two."""
    shape = Shape(B=1, T=70, H=2, K=24, V=40)
    r = run_check("delta_scan", "eager", shape, seed=5, chunk_size=32, config={"BV": 16})
    assert r.ok, r.errors


def test_delta_scan_without_state_arguments():
    x = scan_inputs(Shape(B=1, T=33, H=1), seed=1, initial_state=False)
    o, m, s = ops.delta_scan(**x, backend="eager")
    ro, rm, _ = ops.delta_scan(**x, backend="reference")
    assert s is None
    assert torch.allclose(o, ro, atol=1e-5) and torch.allclose(m, rm, atol=1e-5)


@pytest.mark.parametrize("policy", ["hola", "recency"])
@pytest.mark.parametrize("shape", SHAPES + [Shape(B=1, T=301, H=2, W=10, C=100)], ids=lambda s: f"T{s.T}C{s.C}")
def test_cache_select_exact(shape, policy):
    r = run_check("cache_select", "eager", shape, policy=policy, seed=7)
    assert r.errors["idx"] == 0


def test_cache_select_float64_ties():
    """Scores that differ only in float64 must not be merged into ties."""
    s = torch.full((1, 40, 1), 0.5, dtype=torch.float64)
    s[0, ::3, 0] += 1e-12
    from hola_dsl.reference.oracle import naive_cache_select
    idx = ops.cache_select(s, capacity=5, block_size=8, backend="eager")
    assert torch.equal(idx, naive_cache_select(s, capacity=5, block_size=8))


@pytest.mark.parametrize("policy", ["hola", "recency"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"T{s.T}")
def test_cache_read_matches_oracle(shape, policy):
    r = run_check("cache_read", "eager", shape, policy=policy, seed=11)
    assert r.ok, r.errors


def test_unwritten_output_fails_the_check():
    """The poison is real: a runner that writes nothing leaves NaN, which never passes."""
    x = scan_inputs(Shape(B=1, T=10, H=1), seed=0)
    o, m, s = spec.launch(kernels.spec("delta_scan"), lambda kernel, args: None, {"BV": 64},
                          (x["q"], x["k"], x["v"], x["g"], x["beta"]),
                          dict(scale=1.0, initial_state=x["initial_state"], output_final_state=True, chunk_size=16))
    assert torch.isnan(o).all() and torch.isnan(s).all()
    from hola_dsl.testing import rel_err
    assert rel_err(o, torch.zeros_like(o)) == math.inf


@pytest.mark.parametrize("layout", ["queries", "keys"])
def test_cache_read_streams_the_cache_and_writes_lse(layout):
    """W = 40 in steps of BKV = 16 (two full steps, a partial one, a masked padding step), either
    logits layout; the optional lse against the float64 softmax's log-denominator."""
    from hola_dsl.testing import read_inputs, read_lse, rel_err
    from hola_dsl.reference import oracle
    shape = Shape(B=1, T=70, H=2, K=32, V=48, W=40, C=32)
    x = read_inputs(shape, seed=5)
    o, lse = backends.get("eager").run("cache_read", *x.values(), block_size=shape.C, eps=1e-6,
                                       config={"BQ": 16, "BKV": 16, "layout": layout}, lse=True)
    assert lse.shape == (1, 70, 2) and lse.dtype == torch.float32
    assert rel_err(o, oracle.naive_cache_read(**x, block_size=shape.C)) <= 1e-5
    assert rel_err(lse, read_lse(**x, block_size=shape.C)) <= 1e-5


@pytest.mark.parametrize("dtype,case", [("bfloat16", "random"), ("bfloat16", "huge_keys"), ("float16", "random")])
def test_cache_read_low_precision_operands_within_tolerance(dtype, case):
    """bf16/fp16 inputs: the dots take operands of that dtype (queries and probabilities rounded
    to it), as on GPUs; the result stays within docs/tolerances.md's low-precision row of the float64 oracle,
    bf16 keys at 1e30 too (the queries' 2^-16 keeps the float32 dot finite)."""
    from hola_dsl.testing import read_inputs, rel_err
    from hola_dsl.reference import oracle
    shape = Shape(B=1, T=150, H=1, K=128, V=128, W=64, C=64)
    x = read_inputs(shape, getattr(torch, dtype), seed=4)
    if case == "huge_keys":
        x["k"] = (x["k"].float() * 1e30).to(torch.bfloat16)
    o = ops.cache_read(**x, block_size=shape.C, backend="eager", config={"BQ": 64, "BKV": 32})
    assert o.dtype == getattr(torch, dtype)
    assert rel_err(o, oracle.naive_cache_read(**x, block_size=shape.C)) <= 5e-3


def test_cache_read_lse_flag_must_be_a_bool():
    from hola_dsl.testing import read_inputs
    x = read_inputs(Shape(B=1, T=4, H=1, K=16, V=16, W=4, C=4), seed=1)
    with pytest.raises(TypeError, match="lse: expected a bool, got 1"):
        backends.get("eager").run("cache_read", *x.values(), block_size=4, eps=1e-6, lse=1)
