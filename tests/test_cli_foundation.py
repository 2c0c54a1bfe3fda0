"""`hola check` and `hola env` through the console entry point."""

import pytest

from tools.cli import main


@pytest.mark.slow
def test_check_reference_passes(capsys):
    assert main(["check", "--backend", "reference", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for kernel in ("delta_scan", "cache_select", "cache_read"):
        assert f"{kernel:<13} reference" in out
    assert "FAIL" not in out and "all passed" in out


@pytest.mark.slow
def test_check_reports_a_failing_backend(capsys, monkeypatch):
    from hola_dsl import backends
    ref = backends.get("reference")
    broken = backends.Backend(name="reference", description="broken",
                              run=lambda kernel, *a, **kw: ref.run(kernel, *a, **kw) * 1.001,
                              devices=ref.devices)
    monkeypatch.setitem(backends._loaded, "reference", broken)
    assert main(["check", "--backend", "reference", "--kernel", "cache_read"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_unknown_backend_fails(capsys):
    assert main(["check", "--backend", "nope", "--kernel", "cache_select"]) == 2
    assert "--backend: unknown backend 'nope'" in capsys.readouterr().err


def test_env_lists_facts(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for label in ("torch", "triton", "tilelang", "nvcc", "backend reference"):
        assert label in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: hola" in capsys.readouterr().out
