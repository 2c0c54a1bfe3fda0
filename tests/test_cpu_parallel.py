"""CPU launches on an OpenMP team (hola_dsl.backends.tilelang.cpu_parallel): the same bits as a serial run for
every kernel, on torch's own libgomp, and a clean fallback to host threads."""

from __future__ import annotations

import shutil

import pytest
import torch

from hola_dsl import backends, ops
from hola_dsl.backends.tilelang import cpu_parallel, runtime as tilelang_runtime
from hola_dsl.testing import Shape, read_inputs, scan_inputs

pytestmark = pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None,
                                reason=f"tilelang backend unavailable: {backends.unavailable_reason('tilelang')}")

SHAPE = Shape(B=2, T=300, H=3, K=32, V=48, W=16, C=64)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


@pytest.fixture
def modes(monkeypatch):
    """Records how each launch ran ("serial", "omp", "python")."""
    seen: list[str] = []
    real = tilelang_runtime.launch_cpu

    def spy(*args, **kwargs):
        mode = real(*args, **kwargs)
        seen.append(mode)
        return mode
    monkeypatch.setattr(tilelang_runtime, "launch_cpu", spy)
    return seen


def _all_kernels(threads: int) -> list[torch.Tensor]:
    x = scan_inputs(SHAPE, seed=4)
    cfg = {"cpu_threads": threads, "BV": 16}
    o, m, s = ops.delta_scan(**x, output_final_state=True, chunk_size=16, backend="tilelang", config=cfg)
    idx = ops.cache_select(m, capacity=SHAPE.W, block_size=SHAPE.C, backend="tilelang",
                           config={"cpu_threads": threads})
    r = read_inputs(SHAPE, seed=5)
    oc = ops.cache_read(**{**r, "idx": idx}, block_size=SHAPE.C, backend="tilelang",
                        config={"cpu_threads": threads, "BQ": 16, "BKV": 16})
    return [o, m, s, idx, oc]


def _need_omp():
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler for the OpenMP shim")


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["omp", "python"])
def test_two_threads_give_the_serial_bits(pool, modes, monkeypatch):
    """Programs are independent: any split of the grid over threads changes no bit."""
    _need_omp()
    monkeypatch.setenv("HOLA_CPU_POOL", pool)
    one = _all_kernels(1)
    assert set(modes) == {"serial"}
    modes.clear()
    two = _all_kernels(2)
    assert modes == [pool] * 3
    for a, b in zip(one, two):
        assert not a.isnan().any() if a.is_floating_point() else (a >= -1).all()
        assert torch.equal(a, b)


def test_omp_team_is_torchs_own(modes):
    """The shim's libgomp is the one torch runs its ops on (one pool, no spinning rivals)."""
    _need_omp()
    if "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch does not run its ops on OpenMP")
    _all_kernels(2)
    shared = cpu_parallel.shares_torch_pool()
    if shared is None:
        pytest.skip("torch's libgomp is not a separate library here")
    assert shared is True


def test_small_stacks_fall_back_to_host_threads(modes, monkeypatch):
    """A team whose threads lack the stack a program needs is not used."""
    _need_omp()
    monkeypatch.setattr(cpu_parallel.Launcher, "fits", lambda self, threads: False)
    ref = _all_kernels(1)
    modes.clear()
    assert all(torch.equal(a, b) for a, b in zip(ref, _all_kernels(2)))
    assert modes == ["python"] * 3


def test_bad_pool_setting_is_named(monkeypatch):
    monkeypatch.setenv("HOLA_CPU_POOL", "tbb")
    with pytest.raises(ValueError, match="HOLA_CPU_POOL: expected 'omp' or 'python', got 'tbb'"):
        _all_kernels(2)


