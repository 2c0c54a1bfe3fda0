"""Tuning real kernels end to end: `hola tune` on the reference scan (and the TileLang CPU scan
when that backend is available), and a backend with deliberately broken configs."""

import math
import time

import pytest
import torch

from autotune import db
from schedules import database, lookup
from autotune.evaluate import KernelEvaluator
from autotune.measure import MeasureSettings
from schedules.targets import cpu_machine
from autotune.tuner import TuneRequest, tune
from hola_dsl import backends
from hola_dsl.backends import Backend
from hola_dsl.testing import Shape
from schedules import Knob, Space, has_space, overlay
from tools.cli import main as hola

FAST = MeasureSettings(warmup_calls=1, warmup_s=0.0, target_s=0.05, min_repeats=3, max_repeats=20)


def _tune_cli_twice(backend, shape, tmp_path, monkeypatch, capsys, extra=()):
    path = tmp_path / "db"
    argv = ["tune", "--kernel", "delta_scan", "--backend", backend, "--shape", shape, "--db", str(path),
            "--rounds", "3", "--measure-seconds", "0.1", "--no-progress", "--max-spread", "inf", *extra,
            "--plot", str(tmp_path / "history.png")]
    assert hola(argv) == 0
    out = capsys.readouterr().out
    [record] = db.Store(path).records()
    assert record["key"]["target"] == cpu_machine().name and record["key"]["backend"] == backend
    assert record["default_time_s"] is not None and record["time_s"] <= record["default_time_s"]
    assert record["search"]["ok"] >= 1 and "record written to" in out and (tmp_path / "history.png").exists()
    # The second run of the same key reuses the record: no candidate is evaluated again.
    monkeypatch.setattr(KernelEvaluator, "evaluate", lambda *a: pytest.fail("re-tuned a key the database has"))
    assert hola(argv[:-2]) == 0
    assert "reusing the database record" in capsys.readouterr().out
    assert db.Store(path).records() == [record]
    # hola_dsl.ops now finds it.
    monkeypatch.setenv(database.ENV_VAR, str(path))
    lookup.clear_cache()
    s = Shape.parse(shape)
    assert lookup.lookup("delta_scan", backend, cpu_machine().name, torch.float32, {"K": s.K, "V": s.V}, s.T) == record["config"]
    return record


@pytest.mark.slow
def test_hola_tune_reference_scan_beats_or_matches_the_default_and_is_reused(tmp_path, monkeypatch, capsys):
    _tune_cli_twice("reference", "B=1,T=192,H=2,K=16,V=16", tmp_path, monkeypatch, capsys)


@pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None or not has_space("delta_scan", "tilelang"),
                    reason="TileLang backend or its delta_scan schedule space is not available here")
@pytest.mark.slow
def test_hola_tune_tilelang_cpu_scan(tmp_path, monkeypatch, capsys):
    # Each candidate is a C compile of some seconds: a few trials show the flow, not the optimum.
    record = _tune_cli_twice("tilelang", "B=1,T=256,H=2,K=32,V=32", tmp_path, monkeypatch, capsys, extra=("--trials", "3"))
    assert record["search"]["sampler"] == "tpe" and record["search"]["trials"] == 3 and record["ir_hash"]


def _faulty_run(kernel, *inputs, config, **options):
    """The reference scan, broken as the config's ``mode`` asks."""
    mode = config["mode"]
    if mode == "raise":
        raise RuntimeError("shared memory exceeded: 300 KiB > 228 KiB")
    if mode == "hang":
        time.sleep(10.0)
    o, m, s = backends.get("reference").run(kernel, *inputs, config={"chunk_size": config["chunk_size"]}, **options)
    return (o * 1.01 if mode == "wrong" else o), m, s


@pytest.mark.slow
def test_broken_configs_are_recorded_as_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    faulty = Backend("faulty", "reference scan with broken schedules", _faulty_run)
    monkeypatch.setitem(backends.BACKEND_MODULES, "faulty", "(test)")
    monkeypatch.setitem(backends._loaded, "faulty", faulty)
    space = Space("delta_scan", "faulty", (Knob("mode", ("ok", "raise", "wrong", "hang")), Knob("chunk_size", (32, 64))),
                  {"*": {"mode": "ok", "chunk_size": 64}})
    with overlay(space):
        result = tune(TuneRequest("delta_scan", "faulty", Shape(B=1, T=100, H=1, K=16, V=16), device="cpu",
                                  space=space, db_path=str(tmp_path / "db"), compile_timeout=3.0, settings=FAST,
                                  rounds=2, progress=False, max_spread=math.inf))
        stored = db.Store(tmp_path / "db").records()
    assert result.counts["trials"] == 8 and result.counts["ok"] == 2
    assert result.counts["wrong"] == 2 and result.counts["failed"] == 4
    errors = {(f["config"]["mode"], f["status"]): f["error"] for f in result.record["failures"]}
    assert "shared memory exceeded" in errors[("raise", "failed")]
    assert errors[("hang", "failed")].startswith("timeout")
    assert "relative error" in errors[("wrong", "wrong")]
    assert result.record["config"]["mode"] == "ok"
    assert stored[0]["config"]["mode"] == "ok"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_timing_uses_device_events():
    from autotune.measure import measure
    a = torch.randn(2048, 2048, device="cuda")
    small = measure(lambda: a @ a, "cuda", FAST).median
    big = measure(lambda: (a @ a) @ a, "cuda", FAST).median
    assert 0 < small < big < 1.0


CRASHY = '''
import os, signal, time
from autotune.evaluate import OK, Outcome
from autotune.measure import Timing

class Crashy:
    device = "cpu"
    def evaluate(self, config, seed):
        if config["mode"] == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if config["mode"] == "hang":
            time.sleep(60)
        return Outcome(OK, {"fast": 1e-3, "slow": 2e-3}[config["mode"]], 0.0, 0.0)
    def remeasure(self, configs, rounds):
        return [Timing([{"fast": 1e-3, "slow": 2e-3}[c["mode"]]] * rounds) for c in configs]

def make():
    return Crashy()
'''


@pytest.mark.slow
def test_isolated_worker_survives_crashing_and_hanging_candidates(tmp_path, monkeypatch):
    from autotune.isolate import IsolatedEvaluator
    (tmp_path / "crashy_candidates.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    space = Space("delta_scan", "crashy", (Knob("mode", ("slow", "segfault", "hang", "fast")),), {"*": {"mode": "slow"}})
    ev = IsolatedEvaluator("crashy_candidates:make", timeout=3.0)
    with overlay(space):
        result = tune(TuneRequest("delta_scan", "crashy", Shape(B=1, T=64, H=1, K=8, V=8), device="cpu",
                                  target="test-box/x86_64", space=space, db_path=str(tmp_path / "db"), progress=False),
                      evaluator=ev)
    errors = {f["config"]["mode"]: f["error"] for f in result.record["failures"]}
    assert errors["segfault"].startswith("crash: the worker process died (exit code -11)")
    assert errors["hang"].startswith("timeout")
    assert result.counts["ok"] == 2 and result.record["config"] == {"mode": "fast"} and ev.restarts == 2
