"""Generated Triton kernels, run by Triton's CPU interpreter, against the float64 oracle.

TRITON_INTERPRET=1 must be set before any generated kernel is created; this module sets it
before the first launch (generated modules are imported lazily) and keeps generated sources in
a temporary cache. The interpreter is numpy: float32 only (its bf16 dot is not exact).
"""

import os

import pytest

os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")

from hola_dsl import backends  # noqa: E402
from hola_dsl.testing import Shape, run_check  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory):
    old = os.environ.get("HOLA_CACHE_DIR")
    os.environ["HOLA_CACHE_DIR"] = str(tmp_path_factory.mktemp("hola_cache"))
    yield
    if old is None:
        os.environ.pop("HOLA_CACHE_DIR", None)
    else:
        os.environ["HOLA_CACHE_DIR"] = old


SMALL = Shape(B=2, T=1, H=2, K=32, V=48, W=8, C=64)
ODD = Shape(B=2, T=65, H=2, K=32, V=48, W=8, C=64)
LONG = Shape(B=1, T=300, H=2, K=32, V=48, W=16, C=128)


def test_triton_backend_available_under_interpreter():
    assert backends.unavailable_reason("triton") is None


@pytest.mark.parametrize("shape,case", [(SMALL, "random"), (ODD, "strong_decay"), (ODD, "beta0"),
                                        (LONG, "repeated"), (LONG, "random")],
                         ids=["T1-random", "T65-strong_decay", "T65-beta0", "T300-repeated", "T300-random"])
@pytest.mark.slow
def test_delta_scan(shape, case):
    r = run_check("delta_scan", "triton", shape, case=case, seed=21)
    assert r.ok, r.errors


def test_delta_scan_v_split():
    """Two V tiles per (b, h): m is finished from per-tile partial sums of squares."""
    r = run_check("delta_scan", "triton", Shape(B=1, T=40, H=1, K=32, V=48), seed=2, chunk_size=16,
                  config={"BV": 32})
    assert r.ok, r.errors


@pytest.mark.parametrize("policy", ["hola", "recency"])
@pytest.mark.parametrize("shape", [SMALL, ODD, LONG, Shape(B=1, T=301, H=2, W=10, C=100)],
                         ids=["T1", "T65", "T300", "T301-C100"])
def test_cache_select_exact(shape, policy):
    r = run_check("cache_select", "triton", shape, policy=policy, seed=23)
    assert r.errors["idx"] == 0


@pytest.mark.parametrize("policy", ["hola", "recency"])
@pytest.mark.parametrize("shape", [SMALL, ODD, LONG], ids=["T1", "T65", "T300"])
def test_cache_read(shape, policy):
    r = run_check("cache_read", "triton", shape, policy=policy, seed=29)
    assert r.ok, r.errors


def test_cache_read_streamed_cache_and_lse():
    """W = 20 in two 16-entry steps (the second partly padding), and the optional lse output."""
    from hola_dsl.reference import oracle
    from hola_dsl.testing import read_inputs, read_lse, rel_err
    shape = Shape(B=1, T=40, H=2, K=32, V=48, W=20, C=16)
    x = read_inputs(shape, seed=6)
    o, lse = backends.get("triton").run("cache_read", *x.values(), block_size=shape.C, eps=1e-6,
                                        config={"BQ": 16, "BKV": 16}, lse=True)
    assert rel_err(o, oracle.naive_cache_read(**x, block_size=shape.C)) <= 1e-5
    assert rel_err(lse, read_lse(**x, block_size=shape.C)) <= 1e-5


def test_non_contiguous_inputs():
    """Views (a transposed layout, a strided slice) are read as their values, not their storage."""
    import torch

    from hola_dsl import ops
    from hola_dsl.testing import scan_inputs
    from hola_dsl.reference import oracle
    x = scan_inputs(Shape(B=1, T=20, H=2, K=32, V=48), seed=8)
    x["q"] = x["q"].transpose(1, 2).contiguous().transpose(1, 2)           # [B, T, H, K] view, H-major storage
    x["v"] = torch.cat([x["v"], x["v"]], dim=-1)[..., ::2]                  # strided last dim
    assert not x["q"].is_contiguous() and not x["v"].is_contiguous()
    o, m, s = ops.delta_scan(**x, output_final_state=True, chunk_size=16, backend="triton")
    ro, rm, rs = oracle.naive_delta_scan(**x, output_final_state=True)
    from hola_dsl.testing import rel_err
    assert max(rel_err(o, ro), rel_err(m, rm), rel_err(s, rs)) <= 1e-5


def _low_precision_outputs(dtype):
    """(scan output, cache read output) of the triton backend on inputs already representable in
    ``dtype``: once with those inputs in ``dtype`` (outputs stored in ``dtype``) and once
    upcast to float32 (the same float32 arithmetic inside, stored as float32)."""
    import torch

    from hola_dsl import ops
    from hola_dsl.testing import read_inputs, scan_inputs
    shape = Shape(B=1, T=40, H=2, K=32, V=48, W=8, C=16)
    x = {n: (t.to(dtype) if n in "qkv" else t) for n, t in scan_inputs(shape, seed=31).items()}
    r = {n: (t.to(dtype) if n in "qkv" else t) for n, t in read_inputs(shape, seed=32).items()}
    up = lambda d: {n: (t.float() if n in "qkv" else t) for n, t in d.items()}
    cfg = {"dot_precision": "ieee"}
    low = (ops.delta_scan(**x, chunk_size=16, backend="triton", config=cfg)[0],
           ops.cache_read(**r, block_size=shape.C, backend="triton", config=cfg))
    f32 = (ops.delta_scan(**up(x), chunk_size=16, backend="triton", config=cfg)[0],
           ops.cache_read(**up(r), block_size=shape.C, backend="triton", config=cfg))
    return low, f32


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_stores_round_to_nearest(dtype):
    """docs/tolerances.md: low-precision outputs are the float32 results rounded to nearest (ties
    to even), as torch's .to() rounds, not truncated. The cache read's dots take operands of the
    inputs' dtype (its probabilities rounded to it, as FlashAttention's), so its results are
    not the float32 ones: they are held to docs/tolerances.md's low-precision row instead."""
    import torch

    from hola_dsl.testing import rel_err
    dtype = getattr(torch, dtype)
    (scan, read), (scan32, read32) = _low_precision_outputs(dtype)
    assert scan.dtype == read.dtype == dtype
    want = scan32.to(dtype)
    assert torch.equal(scan, want), f"{int((scan != want).sum())} of {scan.numel()} elements differ"
    assert rel_err(read, read32) <= 5e-3 and not torch.equal(read, read32.to(dtype))
