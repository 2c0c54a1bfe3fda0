"""TileLang CPU dialect: all three kernels against the float64 oracle (docs/tolerances.md), the
grid split over threads, the schedule knobs, and the generated-source cache."""

from __future__ import annotations

import pytest
import torch

from hola_dsl import backends
from hola_dsl.kernels import cache_read as cache_read_kernel, cache_select as cache_select_kernel
from hola_dsl.testing import SCAN_CASES, Shape, TOLERANCE, rel_err, run_check, scan_inputs

pytestmark = pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None,
                                reason=f"tilelang backend unavailable: {backends.unavailable_reason('tilelang')}")

# T = 1, T not a multiple of any chunk or block, K != V, W not a power of two in one shape.
SHAPES = (Shape(B=2, T=1, H=2, K=32, V=48, W=8, C=64), Shape(B=2, T=300, H=2, K=32, V=48, W=16, C=128),
          Shape(B=1, T=200, H=3, K=16, V=32, W=12, C=64))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES[:2], ids=["T1", "T300"])
@pytest.mark.parametrize("case", SCAN_CASES)
def test_delta_scan_matches_oracle(shape, case):
    r = run_check("delta_scan", "tilelang", shape, case=case, seed=11)
    assert r.ok, (case, r.errors)


@pytest.mark.slow
def test_delta_scan_without_state_several_value_tiles_small_chunks():
    """No initial state, no final state, chunk 16 and BV 16 (three programs per head)."""
    shape = Shape(B=1, T=77, H=2, K=32, V=48)
    x = scan_inputs(shape, seed=3, initial_state=False)
    from hola_dsl import ops
    from hola_dsl.reference import oracle
    o, m, s = ops.delta_scan(**x, chunk_size=16, backend="tilelang", config={"BV": 16})
    ro, rm, _ = oracle.naive_delta_scan(**x)
    assert s is None
    assert rel_err(o, ro) <= TOLERANCE[torch.float32] and rel_err(m, rm) <= TOLERANCE[torch.float32]


@pytest.mark.parametrize("shape", SHAPES, ids=["T1", "T300", "T200W12"])
@pytest.mark.parametrize("policy", ["hola", "recency"])
def test_cache_select_matches_oracle_exactly(shape, policy):
    r = run_check("cache_select", "tilelang", shape, policy=policy, seed=5)
    assert r.errors["idx"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=["T1", "T300", "T200W12"])
@pytest.mark.parametrize("policy", ["hola", "recency"])
def test_cache_read_matches_oracle(shape, policy):
    r = run_check("cache_read", "tilelang", shape, policy=policy, seed=7)
    assert r.ok, r.errors


@pytest.mark.slow
def test_other_micro_kernel_and_tiles_agree_with_oracle():
    """Non-default knobs: a 2 x 16 register tile, single thread, small query/key tiles."""
    cfg = {"cpu_mr": 2, "cpu_nr": 16, "cpu_threads": 1, "BQ": 16, "BKV": 16}
    r = run_check("cache_read", "tilelang", SHAPES[1], seed=9, config=cfg)
    assert r.ok, r.errors
    r = run_check("delta_scan", "tilelang", SHAPES[1], case="repeated", seed=9,
                  config={"cpu_mr": 8, "cpu_nr": 64, "cpu_threads": 1, "BV": 64})
    assert r.ok, r.errors


@pytest.mark.slow
@pytest.mark.slow
def test_cache_read_streamed_cache_and_lse():
    """The CPU's keys-major form: W = 40 in three 16-entry steps, and the optional lse output."""
    from hola_dsl.reference import oracle
    from hola_dsl.testing import read_inputs, read_lse
    shape = Shape(B=1, T=70, H=2, K=32, V=48, W=40, C=32)
    x = read_inputs(shape, seed=5)
    o, lse = backends.get("tilelang").run("cache_read", *x.values(), block_size=shape.C, eps=1e-6,
                                          config={"BQ": 16, "BKV": 16}, lse=True)
    assert rel_err(o, oracle.naive_cache_read(**x, block_size=shape.C)) <= 1e-5
    assert rel_err(lse, read_lse(**x, block_size=shape.C)) <= 1e-5


