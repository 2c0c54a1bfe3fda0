"""The tuner's logic on replayed timings (no kernel runs, no hardware): search, failure
bookkeeping, the re-measure of finalists, warm start, reuse, budgets and early stopping."""

import time

import pytest

import schedules
from autotune import db
from schedules.key import TuningKey
from autotune.replay import ReplayEvaluator, config_id
from autotune.tuner import TuneRequest, tune
from hola_dsl.testing import Shape
from schedules import Knob, Space

TARGET = "replay-box/x86_64-avx512"
SHAPE = Shape(B=1, T=1000, H=2, K=64, V=64)


def small_space():
    def no_big_a_with_y(config, target, dims):
        return "A=8 with B=y exceeds the register budget" if config["A"] == 8 and config["B"] == "y" else None
    return Space("delta_scan", "replay", (Knob("A", (1, 2, 4, 8)), Knob("B", ("x", "y"))),
                 {"*": {"A": 2, "B": "x"}}, (no_big_a_with_y,))


def big_space():
    return Space("delta_scan", "replay-big", (Knob("A", (1, 2, 4, 8, 16, 32, 64, 128)),
                                              Knob("B", (1, 2, 4, 8, 16, 32, 64, 128)), Knob("C", ("p", "q", "r", "s"))),
                 {"*": {"A": 8, "B": 8, "C": "p"}})


@pytest.fixture(autouse=True)
def replay_spaces():
    """The database takes records only of backends with a registered space (docs/design.md)."""
    with schedules.overlay(small_space()), schedules.overlay(big_space()):
        yield


def bowl(config):
    """A smooth landscape with its minimum at A=32, B=4, C="r"."""
    a, b = config["A"].bit_length(), config["B"].bit_length()
    return 1e-3 * (1 + 0.1 * (a - 6) ** 2 + 0.1 * (b - 3) ** 2 + {"p": 0.3, "q": 0.2, "r": 0.0, "s": 0.1}[config["C"]])


def run(space, evaluator, tmp_path, **kw):
    kw.setdefault("progress", False)
    logs = []
    result = tune(TuneRequest("delta_scan", space.backend, SHAPE, device="cpu", target=TARGET, space=space,
                              db_path=str(tmp_path / "db"), **kw), evaluator=evaluator, log=logs.append)
    return result, logs


def test_exhaustive_search_finds_the_best_and_records_every_kind_of_failure(tmp_path):
    table = {config_id({"A": a, "B": b}): 1e-3 * (1 + abs(a - 4)) * (1.5 if b == "y" else 1) for a in (1, 2, 4, 8) for b in "xy"}
    table[config_id({"A": 4, "B": "y"})] = "fail"
    table[config_id({"A": 1, "B": "x"})] = "wrong"
    ev = ReplayEvaluator(table)
    result, logs = run(small_space(), ev, tmp_path)
    assert result.record["config"] == {"A": 4, "B": "x"}
    assert result.record["time_s"] == pytest.approx(1e-3)
    assert result.record["default_time_s"] == pytest.approx(3e-3) and result.record["speedup_vs_default"] == pytest.approx(3)
    assert result.counts == {"ok": 5, "failed": 1, "wrong": 1, "illegal": 1, "trials": 8, "duplicates": 0}
    assert result.record["search"]["sampler"] == "grid"
    assert {(config_id(f["config"]), f["status"]) for f in result.record["failures"]} == {
        (config_id({"A": 4, "B": "y"}), "failed"), (config_id({"A": 1, "B": "x"}), "wrong"),
        (config_id({"A": 8, "B": "y"}), "illegal")}
    assert len(ev.calls) == 7 and {"A": 8, "B": "y"} not in ev.calls     # illegal configs never run
    assert any(line.startswith("rank") for line in logs) and "1 illegal" in logs[1]
    [stored] = db.Store(tmp_path / "db").records()
    assert stored["config"] == {"A": 4, "B": "x"} and stored["id"] == result.key.id


