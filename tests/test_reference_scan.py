"""The chunked PyTorch scan (backend "reference") against the float64 oracle."""

import pytest
import torch

from hola_dsl import ops
from hola_dsl.testing import SCAN_CASES, TOLERANCE, Shape, rel_err, scan_inputs
from hola_dsl.reference.oracle import naive_delta_scan


def _check(shape, case, seed, dtype=torch.float32, initial_state=True, chunk_size=64):
    x = scan_inputs(shape, dtype, case=case, seed=seed, initial_state=initial_state)
    o, m, s = ops.delta_scan(**x, output_final_state=True, chunk_size=chunk_size, backend="reference")
    ro, rm, rs = naive_delta_scan(**x, output_final_state=True)
    assert o.dtype == dtype and m.dtype == torch.float32 and s.dtype == torch.float32
    for name, out, ref in (("o", o, ro), ("m", m, rm), ("final_state", s, rs)):
        err = rel_err(out, ref)
        assert err <= TOLERANCE[dtype], f"{name}: relative error {err:.3g} for {shape}, case {case}"


@pytest.mark.parametrize("T", [1, 63, 64, 65, pytest.param(300, marks=pytest.mark.slow),
                               pytest.param(1000, marks=pytest.mark.slow)])
def test_scan_lengths(T):
    _check(Shape(B=2, T=T, H=3, K=32, V=48), "random", seed=T)


@pytest.mark.slow
@pytest.mark.parametrize("case", SCAN_CASES)
def test_scan_hard_cases(case):
    _check(Shape(B=2, T=200, H=2, K=32, V=16), case, seed=7)


def test_scan_without_initial_state_and_other_chunks():
    for chunk in (16, 32, 128):
        _check(Shape(B=1, T=150, H=2, K=16, V=24), "random", seed=chunk, initial_state=False, chunk_size=chunk)


def test_scan_low_precision_inputs():
    for dtype in (torch.bfloat16, torch.float16):
        _check(Shape(B=1, T=130, H=2, K=32, V=32), "random", seed=3, dtype=dtype)


def test_scan_qk_l2norm_flag_matches_oracle():
    x = scan_inputs(Shape(B=1, T=70, H=2, K=16, V=16), seed=5)
    x["q"], x["k"] = 3 * x["q"], 0.5 * x["k"]
    o, m, _ = ops.delta_scan(**x, use_qk_l2norm=True, backend="reference")
    ro, rm, _ = naive_delta_scan(**x, use_qk_l2norm=True)
    assert rel_err(o, ro) <= 1e-5 and rel_err(m, rm) <= 1e-5


def test_scan_final_state_only_when_asked():
    x = scan_inputs(Shape(B=1, T=10, H=1, K=8, V=8), seed=1)
    assert ops.delta_scan(**x, backend="reference")[2] is None


def test_padding_changes_nothing():
    """Outputs for the first T tokens do not depend on what follows (causality + padding)."""
    x = scan_inputs(Shape(B=1, T=100, H=2, K=16, V=16), seed=11)
    o_full, m_full, _ = ops.delta_scan(**x, backend="reference")
    cut = {n: (t[:, :37] if n != "initial_state" else t) for n, t in x.items()}
    o_cut, m_cut, _ = ops.delta_scan(**cut, backend="reference")
    assert torch.allclose(o_full[:, :37], o_cut, atol=1e-6) and torch.allclose(m_full[:, :37], m_cut, atol=1e-6)


def test_scan_gradients_match_oracle():
    x = scan_inputs(Shape(B=1, T=40, H=2, K=8, V=12), seed=2)
    x32 = {n: t.clone().requires_grad_(True) for n, t in x.items()}
    x64 = {n: t.double().clone().requires_grad_(True) for n, t in x.items()}
    w_o, w_s = torch.randn(1, 40, 2, 12), torch.randn(1, 2, 8, 12)
    o, m, s = ops.delta_scan(**x32, output_final_state=True, chunk_size=16, backend="reference")
    (o * w_o).sum().add((s * w_s).sum()).add(m.sum()).backward()
    ro, rm, rs = naive_delta_scan(**x64, output_final_state=True)
    (ro * w_o.double()).sum().add((rs * w_s.double()).sum()).add(rm.sum()).backward()
    for name in x:
        err = rel_err(x32[name].grad, x64[name].grad)
        assert err <= 1e-4, f"grad of {name}: relative error {err:.3g}"
