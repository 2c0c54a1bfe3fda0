"""The TileLang CUDA dialect lowers race-free: no ThreadSync hoisting (a barrier TileLang could
not place), no serial fallback of a vectorised loop, no __syncthreads() in thread-dependent
control flow and no single-thread section writing shared memory for the others.

The lowering needs TileLang only (no nvcc, no GPU); the static checks on CUDA source are tested
on crafted sources, so they are known to fail when they should."""

from __future__ import annotations

import os

import pytest

from hola_dsl import backends
from hola_dsl.backends.tilelang import nvcc
from schedules.kernels import DECODE, PREFILL

needs_tilelang = pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None,
                                    reason=f"tilelang unavailable: {backends.unavailable_reason('tilelang')}")

# What TileLang logs when it gives up on placing a barrier, or on vectorising a loop.
RACE_WARNING = "[ThreadSync] Hoisting sync"
SERIAL_WARNING = "lowered as a serial loop"


# ---------------------------------------------------------------- the static checks, on crafted code
SYNC_IN_THREAD_IF = """
extern "C" __global__ void __launch_bounds__(128, 1) k(float* __restrict__ x) {
  extern __shared__ __align__(1024) uchar buf_dyn_shmem[];
  void* s = ((void*)((char*)buf_dyn_shmem + 0));
  if (((int)threadIdx.x) < 1) {
    ((float*)s)[0] = x[0]; /* a brace in a comment: { */
    __syncthreads();
  }
  __syncthreads();
  x[1] = ((float*)s)[0];
}
"""

SYNC_IN_ELSE_AND_UNBRACED = """
__global__ void k(float* x) {
  if (((int)threadIdx.x) < 64) {
    x[0] = 1.f;
  } else {
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
      __syncthreads();
    }
  }
  if (((int)threadIdx.x) == 3) __syncthreads();
}
"""

PARTIAL_BARRIERS = """
__global__ void k(float* x) {
  if (((int)threadIdx.x) < 64) { tl::__sync_thread_partial(3, 64); tl::mma_sync(x); }
  if (((int)threadIdx.x) < 64) { tl::__sync_thread_partial(3, 32); }
  for (int i = 0; i < ((int)threadIdx.x); ++i) { tl::__sync_thread_partial(3, 64); }
  tl::__sync_thread_partial(4, 64);
}
"""

UNIFORM = """
__global__ void k(float* x, int T) {
  if (((int)blockIdx.x) < T) {   // the same way for every thread of a block
    __syncthreads();
  } else {
    for (int i = 0; i < T; ++i) { __syncthreads(); }
  }
  if (((int)threadIdx.x) < 64) { x[threadIdx.x] = 0.f; }
  __syncthreads();
  tl::__sync_thread_partial(3, 128);
}
"""


def test_barrier_check_finds_syncthreads_in_a_thread_branch():
    got = nvcc.barrier_problems(SYNC_IN_THREAD_IF, threads=128)
    assert len(got) == 1 and got[0].startswith("line 7: __syncthreads()") and "threadIdx.x) < 1" in got[0]


def test_barrier_check_follows_else_and_unbraced_ifs():
    got = nvcc.barrier_problems(SYNC_IN_ELSE_AND_UNBRACED)
    assert [p.split(":")[0] for p in got] == ["line 8", "line 11"]
    assert "`else`" in got[0] and "== 3" in got[1]


def test_partial_barrier_must_match_its_branch():
    got = nvcc.barrier_problems(PARTIAL_BARRIERS, threads=128)
    assert [p.split(":")[0] for p in got] == ["line 4", "line 5", "line 6"]
    assert "(.., 32)" in got[0] and "for (" in got[1] and "128-thread block" in got[2]


def test_barrier_check_accepts_block_uniform_control_flow():
    assert nvcc.barrier_problems(UNIFORM, threads=128) == []


def test_single_thread_shared_writes():
    got = nvcc.single_thread_shared_writes(SYNC_IN_THREAD_IF)
    assert got == ["line 5: one thread writes shared s for the others"]
    assert nvcc.single_thread_shared_writes(UNIFORM) == []


def test_sync_problems_gathers_warnings_and_static_checks():
    warning = ("[00:00:00] : Warning: [ThreadSync] Hoisting sync out of an if whose condition is not safe "
               "for an in-if sync. Condition: tx < 1")
    lowered = nvcc.LoweredCuda("sm_90a", SYNC_IN_THREAD_IF, "k", 128, 0,
                               warnings=[warning, "[00:00:00] : Warning: something harmless"])
    got = lowered.sync_problems()
    assert len(got) == 3 and got[0] == "TileLang ThreadSync could not place a barrier inside `if (tx < 1)`"
    assert got[1].startswith("line 7: __syncthreads()") and got[2].startswith("line 5: one thread writes")
    assert nvcc.LoweredCuda("sm_90a", UNIFORM, "k", 128, 0, warnings=["Warning: harmless"]).sync_problems() == []


