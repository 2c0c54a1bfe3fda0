"""Inputs at the edges of float32's range (docs/math.md sections 1 and 3): the surprise score m, the
cache read's RMSNorm and the q/k L2 norm are scaled norms, so entries of 1e19 do not overflow
their squares and entries of 1e-20 do not underflow them, on every backend."""

from __future__ import annotations

import pytest
import torch

from hola_dsl import backends, ops
from hola_dsl.testing import TOLERANCE, Shape, read_inputs, rel_err, scan_inputs
from hola_dsl.reference import oracle

TOL = TOLERANCE[torch.float32]
BACKENDS = [b for b in ("reference", "eager", "tilelang", "triton") if backends.unavailable_reason(b) is None]
DSL = {"eager", "tilelang", "triton"}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


def _scan_config(backend: str, bv: int):
    """BV for the DSL backends: 16 splits V = 48 over three programs whose partial norms the host
    combines; 64 keeps one."""
    return {"BV": bv} if backend in DSL else None


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bv", [16, 64], ids=["3-V-tiles", "1-V-tile"])
@pytest.mark.parametrize("magnitude", [1e19, 1e35, 1e-21, 1e-30])
def test_scan_with_huge_or_tiny_values(backend, bv, magnitude):
    x = scan_inputs(Shape(B=1, T=40, H=2, K=32, V=48), seed=3)
    x["v"] = x["v"] * magnitude
    x["initial_state"] = x["initial_state"] * magnitude
    o, m, s = ops.delta_scan(**x, output_final_state=True, chunk_size=16, backend=backend,
                             config=_scan_config(backend, bv))
    ro, rm, rs = oracle.naive_delta_scan(**x, output_final_state=True)
    errors = {"o": rel_err(o, ro), "m": rel_err(m, rm), "final_state": rel_err(s, rs)}
    assert max(errors.values()) <= TOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("magnitude", [1e20, 1e37, 1e-20])
def test_cache_read_with_huge_or_tiny_queries_and_keys(backend, magnitude):
    shape = Shape(B=1, T=100, H=2, K=32, V=16, W=8, C=32)
    x = read_inputs(shape, seed=4)
    x["q"], x["k"] = x["q"] * magnitude, x["k"] * magnitude
    o = ops.cache_read(**x, block_size=shape.C, backend=backend,
                       config={"BQ": 16, "BKV": 16} if backend in DSL else None)
    err = rel_err(o, oracle.naive_cache_read(**x, block_size=shape.C))
    assert err <= TOL, err


@pytest.mark.parametrize("magnitude", [1e20, 1e37, 1e-20, 1.0])
def test_l2norm_scales_before_squaring(magnitude):
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(0)) * magnitude
    x64 = x.double()
    want = x64 / torch.sqrt((x64 * x64).sum(-1, keepdim=True) + ops.L2NORM_EPS)
    assert rel_err(ops.l2norm(x), want) <= TOL
    assert ops.l2norm(torch.zeros(2, 8)).eq(0).all()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_use_qk_l2norm_with_huge_queries_and_keys(backend):
    x = scan_inputs(Shape(B=1, T=40, H=2, K=32, V=48), seed=5)
    gen = torch.Generator().manual_seed(6)
    x["q"], x["k"] = (torch.randn(1, 40, 2, 32, generator=gen) * 1e20 for _ in range(2))
    o, m, s = ops.delta_scan(**x, output_final_state=True, use_qk_l2norm=True, chunk_size=16, backend=backend)
    ro, rm, rs = oracle.naive_delta_scan(**x, output_final_state=True, use_qk_l2norm=True)
    errors = {"o": rel_err(o, ro), "m": rel_err(m, rm), "final_state": rel_err(s, rs)}
    assert max(errors.values()) <= TOL, errors


def test_m_of_an_all_zero_update_is_zero():
    """beta = 0 writes nothing: m is exactly 0 (the scaled norm's 0 / 0 never happens)."""
    x = scan_inputs(Shape(B=1, T=20, H=1, K=16, V=32), case="beta0", seed=1)
    for backend in BACKENDS:
        _, m, _ = ops.delta_scan(**x, chunk_size=16, backend=backend,
                                 config={"BV": 16} if backend in DSL else None)
        assert m.eq(0).all(), backend
