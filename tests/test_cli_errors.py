"""Bad input to the `hola` command ends in one line on stderr that names the argument, says what
was given and what was expected, with exit code 2 and no traceback; a bug ends in a traceback and
a line saying it is one."""

import json
import subprocess
import sys

import pytest
import torch

from tools.cli import main

EXIT_USAGE, EXIT_INTERNAL = 2, 70      # bad input; a bug (sysexits EX_SOFTWARE)

TINY = "B=1,T=8,H=1,K=8,V=8,W=4,C=8"


def one_line_error(capsys, argv, *expected) -> str:
    """Run `hola argv`; check the exit code, a single stderr line starting `hola CMD: error:` that
    holds every ``expected`` piece, and no traceback anywhere. Returns the line."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == EXIT_USAGE, (rc, out, err)
    assert len(lines) == 1, err
    prog = "hola" if argv[0] == "nope" else f"hola {argv[0]}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["diff", "--kernel", "delta_scan", "--shape", "B=1,T=64,H=2,K=0,V=64"], ["--shape", "K=0", ">= 1"]),
    (["diff", "--kernel", "delta_scan", "--shape", "B=1,T=0,H=2"], ["--shape", "T=0"]),
    (["diff", "--kernel", "delta_scan", "--shape", "B=1,T=-5,H=2"], ["--shape", "T=-5"]),
    (["diff", "--kernel", "cache_read", "--shape", "B=1,T=64,H=2,K=16,V=16,C=0"], ["--shape", "C=0"]),
    (["diff", "--kernel", "delta_scan", "--shape", "B=1,B=2"], ["--shape", "B given twice"]),
    (["diff", "--kernel", "delta_scan", "--shape", "B=99999999,T=99999999,H=2"], ["--shape", "GiB"]),
    (["diff", "--kernel", "delta_scan", "--device", "nope", "--shape", TINY], ["--device", "'nope'"]),
    (["diff", "--kernel", "delta_scan", "--device", "", "--shape", TINY], ["--device"]),
    (["diff", "--kernel", "delta_scan", "--config", "{bad", "--shape", TINY], ["--config", "not valid JSON", "{bad"]),
    (["diff", "--kernel", "delta_scan", "--config", "[1, 2]", "--shape", TINY], ["--config", "JSON object", "list"]),
    (["diff", "--kernel", "delta_scan", "--seed", "-1", "--shape", TINY], ["--seed", "-1"]),
    (["diff", "--kernel", "delta_scan", "--backend", "nope"], ["--backend", "'nope'"]),
    (["diff", "--kernel", "nope"], ["--kernel", "'nope'"]),
])
def test_diff_and_parser_errors_are_one_line(capsys, argv, expected):
    one_line_error(capsys, argv, *expected)


def test_unknown_command_is_one_line(capsys):
    one_line_error(capsys, ["nope"], "invalid choice: 'nope'")


def test_diff_cuda_device_on_a_cpu_machine(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(capsys, ["diff", "--kernel", "delta_scan", "--device", "cuda", "--shape", TINY],
                   "--device", "'cuda'", "expected cpu")


@pytest.mark.parametrize("argv, expected", [
    (["bench", "--impl", "nope"], ["--impl", "'nope'", "expected one of"]),
    (["bench", "--impl", ""], ["--impl", "''"]),
    (["bench", "--shape", "K=0"], ["--shape", "K=0"]),
    (["bench", "--impl", "reference", "--shape", TINY, "--threads", "100000"], ["--threads", "100000"]),
    (["bench", "--impl", "reference", "--shape", TINY, "--threads", "-2"], ["--threads", "got -2"]),
    (["bench", "--impl", "reference", "--shape", TINY, "--repeat", "0"], ["--repeat", "got 0"]),
])
def test_bench_errors_are_one_line(capsys, argv, expected):
    one_line_error(capsys, argv, *expected)


def test_bench_with_nothing_that_runs_here(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(capsys, ["bench", "--impl", "triton", "--shape", TINY], "--impl", "nothing to time", "triton")


def test_output_paths_are_checked_before_the_work(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(capsys, ["bench", "--impl", "reference", "--shape", TINY, "--json", str(tmp_path)],
                   "--json", "is a directory")
    one_line_error(capsys, ["bench", "--impl", "reference", "--shape", TINY, "--json", str(a_file / "x.json")],
                   "--json", "not an existing directory")


@pytest.fixture
def checkpoint(tmp_path):
    """A small recall-task checkpoint to corrupt."""
    from model import HOLAConfig, HOLALM, tasks
    config = HOLAConfig(vocab_size=tasks.VOCAB_SIZE, d_model=16, n_layers=1, n_heads=1, head_k_dim=8,
                        head_v_dim=8, cache_capacity=4, cache_block=32, chunk_size=32)
    HOLALM(config).save(tmp_path / "ckpt")
    return tmp_path / "ckpt"


EVAL = ["--task", "passkey", "--lengths", "32", "--samples", "2"]


def test_eval_names_a_corrupt_weights_file(capsys, checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    one_line_error(capsys, ["eval", str(checkpoint), *EVAL], str(weights), "safetensors")


def test_eval_names_a_corrupt_config(capsys, checkpoint):
    (checkpoint / "config.json").write_text("{not json")
    one_line_error(capsys, ["eval", str(checkpoint), *EVAL], str(checkpoint / "config.json"))
    (checkpoint / "config.json").write_text(json.dumps(dict(d_model=16, norm_eps=-1.0)))
    one_line_error(capsys, ["eval", str(checkpoint), *EVAL], str(checkpoint / "config.json"), "norm_eps")


@pytest.mark.parametrize("argv, expected", [
    (["--threads", "-1"], ["--threads", "-1"]),
    (["--samples", "0"], ["--samples", "got 0"]),
    (["--lengths", "abc"], ["--lengths", "'abc'"]),
    (["--lengths", "8"], ["--lengths", "'8'"]),
    (["--backend", "nope"], ["backend", "'nope'"]),
])
def test_eval_option_errors_are_one_line(capsys, checkpoint, argv, expected):
    one_line_error(capsys, ["eval", str(checkpoint), *EVAL, *argv], *expected)


def test_eval_plot_that_cannot_be_written(capsys, checkpoint, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(capsys, ["eval", str(checkpoint), *EVAL, "--plot", str(a_file / "p.png")], "--plot")


def test_internal_error_shows_traceback_and_says_it_is_a_bug(capsys, monkeypatch):
    from tools.commands import env

    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(env, "run", broken)
    assert main(["env"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err
    assert "bug" in err.splitlines()[-1] and "hola env" in err.splitlines()[-1]


def test_top_level_help_imports_no_torch():
    code = ("import sys\nfrom tools.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
    assert "diff" in out and "build" in out


def test_help_texts_read_without_importing_match_the_modules():
    import importlib

    from tools.cli import command_summary
    from tools.commands import COMMANDS
    for name in COMMANDS:
        module = importlib.import_module(f"tools.commands.{name}")
        assert command_summary(name) == (module.NAME, module.HELP)


def test_a_cache_dir_that_is_a_file_is_named(capsys, monkeypatch, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setenv("HOLA_CACHE_DIR", str(a_file))
    one_line_error(capsys, ["diff", "--kernel", "cache_select", "--backend", "tilelang", "--shape", TINY],
                   "HOLA_CACHE_DIR", str(a_file))
