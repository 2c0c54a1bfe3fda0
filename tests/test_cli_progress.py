"""Long work says what it is doing: `hola build` prints each row as its build finishes, `hola
bench` announces torch.compile before the wait."""

import sys

import torch

from hola_dsl import aot
from tools.cli import main


def test_build_prints_each_row_before_the_next_build(capsys, monkeypatch):
    seen = []

    def fake_build(kernel, target, config=None, dims=None, dtype="bfloat16", phase=None):
        seen.append(sys.stdout.getvalue().count("| cache_"))      # rows printed so far
        return aot.BuildResult(kernel, target, {"BC": 64, "num_warps": 8}, True, registers=1, spills=0, shared=0)

    monkeypatch.setattr(aot, "build", fake_build)
    assert main(["build", "--kernel", "cache_select", "--kernel", "cache_read", "--targets", "sm_80,gfx942"]) == 0
    assert seen == [0, 1, 2, 3]
    out = capsys.readouterr().out
    assert out.count("| ok |") == 4 and "| cache_read | triton | gfx942 |" in out


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