def test_tpe_finds_a_near_optimal_config_in_a_large_space(tmp_path):
    space = big_space()
    ev = ReplayEvaluator({config_id(c): bowl(c) for c in space.legal("cpu", {})})
    result, _ = run(space, ev, tmp_path, trials=60, seed=0)
    best = min(bowl(c) for c in space.legal("cpu", {}))
    times = sorted(bowl(c) for c in space.legal("cpu", {}))
    assert result.record["search"]["sampler"] == "tpe"
    assert result.trials[0]["config"] == space.default("cpu")             # warm start: the default first
    assert result.record["time_s"] <= times[len(times) // 50]              # within the best 2% of 256
    assert result.record["time_s"] >= best and len(result.trials) <= 60


def test_interleaved_remeasure_decides_not_a_lucky_trial(tmp_path):
    class Lucky(ReplayEvaluator):
        def evaluate(self, config, seed):
            out = super().evaluate(config, seed)
            if config == {"A": 1, "B": "x"}:      # one noisy trial looked 10x faster than it is
                out.time_s /= 10
            return out

    table = {config_id({"A": a, "B": b}): 1e-3 * a for a in (1, 2, 4, 8) for b in "xy"}
    table[config_id({"A": 1, "B": "x"})] = 1.5e-3
    result, _ = run(small_space(), Lucky(table), tmp_path, finalists=3)
    assert result.record["config"] == {"A": 1, "B": "y"}
    assert [f["config"] for f in result.record["finalists"]][:2] == [{"A": 1, "B": "y"}, {"A": 1, "B": "x"}]


def test_second_tune_of_the_same_key_reuses_the_record_and_force_remembers_failures(tmp_path):
    table = {config_id({"A": a, "B": b}): 1e-3 * a for a in (1, 2, 4, 8) for b in "xy"}
    table[config_id({"A": 2, "B": "y"})] = "fail"
    first, _ = run(small_space(), ReplayEvaluator(table), tmp_path)
    again = ReplayEvaluator(table)
    second, logs = run(small_space(), again, tmp_path)
    assert second.reused and again.calls == [] and second.record["config"] == first.record["config"]
    assert "reusing the database record" in logs[0]
    # A shape in the same T bucket is the same key; a different bucket is tuned anew.
    assert tune(TuneRequest("delta_scan", "replay", Shape(B=1, T=1024, H=2, K=64, V=64), device="cpu", target=TARGET,
                            space=small_space(), db_path=str(tmp_path / "db")), evaluator=again).reused
    forced = ReplayEvaluator(table)
    run(small_space(), forced, tmp_path, force=True)
    assert {"A": 2, "B": "y"} not in forced.calls and len(forced.calls) == 6   # the failure was remembered


def test_warm_start_tries_the_winners_of_nearby_buckets_first(tmp_path):
    space = big_space()
    ev = ReplayEvaluator({config_id(c): bowl(c) for c in space.legal("cpu", {})})
    near = Shape(B=1, T=4000, H=2, K=64, V=64)
    seeded = {"A": 32, "B": 4, "C": "r"}
    key = TuningKey.make("delta_scan", space.backend, TARGET, "float32", {"K": 64, "V": 64}, near.T)
    db.Store(tmp_path / "db").add([{"key": key.to_json(), "config": seeded, "time_s": 1e-3}])
    result, _ = run(space, ev, tmp_path, trials=5)
    assert [t["config"] for t in result.trials[:2]] == [space.default("cpu"), seeded]
    assert result.record["config"] == seeded


def test_early_stopping_and_the_time_budget(tmp_path):
    space = big_space()
    flat = ReplayEvaluator({config_id(c): 1e-3 for c in space.legal("cpu", {})})
    result, _ = run(space, flat, tmp_path, trials=100, patience=6)
    assert len(result.trials) == 7                       # the first, then 6 without a 1% gain

    class Slow(ReplayEvaluator):
        def evaluate(self, config, seed):
            time.sleep(0.05)
            return super().evaluate(config, seed)

    t0 = time.perf_counter()
    result, _ = run(space, Slow({config_id(c): bowl(c) for c in space.legal("cpu", {})}), tmp_path, trials=100,
                    timeout=0.5, force=True)
    assert time.perf_counter() - t0 < 5 and 3 <= len(result.trials) < 20


def test_nothing_passes_means_no_record(tmp_path):
    result, logs = run(small_space(), ReplayEvaluator({}), tmp_path)
    assert result.record is None and result.counts["failed"] == 7 and "nothing written" in logs[-1]
    assert db.Store(tmp_path / "db").records() == []


def test_plot_of_the_history(tmp_path):
    from autotune.plot import plot_history
    table = {config_id({"A": a, "B": b}): 1e-3 * a for a in (1, 2, 4, 8) for b in "xy"}
    table[config_id({"A": 2, "B": "y"})] = "fail"
    result, _ = run(small_space(), ReplayEvaluator(table), tmp_path)
    path = plot_history(result.trials, tmp_path / "history.png", title=result.key.id)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
