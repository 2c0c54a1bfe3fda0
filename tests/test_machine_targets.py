"""Target names (schedules/targets.py): what keys and database folders call a machine, and the
arch a device is to schedules and code generators, NVIDIA and AMD alike."""

from types import SimpleNamespace

import pytest
import torch

from schedules import targets
from schedules.targets import Target, cpu_machine, normalise_name


@pytest.mark.parametrize("raw, name", [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100"), ("NVIDIA A100-SXM4-80GB", "nvidia-a100"),
    ("NVIDIA GeForce RTX 4090", "nvidia-rtx-4090"), ("AMD Instinct MI300X", "amd-mi300x"),
    ("AMD EPYC 9654 96-Core Processor", "amd-epyc-9654"), ("Intel(R) Xeon(R) Platinum 8480+", "intel-xeon-platinum-8480"),
])
def test_normalised_device_names(raw, name):
    assert normalise_name(raw) == name


def test_target_parse_and_arch_seen_by_schedule_spaces():
    gpu = Target.parse("nvidia-h100/sm_90")
    assert (gpu.kind, gpu.arch, gpu.name) == ("cuda", "sm_90", "nvidia-h100/sm_90")
    assert Target.parse("amd-mi300x/gfx942").arch == "gfx942"
    cpu = Target.parse("amd-epyc/x86_64-avx512")
    assert (cpu.kind, cpu.arch) == ("cpu", "cpu")
    with pytest.raises(ValueError, match="expected DEVICE/ISA"):
        Target.parse("sm_90")


def test_this_cpu_has_a_path_safe_two_part_name():
    t = cpu_machine()
    assert t.kind == "cpu" and Target.parse(t.name) == t
    assert all(c.isalnum() or c in "-_./" for c in t.name)


@pytest.mark.parametrize("props, arch", [
    (SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, gcnArchName=""), "sm_90"),
    (SimpleNamespace(name="NVIDIA A100-SXM4-80GB", major=8, minor=0), "sm_80"),
    (SimpleNamespace(name="AMD Instinct MI300X", major=9, minor=4, gcnArchName="gfx942:sramecc+:xnack-"), "gfx942"),
])
def test_arch_and_machine_of_a_gpu_cuda_or_rocm(monkeypatch, props, arch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    targets._gpu_arch.cache_clear()
    targets.gpu_machine.cache_clear()
    try:
        assert targets.arch_of("cuda:0") == arch
        assert targets.machine_of("cuda:0").name == f"{normalise_name(props.name)}/{arch}"
    finally:
        targets._gpu_arch.cache_clear()
        targets.gpu_machine.cache_clear()
    assert targets.arch_of("cpu") == "cpu"