def test_thread_split_gives_identical_results():
    """Programs are independent, so splitting the grid over threads changes no bit."""
    from hola_dsl import ops
    x = scan_inputs(SHAPES[1], seed=13)
    one = ops.delta_scan(**x, output_final_state=True, backend="tilelang", config={"cpu_threads": 1})
    two = ops.delta_scan(**x, output_final_state=True, backend="tilelang", config={"cpu_threads": 2})
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_split_covers_every_program_once():
    from hola_dsl.backends.tilelang.runtime import split
    for programs in (1, 2, 3, 7, 64):
        for parts in (1, 2, 3, 8):
            ranges = split(programs, parts)
            covered = [p for lo, hi in ranges for p in range(lo, hi)]
            assert covered == list(range(programs)) and len(ranges) <= parts


def test_generated_source_is_cached_readable_and_keyed_by_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    from hola_dsl.kernels.cache_read import cache_read as kdef
    consts = cache_read_kernel.consts(32, 48, 8, 64, 1e-6, {"BQ": 32, "BKV": 16})
    dtypes = {n: "float32" for n in ("q", "k", "v", "gamma_q", "gamma_k", "sink", "o")}
    kernel = kdef.trace({**dtypes, "idx": "int64"}, **consts)
    sched = {"cpu_mr": 4, "cpu_nr": 32}
    path = tilelang_runtime.source_path(kernel, sched, "cpu", "cpu")
    assert path.parent == tmp_path / "tilelang" and path.suffix == ".py"
    text = path.read_text()
    assert "@T.prim_func" in text and "import tilelang.cpu.language as T" in text
    assert "cache_read.py:" in text                      # kernel lines are quoted as comments
    compile(text, str(path), "exec")
    other = tilelang_runtime.source_path(kernel, {"cpu_mr": 2, "cpu_nr": 32}, "cpu", "cpu")
    assert other != path and tilelang_runtime.source_path(kernel, sched, "cpu", "cpu") == path


def test_cpu_dialect_softmax_and_rank_loops_are_branch_free():
    """float32 exp goes through the inline hola_expf (libm's expf keeps loops scalar); masks
    combine with bitwise and/or; the grid position lives in a local array."""
    from hola_dsl.kernels.cache_read import cache_read as read_def
    from hola_dsl.kernels.cache_select import cache_select as select_def
    from hola_dsl.backends.tilelang import lower_cpu as tilelang_cpu
    consts = cache_read_kernel.consts(32, 48, 8, 64, 1e-6, {"BQ": 32, "BKV": 16})
    dtypes = {n: "float32" for n in ("q", "k", "v", "gamma_q", "gamma_k", "sink", "o")}
    read = tilelang_cpu.emit(read_def.trace({**dtypes, "idx": "int64"}, **consts), {})
    assert "hola_expf" in read and "T.exp(" not in read
    assert "grid_pos" in read and "p0 = " not in read
    select = tilelang_cpu.emit(select_def.trace({"scores": "float32", "idx": "int64"},
                                                **cache_select_kernel.consts(8, 64, "hola", torch.float32, {"BC": 32})), {})
    assert "T.bitwise_or(" in select and "T.Or(" not in select


def test_inline_expf_is_accurate_and_keeps_special_values(tmp_path):
    """hola_expf, compiled with the dialect's flags, against exp in float64: relative error under
    1e-6 over float32's normal range; -inf -> 0, +inf -> inf, NaN -> NaN, underflow -> 0."""
    import shutil
    import subprocess
    from hola_dsl.backends.tilelang import c_helpers, lower_cpu as tilelang_cpu
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++")
    src = tmp_path / "expf.cpp"
    src.write_text("#include <cstdint>\n#include <cstdio>\n" + c_helpers.EXPF + r"""
int main() {
  float xs[] = {-1e30f, -INFINITY, INFINITY, NAN, -100.0f, 100.0f};
  for (float x : xs) printf("%a\n", (double)hola_expf(x));
  for (int i = 0; i <= 20000; i++) { float x = -87.0f + 175.0f * i / 20000; printf("%a %a\n", (double)x, (double)hola_expf(x)); }
}
""".replace("INFINITY", "__builtin_inff()").replace("NAN", "__builtin_nanf(\"\")"))
    exe = tmp_path / "expf"
    subprocess.run([cxx, *tilelang_cpu.COMPILE_FLAGS, str(src), "-o", str(exe)], check=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    special = [float.fromhex(v) for v in lines[:6]]
    assert special[0] == 0 and special[1] == 0 and special[2] == float("inf")
    assert special[3] != special[3] and special[4] == 0 and special[5] == float("inf")
    import math
    worst = max(abs(float.fromhex(y) - math.exp(float.fromhex(x))) / math.exp(float.fromhex(x))
                for x, y in (ln.split() for ln in lines[6:] if ln))
    assert worst < 1e-6, worst
