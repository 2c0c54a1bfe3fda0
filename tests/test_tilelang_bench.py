"""`hola bench` (reference vs TileLang on a small prefill) and its FLOP count."""

from __future__ import annotations

import pytest

from hola_dsl import backends
from tools.cli import main
from tools.commands.bench import scan_flops


def test_scan_flops_counts_the_chunked_products():
    # One chunk of 2 tokens, K = V = 1: 2*4*(3+2) + 6*2 = 52; a partial chunk counts as whole.
    assert scan_flops(1, 2, 1, 1, 1, chunk=2) == 52
    assert scan_flops(2, 3, 3, 1, 1, chunk=2) == 2 * 3 * 2 * 52
    assert scan_flops(1, 4096, 4, 128, 128) == pytest.approx(2.953e9, rel=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None, reason="tilelang unavailable")
def test_bench_runs_reference_and_tilelang_side_by_side(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))
    out_json = tmp_path / "bench.json"
    code = main(["bench", "--shape", "B=1,T=96,H=2,K=16,V=16,W=8,C=32", "--impl", "reference",
                 "--impl", "tilelang", "--repeat", "2", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0
    assert "reference" in out and "tilelang" in out and "GFLOP/s" in out
    # Both implementations computed the same layer: the agreement lines show small errors.
    line = next(l for l in out.splitlines() if l.strip().startswith("tilelang") and " o " in l)
    err = float(line.split(" o ")[1].split()[0])
    assert err < 1e-5
    import json
    data = json.loads(out_json.read_text())
    assert set(data["median_seconds"]) == {"reference", "tilelang"}


def test_bench_rejects_a_bad_repeat(capsys):
    assert main(["bench", "--repeat", "0", "--impl", "reference"]) == 2
