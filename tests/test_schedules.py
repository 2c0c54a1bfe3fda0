"""The schedule-space registry and the reference backend's space."""

import pytest

import schedules
from schedules import Knob, Space


def test_reference_scan_space_is_registered_with_a_legal_default():
    space = schedules.space("delta_scan", "reference")
    legal = list(space.legal("cpu", {"K": 128, "V": 128}))
    assert [c["chunk_size"] for c in legal] == [16, 32, 64, 128]
    assert space.default("cpu") in legal
    assert space.default("sm_90") == {"chunk_size": 64}
    assert ("delta_scan", "reference") in schedules.registered()
    assert schedules.has_space("cache_read", "reference")


def test_every_registered_space_has_a_legal_default_for_cpu_and_gpu_targets():
    for kernel, backend in schedules.registered():
        space = schedules.space(kernel, backend)
        assert (space.kernel, space.backend) == (kernel, backend)
        for arch in ("cpu", "sm_90"):
            default = space.default(arch)
            assert not space.violations(default, arch, {"K": 128, "V": 128, "W": 64, "C": 256}), (kernel, backend, arch)


def test_unknown_backend_or_kernel_names_what_is_registered():
    with pytest.raises(KeyError, match=r"backends with a 'delta_scan' space: \[.*'reference'"):
        schedules.space("delta_scan", "no-such-backend")
    assert not schedules.has_space("delta_scan", "no-such-backend")
    with pytest.raises(KeyError, match="no schedule space for kernel 'nope'"):
        schedules.space("nope", "reference")


def test_violations_name_the_knob_and_the_legal_values():
    space = schedules.space("delta_scan", "reference")
    assert space.violations({"chunk_size": 48}, "cpu", {}) == ["chunk_size: got 48, expected one of [16, 32, 64, 128]"]
    assert "block: not a knob" in space.violations({"chunk_size": 64, "block": 1}, "cpu", {})[0]


def test_constraints_per_target_filter_the_legal_set():
    def smem(config, target, dims):
        if target.startswith("sm_") and config["BK"] * dims["K"] * 4 > 64 * 1024:
            return f"BK={config['BK']} with K={dims['K']} needs more than 64 KiB of shared memory"
        return None

    space = Space("x", "y", (Knob("BK", (64, 128, 256)),), {"*": {"BK": 64}}, (smem,))
    assert [c["BK"] for c in space.legal("sm_90", {"K": 128})] == [64, 128]
    assert [c["BK"] for c in space.legal("cpu", {"K": 128})] == [64, 128, 256]
