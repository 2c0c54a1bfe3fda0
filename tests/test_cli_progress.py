"""Long work says what it is doing: `hola build` prints each row as its build finishes, `hola
bench` announces torch.compile before the wait."""

import sys

import torch

from hola_dsl.backends.builds import BuildResult
from hola_dsl.backends.triton import aot
from tools.cli import main


def test_build_prints_each_row_before_the_next_build(capsys, monkeypatch):
    seen = []

    def fake_build(kernel, target, config=None, dims=None, dtype="bfloat16"):
        seen.append(sys.stdout.getvalue().count("| cache_"))      # rows printed so far
        return [BuildResult(kernel, target, {"BC": 64, "num_warps": 8}, True, registers=1, spills=0, shared=0)]

    monkeypatch.setattr(aot, "build", fake_build)
    assert main(["build", "--kernel", "cache_select", "--kernel", "cache_read", "--targets", "sm_80,gfx942"]) == 0
    assert seen == [0, 1, 2, 3]
    out = capsys.readouterr().out
    assert out.count("| ok |") == 4 and "| cache_read | triton | gfx942 |" in out


def test_build_dtype_reaches_every_build_and_the_header(capsys, monkeypatch):
    got = []

    def fake_build(kernel, target, config=None, dims=None, dtype="bfloat16"):
        got.append(dtype)
        return [BuildResult(kernel, target, {"num_warps": 4}, True, registers=1, spills=0, shared=0, dtype=dtype)]

    monkeypatch.setattr(aot, "build", fake_build)
    assert main(["build", "--kernel", "cache_select", "--targets", "sm_80,sm_90", "--dtype", "float32"]) == 0
    assert got == ["float32", "float32"] and "float32 inputs" in capsys.readouterr().out


def test_the_triton_twin_of_a_tilelang_build_takes_the_configs_triton_knobs():
    """The Triton rows next to TileLang's build the same split and tiles; TileLang-only knobs
    (threads) and values Triton's space rejects stay out."""
    from tools.commands.build import _triton_part
    config = {"split": "prepare+recur_output", "BV": 32, "threads": 256, "num_warps": 3}
    assert _triton_part("delta_scan", config) == {"split": "prepare+recur_output", "BV": 32}
    assert _triton_part("delta_scan", {"threads": 256}) is None


def test_bench_says_it_is_compiling_before_it_compiles(capsys, monkeypatch):
    said = []

    def fake_compile(fn, **kw):
        said.append(sys.stdout.getvalue())
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert main(["bench", "--impl", "compile", "--shape", "B=1,T=16,H=1,K=8,V=8,W=4,C=8", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch.compile" in out
    assert len(said) == 3
