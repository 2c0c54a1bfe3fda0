"""The Triton version gate for datacenter Blackwell (hola_dsl/backends/triton/versions.py)."""

import pytest

from hola_dsl.backends.triton import versions


@pytest.mark.parametrize("target", ["sm_100", "sm_100a", "sm_103", "sm_110"])
@pytest.mark.parametrize("version", ["3.6.0", "3.8.1", "3.8.0+git1234", "2.3.1", "nightly"])
def test_old_triton_refused_on_datacenter_blackwell(target, version):
    why = versions.problem(target, version)
    assert why is not None and "triton>=3.9" in why and target in why


@pytest.mark.parametrize("target", ["sm_100", "sm_103"])
@pytest.mark.parametrize("version", ["3.9.0", "3.9.1+gitabc", "3.10.0", "4.0.0"])
def test_fixed_triton_accepted(target, version):
    assert versions.problem(target, version) is None


@pytest.mark.parametrize("target", ["sm_80", "sm_90", "sm_120", "gfx942", "interpreter"])
def test_other_targets_any_version(target):
    assert versions.problem(target, "3.0.0") is None
