"""Ahead-of-time Triton builds without a GPU: every kernel's default sm_90 schedule compiles
with zero register spills (for K = V = 128, W = 64, C = 256, bfloat16; every phase of the scan's
split), and an AMD build works. tests/test_scan_phases.py covers the scan's phases on every target."""

import os

import pytest

triton = pytest.importorskip("triton")

from hola_dsl import aot  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))


def _has_backend(name: str) -> bool:
    try:
        from triton.backends import backends
        return name in backends
    except Exception:
        return False


@pytest.mark.skipif(not _has_backend("nvidia"), reason="triton built without its NVIDIA backend")
@pytest.mark.parametrize("kernel", ["delta_scan", "cache_select", "cache_read"])
def test_sm90_default_schedule_has_no_spills(kernel):
    for r in aot.build_pipeline(kernel, "sm_90"):
        assert r.ok, r.error
        assert r.registers and 0 < r.registers <= 255
        assert r.spills == 0, f"{r.kernel} spills {r.spills} bytes on sm_90 with {r.schedule}"
        assert r.shared is not None


@pytest.mark.skipif(not _has_backend("amd"), reason="triton built without its AMD backend")
def test_gfx942_build_reports_resources():
    r = aot.build("cache_select", "gfx942")
    assert r.ok, r.error
    assert r.registers and r.registers > 0


def test_a_split_kernel_needs_its_phase_named():
    sched = aot.default_schedule("delta_scan", "sm_90")
    assert aot.phases("delta_scan", sched) == ["delta_scan_prepare", "delta_scan_recur", "delta_scan_output"]
    assert aot.phases("delta_scan", {**sched, "split": "fused"}) == [None]
    with pytest.raises(ValueError, match="delta_scan_recur"):
        aot.specialise("delta_scan", sched)
    assert aot.specialise("delta_scan", sched, phase="delta_scan_recur").name == "delta_scan_recur"


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="unknown target"):
        aot.gpu_target("sm90")