def test_call_signature_and_stack_estimate():
    source = """
float hola_expf(float x) { return x; }
int32_t k_kernel(float* a, int32_t pid_hi, int32_t pid_lo) {
  float tile_0[4096];
  int32_t ids_1[64];
  return 0;
}
#ifdef __cplusplus
extern "C"
#endif
int32_t call(float* a, int64_t* idx, float scale, int32_t grid_0, int32_t pid_lo, int32_t pid_hi, int32_t T) {
  return k_kernel(a, pid_hi, pid_lo);
}
"""
    params = cpu_parallel.call_signature(source)
    assert [(p.ctype, p.name) for p in params] == [
        ("float*", "a"), ("int64_t*", "idx"), ("float", "scale"), ("int32_t", "grid_0"),
        ("int32_t", "pid_lo"), ("int32_t", "pid_hi"), ("int32_t", "T")]
    assert cpu_parallel.stack_bytes(source) == cpu_parallel._STACK_MARGIN + 4096 * 4 + 64 * 4
    assert cpu_parallel.call_signature("int32_t other(float* a) {") is None
    assert cpu_parallel.call_signature("int32_t call(struct s* a) {") is None


@pytest.mark.slow
def test_thread_count_follows_torch_unless_a_config_sets_it(modes):
    """Like any torch op, a launch uses torch's intra-op threads; ``cpu_threads`` overrides."""
    _need_omp()
    x = scan_inputs(SHAPE, seed=1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ops.delta_scan(**x, backend="tilelang", config={"BV": 16})
        ops.delta_scan(**x, backend="tilelang", config={"BV": 16, "cpu_threads": 2})
        torch.set_num_threads(2)
        ops.delta_scan(**x, backend="tilelang", config={"BV": 16})
        ops.delta_scan(**x, backend="tilelang", config={"BV": 16, "cpu_threads": 1})
    finally:
        torch.set_num_threads(before)
    assert modes == ["serial", "omp", "omp", "serial"]
    with pytest.raises(ValueError, match="cpu_threads: expected a positive int .*, got 0"):
        ops.delta_scan(**x, backend="tilelang", config={"cpu_threads": 0})


def test_thread_count_is_a_launch_setting_not_a_tuned_knob():
    import schedules
    space = schedules.space("delta_scan", "tilelang")
    config = space.check({"cpu_threads": 2}, "cpu")
    assert space.violations(config, "cpu", {"K": 32, "V": 48}) == []
    assert all("cpu_threads" not in c for c in space.legal("cpu", {"K": 32, "V": 48}))
    assert "cpu_threads" not in space.default("cpu")
    assert space.violations({**config, "cpu_thread": 2}, "cpu", {})[0].startswith("cpu_thread: not a knob")


# A scan at chunk 1024 holds several 1024 x 1024 float32 tiles (about 28 MB) per program,
# more than a main thread's usual 8 MB stack. Run in a child process: a crash must fail the
# test, not end the test session.
_BIG_CHUNK_SCAN = r"""
import sys, torch
from hola_dsl import ops
from hola_dsl.testing import Shape, rel_err, scan_inputs
from hola_dsl.reference import oracle
x = scan_inputs(Shape(B=1, T=1100, H=1, K=16, V=16), seed=2)
if sys.argv[1] == "torch":
    torch.set_num_threads(1)
    cfg = {"BV": 16}
else:
    cfg = {"BV": 16, "cpu_threads": int(sys.argv[1])}
o, m, s = ops.delta_scan(**x, output_final_state=True, chunk_size=1024, backend="tilelang", config=cfg)
ro, rm, rs = oracle.naive_delta_scan(**x, output_final_state=True)
print(max(rel_err(o, ro), rel_err(m, rm), rel_err(s, rs)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("threads", ["1", "torch"])
def test_chunk_1024_on_one_thread_runs(threads, tmp_path):
    """A serial launch whose tiles exceed the calling thread's stack runs (on a thread with the
    stack it needs) instead of crashing the process."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "HOLA_TUNING_DB": "off", "HOLA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", _BIG_CHUNK_SCAN, threads], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert float(run.stdout.split()[-1]) <= 1e-5


@pytest.mark.slow
def test_tiles_beyond_the_stack_limit_are_refused_by_name(monkeypatch):
    """A schedule whose program would need more stack than any thread should get is an error
    that names the kernel and the knobs to shrink, not a crash."""
    monkeypatch.setattr(tilelang_runtime, "MAX_PROGRAM_STACK", 64 << 10)
    x = scan_inputs(SHAPE, seed=4)
    with pytest.raises(ValueError, match=r"delta_scan: a program of schedule .* MiB .*chunk_size"):
        ops.delta_scan(**x, chunk_size=16, backend="tilelang", config={"BV": 16, "cpu_threads": 1})
