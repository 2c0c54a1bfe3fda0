"""TileLang CUDA dialect without a GPU: every kernel lowered for sm_90a and compiled by nvcc to
a cubin, with ptxas's resource report parsed. Skips cleanly where nvcc (or TileLang) is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hola_dsl import backends, source_cache
from hola_dsl.backends.tilelang import nvcc
from schedules.kernels import KERNELS

needs_tilelang = pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None,
                                    reason=f"tilelang unavailable: {backends.unavailable_reason('tilelang')}")
needs_nvcc = pytest.mark.skipif(nvcc.find_nvcc() is None, reason="nvcc not found")

# Small static dims keep nvcc's template work (and the suite) short; the emitter does not
# depend on the sizes beyond tile shapes. The scan's phases are built at their real dims
# (K = V = 128) instead: tests/test_tilelang_cuda_sync.py lowers them there (their shared
# memory budget), and lowering them costs a minute or more each, so the table reuses those
# lowerings (cuda_build_cache); its other split is built at these dims by
# tests/test_scan_phases.py, whose prepare phase holds all of the default split's.
DIMS = {"K": 32, "V": 32, "W": 16, "C": 64}
KERNEL_DIMS = {"delta_scan": None}
_PREBUILT: set = set()      # the session caches the table's kernels were built into

PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'helper_kernel' for 'sm_90a'
ptxas info    : Function properties for helper_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
ptxas info    : Compiling entry function 'delta_scan_cuda_kernel' for 'sm_90a'
ptxas info    : Function properties for delta_scan_cuda_kernel
    16 bytes stack frame, 24 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem, 376 bytes cmem[0]
"""


def test_parse_ptxas_reads_each_entry():
    got = nvcc.parse_ptxas(PTXAS_LOG)
    assert got["delta_scan_cuda_kernel"] == dict(registers=255, spill_stores=24, spill_loads=8, stack=16, smem=1024)
    assert got["helper_kernel"] == dict(registers=12, spill_stores=0, spill_loads=0, stack=0, smem=0)


def test_build_jobs_reads_its_variable(monkeypatch):
    monkeypatch.setenv("HOLA_BUILD_JOBS", "3")
    assert nvcc.build_jobs() == 3
    monkeypatch.setenv("HOLA_BUILD_JOBS", "0")
    with pytest.raises(ValueError, match="HOLA_BUILD_JOBS: expected a whole number >= 1, got '0'"):
        nvcc.build_jobs()
    monkeypatch.delenv("HOLA_BUILD_JOBS")
    assert nvcc.build_jobs() >= 1


def test_lower_cuda_rejects_a_non_arch():
    with pytest.raises(ValueError, match="arch"):
        nvcc.lower_cuda(None, "hopper")


@pytest.mark.slow
@needs_tilelang
@needs_nvcc
@pytest.mark.parametrize("kernel", KERNELS)
def test_cuda_dialect_compiles_for_sm90a(kernel, tmp_path, cuda_build_cache):
    """Every kernel the default sm_90a schedule runs (each phase of the scan's split), free of
    sync problems (TileLang's race and serial-loop warnings, barriers in thread-dependent
    control flow, single-thread shared writes: tests/test_tilelang_cuda_sync.py checks those
    checks) and of single-thread sections."""
    if cuda_build_cache not in _PREBUILT:          # every kernel of the table at once, over the CPUs
        nvcc.prebuild([(k, None, KERNEL_DIMS.get(k, DIMS)) for k in KERNELS], "sm_90a")
        _PREBUILT.add(cuda_build_cache)
    pipelined = []
    rows = nvcc.build(kernel, "sm_90a", dims=KERNEL_DIMS.get(kernel, DIMS), out_dir=tmp_path / "cubin")
    assert len(rows) == {"delta_scan": 3, "cache_select": 2, "delta_scan_backward": 4,
                         "cache_read_backward": 2}.get(kernel, 1)   # launches per call
    for r in rows:
        assert r.ok, (r.kernel, r.error)
        assert r.extra["cubin"].endswith(".sm_90a.cubin")
        assert (tmp_path / "cubin").joinpath(r.extra["cubin"].rsplit("/", 1)[1]).stat().st_size > 0
        assert 0 < r.registers <= 255 and r.spills == 0
        assert 0 < r.shared <= 227 * 1024          # fits an H100's shared memory per block
        source = open(r.extra["source"]).read()
        assert "import tilelang.language as T" in source and "T.Kernel(" in source
        if kernel in ("delta_scan", "cache_read"):   # tensor-core products (lola_select's are FMA fp32)
            assert "T.gemm(" in source and "T.alloc_fragment(" in source
        assert not r.extra["sync_problems"], (r.kernel, r.extra["sync_problems"])
        assert "T.Parallel(1)" not in source           # no single-thread sections emitted at all
        pipelined.append("T.Pipelined(" in source)
    if kernel == "delta_scan":                  # its chunk loop (the recurrence's) is marked pipelined
        assert any(pipelined)


@pytest.mark.slow
@needs_tilelang
@needs_nvcc
def test_nvcc_results_are_reused_for_unchanged_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))
    serial = {"split": "serial"}                # one kernel
    (first,) = nvcc.build("cache_select", "sm_90a", serial, dims=nvcc.CHECK_DIMS)
    assert first.ok and not first.extra["cached"], first.error

    def no_nvcc(*a, **kw):
        raise AssertionError("nvcc ran for an unchanged source")

    monkeypatch.setattr(nvcc, "compile_cubin", no_nvcc)
    monkeypatch.setattr(nvcc, "lower_cuda", no_nvcc)
    (again,) = nvcc.build("cache_select", "sm_90a", serial, dims=nvcc.CHECK_DIMS, out_dir=tmp_path / "out")
    assert again.ok and again.extra["cached"], again.error
    assert (again.registers, again.spills, again.shared) == (first.registers, first.spills, first.shared)
    assert (tmp_path / "out" / first.extra["cubin"].rsplit("/", 1)[1]).is_file()
    module = source_cache.import_file(Path(first.extra["source"]), "hola_test_reused_lowering")
    lowered, cached = nvcc.cached_lower(module, "sm_90a")       # the lowering is reused on its own too
    assert cached and lowered.entry in lowered.source and lowered.threads > 0
    key = nvcc.build_key("source", "sm_90a", {}, nvcc.find_nvcc())
    assert key != nvcc.build_key("source", "sm_80", {}, nvcc.find_nvcc())          # another arch
    assert key != nvcc.build_key("source 2", "sm_90a", {}, nvcc.find_nvcc())       # another source
