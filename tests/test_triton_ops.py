"""Every op's Triton lowering agrees with its eager meaning, including ops the three kernels do
not use (exp2, log, sigmoid, abs, div, //, %, comparisons, not/or, broadcast_to, min, dot with
an accumulator and transposed operands, gathers with -1, masked stores). Triton interpreter."""

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from hola_dsl import eager, lang as hl  # noqa: E402
from hola_dsl.backends.triton import runtime as triton_runtime  # noqa: E402


@hl.kernel
def _all_ops(x: hl.In("N", "D"), pos: hl.In("M", dtype="int32"), y: hl.Out("N", "D"),
             z: hl.Out("N", "D"), r: hl.Out("R", "N"), *, D: int):
    (pid,) = hl.grid(hl.cdiv(hl.dim("N"), 16) - 1 + 1)
    rows, cols = hl.tile(pid * 16, 16), hl.tile(0, D)
    t = x[rows, cols].to("float32")                                      # [16, D]
    a = hl.abs(t) + 0.5
    e = hl.exp2(t) + hl.log(a) + hl.sqrt(a) * hl.rsqrt(a) + hl.sigmoid(-t) + a / 3.0
    i = hl.iota(16)
    keep = ((i[:, None] < 8) & ~(i[None, :] >= 4)) | (i[:, None] == i[None, :])
    w = hl.where(keep, e, hl.maximum(t, 0.0) - hl.minimum(t, 0.0))
    ints = ((i * 7) // 3 % 5).to("float32")                              # [16]
    bias = hl.broadcast_to(ints[:, None], (16, D))
    prod = hl.dot(w, t, bias, trans_a=True) + hl.dot(w, t.T, trans_b=True)
    y[rows, cols] = hl.cumsum(prod, 1) * 0.01
    z[rows, cols] = hl.unit_lower_inverse(w * 0.1)
    at = pos.load((hl.tile(0, 16),), other=-1)                           # [16] positions, -1 = none
    g = x.load((at, cols), other=0.0).to("float32")                     # gather rows, -1 -> 0
    red = hl.sum(g, 1) + hl.max(t, 1) - hl.min(t, 0) + (hl.sum((t > 0).to("int32"), 1)).to("float32")
    r.store((0, rows), red, mask=(i % 2) == 0)                           # odd entries untouched
    r[1, rows] = hl.where((i != 3) & (i <= 10) & (i >= 1), red, -red)


def test_triton_lowering_matches_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 16, generator=gen)
    pos = torch.tensor([3, -1, 0, 15, 7, -1, 2, 2, 9, 1, 0, 4, 5, 6, 11, 12], dtype=torch.int32)
    kir = _all_ops.trace({"x": "float32", "pos": "int32", "y": "float32", "z": "float32", "r": "float32"}, D=16)

    def outputs():
        return (torch.full((16, 16), float("nan")), torch.full((16, 16), float("nan")),
                torch.full((2, 16), float("nan")))
    ye, ze, re_ = outputs()
    eager.run(kir, dict(x=x, pos=pos, y=ye, z=ze, r=re_))
    yt, zt, rt = outputs()
    triton_runtime.launch(kir, {"num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
                          dict(x=x, pos=pos, y=yt, z=zt, r=rt), target="interpreter")
    assert torch.isfinite(ye).all() and torch.isfinite(ze).all()
    assert torch.isnan(re_[0, 1::2]).all() and torch.isnan(rt[0, 1::2]).all()     # masked store
    for e, t in ((ye, yt), (ze, zt), (re_, rt)):
        assert torch.allclose(e, t, rtol=1e-5, atol=1e-5, equal_nan=True), (e - t).abs().nan_to_num().max()
