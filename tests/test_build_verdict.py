"""What `hola build` fails: spills, shared memory beyond the target's, precisions the target's
compiler rejects; and every default schedule builds for the newer targets (sm_120, gfx90a, gfx950)
and, for the scan's backward, for float32 inputs (3xTF32 dots on NVIDIA)."""

import pytest

import schedules
from hola_dsl.backends.builds import BuildResult, judged
from schedules import ConfigError, targets


def _row(target="sm_90", spills=0, shared=1024):
    return BuildResult("k", target, {}, True, registers=100, spills=spills, shared=shared)


def test_spills_fail_a_build():
    r = judged(_row(spills=56))
    assert not r.ok and "spills registers (56 bytes" in r.error
    assert "56 spills" in judged(_row("gfx942", spills=56)).error


@pytest.mark.parametrize("target, shared, ok", [("sm_90", 232448, True), ("sm_90", 232449, False),
                                                ("sm_90a", 232449, False), ("sm_120", 101377, False),
                                                ("gfx942", 65536, True), ("gfx942", 65537, False),
                                                ("gfx950", 163840, True)])
def test_shared_memory_per_block(target, shared, ok):
    r = judged(_row(target, shared=shared))
    assert r.ok is ok
    if not ok:
        assert f"needs {shared} bytes of shared memory per block; {target} has {targets.shared_limit(target)}" in r.error


def test_a_failed_build_stays_failed():
    r = BuildResult("k", "sm_90", {}, False, error="boom")
    assert judged(r).error == "boom"


@pytest.mark.parametrize("kernel", ["delta_scan", "cache_read"])
@pytest.mark.parametrize("target, precision", [("gfx942", "tf32x3"), ("gfx90a", "tf32"), ("gfx950", "tf32"),
                                               ("gfx950", "tf32x3")])
def test_precisions_amd_rejects(kernel, target, precision):
    with pytest.raises(ConfigError, match=f"Triton rejects '{precision}' on {target}"):
        schedules.space(kernel, "triton").check({"dot_precision": precision}, target)


@pytest.mark.parametrize("kernel", ["delta_scan", "cache_read"])
def test_amd_defaults_are_accepted(kernel):
    space = schedules.space(kernel, "triton")
    assert space.check(None, "gfx90a")["dot_precision"] == "ieee"
    assert space.check(None, "gfx950")["dot_precision"] == "ieee"
    assert space.check({"dot_precision": "tf32"}, "gfx942")["dot_precision"] == "tf32"
    assert space.check({"dot_precision": "tf32x3"}, "sm_90")["dot_precision"] == "tf32x3"


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sm_120", "gfx90a", "gfx950"])
@pytest.mark.parametrize("kernel", ["delta_scan", "cache_select", "cache_read"])
def test_defaults_build_without_spills_on_newer_targets(kernel, target):
    from hola_dsl.backends.triton import aot

    rows = aot.build(kernel, target)
    assert rows and all(r.ok for r in rows), [(r.kernel, r.error) for r in rows if not r.ok]
    assert all(r.spills == 0 for r in rows)


@pytest.mark.slow
def test_scan_backward_float32_defaults_build_without_spills():
    """float32 operands split in two for 3xTF32 dots: the gradient kernel's 255 registers are
    the limit on NVIDIA (it spilled 464 to 556 bytes on sm_80 to sm_120 before)."""
    from hola_dsl.backends.triton import aot

    rows = aot.build("delta_scan_backward", "sm_90", dtype="float32")
    assert [r.kernel for r in rows][-1] == "delta_scan_backward_grads"
    assert all(r.schedule["dot_precision"] == "tf32x3" for r in rows)
    assert all(r.ok and r.spills == 0 for r in rows), [(r.kernel, r.spills, r.error) for r in rows]
