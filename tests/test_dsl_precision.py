"""The GPU defaults use TF32 dots; with bfloat16 inputs they must stay within docs/tolerances.md's 5e-3,
and float32 inputs (which get 3xTF32) within 1e-5.

The eager interpreter's dot is swapped for one that rounds its operands to TF32 (10 mantissa
bits, round to nearest), which is what a tensor-core TF32 dot does to them before multiplying.
"""

import pytest
import torch

from hola_dsl import registry
from hola_dsl.testing import Shape, run_check


def _tf32(x: torch.Tensor) -> torch.Tensor:
    bits = x.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.fixture
def tf32_dots(monkeypatch):
    exact = registry.OPS["dot"]

    def eager(args, attrs, ctx):
        return exact.eager([_tf32(args[0]), _tf32(args[1])] + list(args[2:]), attrs, ctx)
    monkeypatch.setitem(registry.OPS, "dot", registry.OpDef("dot", exact.infer, eager, exact.doc))
    # The emulation is not a no-op: a TF32 dot differs from the exact one.
    a = torch.randn(16, 16)
    assert not torch.equal(registry.OPS["dot"].eager([a, a], {"trans_a": False, "trans_b": False}, None)[0], a @ a)


@pytest.fixture
def tf32x3_dots(monkeypatch):
    """3xTF32: hi*hi + hi*lo + lo*hi with hi = tf32(x), lo = tf32(x - hi)."""
    exact = registry.OPS["dot"]

    def eager(args, attrs, ctx):
        a, b = args[0].float(), args[1].float()
        ah, bh = _tf32(a), _tf32(b)
        al, bl = _tf32(a - ah), _tf32(b - bh)
        dot = lambda x, y: exact.eager([x, y], attrs, ctx)[0]
        out = dot(ah, bl) + dot(al, bh) + dot(ah, bh)
        return (out + args[2] if len(args) == 3 else out,)
    monkeypatch.setitem(registry.OPS, "dot", registry.OpDef("dot", exact.infer, eager, exact.doc))


def test_float32_inputs_get_tf32x3_on_gpus():
    """The GPU default (tf32) is upgraded for float32 inputs, unless a config names a precision."""
    from hola_dsl.backends.triton import schedule
    assert schedule("delta_scan", None, "sm_90", torch.bfloat16)["dot_precision"] == "tf32"
    assert schedule("delta_scan", None, "sm_90", torch.float32)["dot_precision"] == "tf32x3"
    assert schedule("cache_read", {"dot_precision": "tf32"}, "sm_90", torch.float32)["dot_precision"] == "tf32"


@pytest.mark.slow
def test_float32_with_tf32x3_within_float32_tolerance(tf32x3_dots):
    r = run_check("delta_scan", "eager", Shape(B=1, T=40, H=1, K=128, V=128), torch.float32, case="repeated",
                  seed=4, config={"chunk_size": 16, "BV": 16})
    assert r.ok, r.errors
    r = run_check("cache_read", "eager", Shape(B=1, T=80, H=1, K=128, V=128, W=16, C=32), torch.float32, seed=4)
    assert r.ok, r.errors


@pytest.mark.slow
@pytest.mark.parametrize("case", ["random", "repeated"])
def test_delta_scan_gpu_default_within_bf16_tolerance(tf32_dots, case):
    shape = Shape(B=1, T=70, H=1, K=128, V=128)
    r = run_check("delta_scan", "eager", shape, torch.bfloat16, case=case, seed=4,
                  config={"chunk_size": 16, "BV": 16})
    assert r.ok, r.errors


@pytest.mark.slow
def test_cache_read_gpu_default_within_bf16_tolerance(tf32_dots):
    shape = Shape(B=1, T=150, H=1, K=128, V=128, W=64, C=64)
    r = run_check("cache_read", "eager", shape, torch.bfloat16, seed=4, config={"BQ": 64, "BKV": 32})
    assert r.ok, r.errors
