"""Ahead-of-time Triton builds without a GPU: every kernel's default sm_90 schedule compiles
with zero register spills (for K = V = 128, W = 64, C = 256, bfloat16; every phase of the scan's
split), and an AMD build works. tests/test_scan_phases.py covers the scan's phases on every target."""

import os

import pytest

triton = pytest.importorskip("triton")

from hola_dsl.backends.triton import aot  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))


def _has_backend(name: str) -> bool:
    try:
        from triton.backends import backends
        return name in backends
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_backend("nvidia"), reason="triton built without its NVIDIA backend")
@pytest.mark.parametrize("kernel", ["delta_scan", "cache_select", "cache_read"])
def test_sm90_default_schedule_has_no_spills(kernel):
    for r in aot.build(kernel, "sm_90"):
        assert r.ok, r.error
        assert r.registers and 0 < r.registers <= 255
        assert r.spills == 0, f"{r.kernel} spills {r.spills} bytes on sm_90 with {r.schedule}"
        assert r.shared is not None


@pytest.mark.slow
@pytest.mark.skipif(not _has_backend("amd"), reason="triton built without its AMD backend")
def test_gfx942_build_reports_resources():
    rows = aot.build("cache_select", "gfx942")
    assert [r.kernel for r in rows] == ["cache_select_blocks", "cache_select_merge"]    # the GPU split
    for r in rows:
        assert r.ok, r.error
        assert r.registers and r.registers > 0 and r.spills == 0


def test_a_split_scan_is_every_phase_with_its_own_warps():
    """What a build traces is the plan's launches (on meta tensors): the scan's default sm_90
    split is three kernels, the fused split one; each phase's source takes its own warps (the
    prepare phase's knob prepare_warps, 8 by default on NVIDIA in bf16)."""
    import torch

    from hola_dsl import kernels, spec
    from hola_dsl.backends import triton as triton_backend

    sched = triton_backend.schedule("delta_scan", None, "sm_90", torch.bfloat16)
    traced = spec.trace(kernels.spec("delta_scan"), sched)
    assert [k.name for k in traced] == ["delta_scan_prepare", "delta_scan_recur", "delta_scan_output"]
    assert [k.name for k in spec.trace(kernels.spec("delta_scan"), {**sched, "split": "fused"})] == ["delta_scan"]
    warps = {k.name: triton_backend.lower.source_schedule(sched, k.name)["num_warps"] for k in traced}
    assert warps == {"delta_scan_prepare": sched["prepare_warps"], "delta_scan_recur": sched["num_warps"],
                     "delta_scan_output": sched["num_warps"]} and sched["prepare_warps"] != sched["num_warps"]
    assert "NUM_WARPS = 8" in triton_backend.emit(traced[0], sched, "sm_90")[1]


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="unknown target"):
        aot.gpu_target("sm90")