def test_native_stderr_is_captured_and_passed_on(capfd):
    log: list = []
    with nvcc.native_stderr(log):
        os.write(2, b"[00:00:00] x.cc:1: Warning: from native code\n")
    assert log == ["[00:00:00] x.cc:1: Warning: from native code\n"]
    assert "from native code" in capfd.readouterr().err        # still shown


# ---------------------------------------------------------------- TileLang itself (no nvcc needed)
def _one_thread_scalar():
    """The pattern the CUDA dialect used to emit for a scalar: one thread folds a tile into a
    shared scalar, another single-thread loop reads it back."""
    import tilelang.language as T

    @T.prim_func
    def one_thread_scalar(x: T.Tensor((64,), "float32"), y: T.Tensor((64,), "float32")):
        with T.Kernel(1, threads=128) as _bx:
            g = T.alloc_shared((64,), "float32")
            s = T.alloc_shared((1,), "float32")
            t = T.alloc_shared((1,), "float32")
            for i in T.Parallel(64):
                g[i] = x[i]
            for _z in T.Parallel(1):
                s[0] = T.float32(0)
                for r in T.serial(64):
                    s[0] = s[0] + g[r]
            for _z in T.Parallel(1):
                t[0] = T.exp(s[0])
            for i in T.Parallel(64):
                y[i] = g[i] * t[0]
    return one_thread_scalar


@needs_tilelang
def test_checks_catch_the_old_single_thread_scalar():
    lowered = nvcc.lower_cuda(_one_thread_scalar(), "sm_90a")
    assert any(RACE_WARNING in w for w in lowered.warnings), lowered.warnings
    assert nvcc.single_thread_shared_writes(lowered.source)


# Two blocks per SM on an H100 (228 KB of shared memory per SM, 1 KB of it reserved per block).
TWO_BLOCKS_SM90 = 113 * 1024


# Default schedules at the AOT build's dims (K = V = 128, W = 64, C = 256). The small dims
# `hola check` builds (W = 16: loops over fewer rows than a warp, where TileLang has no partial
# barrier to place) are checked for every kernel by tests/test_tilelang_nvcc.py, whose builds
# carry the same sync checks. The kernels of a prefill and of a decode step; the backward
# kernels' phases are checked at the small dims (lowering each at full size takes minutes).
# The lowerings land in the session's cache (cuda_build_cache), where the nvcc table's build
# of the scan's phases at these dims finds them.
CASES = [(kernel, None) for kernel in PREFILL + DECODE]
# The kernels held to two blocks per SM on sm_90a (a HOLA layer's prefill on GPUs).
TWO_BLOCK_KERNELS = PREFILL
_LOWERED: set = set()       # the session caches the cases were lowered into


@pytest.mark.slow
@needs_tilelang
@pytest.mark.parametrize("kernel,dims", CASES, ids=lambda c: c if isinstance(c, str) else ("small" if c else "aot"))
def test_cuda_dialect_lowers_without_races(kernel, dims, cuda_build_cache):
    from hola_dsl import kernels, spec
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime, schedule

    def phases(kernel, dims):            # the generated modules of every phase of a split
        sched = schedule(kernel, None, "sm_90a")
        traced = spec.trace(kernels.spec(kernel), sched, dims)
        return traced, [tilelang_runtime.load(kir, sched, "sm_90a", "cuda") for kir in traced]

    if cuda_build_cache not in _LOWERED:          # every case at once, over the CPUs
        nvcc.prelower([m for case in CASES for m in phases(*case)[1]], "sm_90a")
        _LOWERED.add(cuda_build_cache)
    traced, modules = phases(kernel, dims)
    for kir, module, lowered in zip(traced, modules, nvcc.lower_all(modules, "sm_90a")):
        assert not [w for w in lowered.warnings if RACE_WARNING in w or SERIAL_WARNING in w], (kir.name, lowered.warnings)
        assert nvcc.barrier_problems(lowered.source, threads=lowered.threads) == []
        assert nvcc.single_thread_shared_writes(lowered.source) == []
        assert lowered.sync_problems() == []
        source = open(module.__file__).read()
        assert "T.Parallel(1)" not in source           # no single-thread sections emitted at all
        if dims is None and kernel in TWO_BLOCK_KERNELS:   # K = V = 128, bfloat16: the real sizes
            assert lowered.dynamic_smem <= TWO_BLOCKS_SM90, (kir.name, lowered.dynamic_smem)
            if "T.Pipelined(" in source:               # its tile loads must stay asynchronous
                assert "cp_async_gs" in lowered.source, kir.name
