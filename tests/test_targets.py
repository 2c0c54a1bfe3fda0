"""One table names the targets of each backend: `hola emit` and `hola build` refuse the others
(instead of emitting another dialect), and `hola check` decides what runs here in one place,
whether a backend was named or not. Their other arguments fail in one line too."""

import pytest
import torch

from hola_dsl import backends
from schedules import targets
from tools.cli import main

EXIT_USAGE = 2
from tools.commands import check


def error_line(capsys, argv) -> str:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_each_backend_names_its_targets():
    assert "cpu" in targets.for_backend("tilelang") and "gfx942" not in targets.for_backend("tilelang")
    assert "interpreter" in targets.for_backend("triton") and "sm_90a" not in targets.for_backend("triton")
    assert "interpreter" not in targets.for_backend("triton", gpu_only=True)
    assert "cpu" not in targets.for_backend("tilelang", gpu_only=True)
    for backend, defaults in targets.DEFAULT_BUILD.items():
        assert set(defaults) <= set(targets.for_backend(backend, gpu_only=True))
    assert targets.CHECK_NVCC_ARCH in targets.for_backend("tilelang", gpu_only=True)
    assert targets.triton_twin("sm_90a") == "sm_90" and targets.triton_twin("cpu") is None


@pytest.mark.parametrize("argv, expected", [
    (["emit", "--kernel", "delta_scan", "--backend", "tilelang", "--target", "gfx942"],
     ["--target", "tilelang", "'gfx942'", "a triton and ir target"]),
    (["emit", "--kernel", "delta_scan", "--backend", "triton", "--target", "nope"], ["--target", "'nope'"]),
    (["emit", "--kernel", "delta_scan", "--backend", "triton", "--target", ""], ["--target", "''"]),
    (["emit", "--kernel", "delta_scan", "--backend", "triton", "--target", "cpu"], ["--target", "tilelang target"]),
    (["emit", "--kernel", "delta_scan", "--backend", "ir", "--target", "sm_90a"], ["--target", "'sm_90a'"]),
    (["build", "--targets", "sm_90a", "--kernel", "cache_select"], ["--targets", "'sm_90a'", "tilelang target"]),
    (["build", "--targets", "gfx942x", "--kernel", "cache_select"], ["--targets", "'gfx942x'"]),
    (["build", "--targets", "interpreter", "--kernel", "cache_select"], ["--targets", "'interpreter'"]),
    (["build", "--targets", " , ", "--kernel", "cache_select"], ["--targets", "expected comma-separated"]),
    (["build", "--backend", "tilelang", "--targets", "gfx942"], ["--targets", "tilelang", "'gfx942'"]),
    (["build", "--backend", "tilelang", "--targets", "cpu"], ["--targets", "'cpu'"]),
])
def test_emit_and_build_refuse_targets_their_backend_lacks(capsys, argv, expected):
    line = error_line(capsys, argv)
    for piece in expected:
        assert piece in line, (piece, line)


def test_emit_tilelang_cpu_and_cuda_dialects(capsys):
    assert main(["emit", "--kernel", "cache_select", "--backend", "tilelang", "--target", "cpu"]) == 0
    assert "import tilelang.cpu.language as T" in capsys.readouterr().out
    assert main(["emit", "--kernel", "cache_select", "--backend", "tilelang", "--target", "sm_90"]) == 0
    assert "T.Kernel(" in capsys.readouterr().out


def test_check_names_an_unrunnable_backend_with_the_reason_plain_check_skips_it(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = backends.runs_on("triton", "cpu")
    assert reason is not None
    assert main(["check", "--kernel", "cache_select", "--backend", "reference"]) == 0
    capsys.readouterr()
    checked, skipped = check.plan(None)
    assert "triton" not in checked and skipped["triton"] == reason
    line = error_line(capsys, ["check", "--backend", "triton", "--kernel", "cache_select"])
    assert line == f"hola check: error: --backend: triton cannot run here: {reason}"


def test_check_runs_triton_on_the_device_it_runs_here(monkeypatch):
    """In the interpreter Triton checks CPU tensors; on a GPU without it, CUDA tensors (plain
    `hola check` used to hand it CPU tensors there, a certain failure)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert check.device_for("triton") == ("cpu", None)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check.device_for("triton") == ("cuda", None)
    assert check.device_for("reference") == ("cpu", None)
    assert "triton" not in [b.name for b in backends.available("cpu")]


@pytest.mark.parametrize("argv, expected", [
    (["emit", "--kernel", "delta_scan", "--shape", "K=0"], ["--shape", "K=0"]),
    (["emit", "--kernel", "delta_scan", "--config", "[1]"], ["--config", "JSON object"]),
    (["emit", "--kernel", "delta_scan", "--config", "{bad"], ["--config", "not valid JSON"]),
    (["build", "--kernel", "cache_select", "--targets", "sm_90", "--config", "{bad"], ["--config", "not valid JSON"]),
    (["build", "--kernel", "cache_select", "--targets", "sm_90", "--config", "[1]"], ["--config", "JSON object"]),
])
def test_emit_and_build_errors_are_one_line(capsys, argv, expected):
    line = error_line(capsys, argv)
    for piece in expected:
        assert piece in line, (piece, line)


def test_check_unknown_backend_and_bad_seed_are_one_line(capsys):
    assert "--backend: unknown backend 'nope'" in error_line(capsys, ["check", "--backend", "nope"])
    assert "--seed" in error_line(capsys, ["check", "--seed", "99999999999999999999", "--backend", "reference"])


def test_emit_out_must_be_a_writable_directory(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file" in error_line(capsys, ["emit", "--kernel", "delta_scan", "--out", str(a_file)])
    assert "empty" in error_line(capsys, ["emit", "--kernel", "delta_scan", "--out", ""])
