"""A shared tuning database is untrusted input (docs/design.md): configs are checked against
their space before anything uses them, record keys never become paths outside the database,
a bad record or file is skipped with one warning and never stops a kernel call, writes keep
the file's mode and leave no litter, noisy timings are not written, and the `hola tune` and
`hola db` commands answer bad input with one line naming the argument."""

import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

import schedules
from autotune import db
from schedules import database, lookup
from schedules.key import TuningKey
from autotune.measure import Timing
from autotune.replay import ReplayEvaluator, config_id
from schedules.targets import cpu_machine
from autotune.tuner import TuneRequest, tune
from hola_dsl import backends, ops
from hola_dsl.testing import Shape, scan_inputs
from schedules import Knob, Space
from test_tuning_db import record
from tools.cli import main as hola

HERE = cpu_machine().name
SCAN = Shape(B=1, T=40, H=1, K=8, V=8)


@pytest.fixture(autouse=True)
def fresh_cache():
    lookup.clear_cache()
    yield
    lookup.clear_cache()


def _here(**kw):
    """A record ops would find for SCAN on this CPU (reference backend, chunk 16)."""
    kw.setdefault("config", {"chunk_size": 16})
    return record(T=SCAN.T, target=HERE, dims={"K": 8, "V": 8}, **kw)


def _write(path: Path, records: list, raw: str = None) -> Path:
    """A database file holding ``records`` (JSON text of NaN/Infinity allowed) or raw text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = raw if raw is not None else json.dumps({"format": database.FORMAT, "version": 1, "records": records})
    path.write_text(text)
    return path


def _chunks_used(monkeypatch):
    from hola_dsl.backends.reference import FUNCTIONS
    seen = []
    real = FUNCTIONS["delta_scan"]
    monkeypatch.setitem(FUNCTIONS, "delta_scan", lambda *a, **kw: seen.append(kw["chunk_size"]) or real(*a, **kw))
    return seen


# ------------------------------------------------------------------------------------------------
# 1. configs are checked against their space, strictly, in one place

@pytest.mark.parametrize("value", [True, 64.0, "64", 0, 48, None, [64], {"x": 1}])
def test_space_check_is_strict_about_types_and_values(value):
    space = schedules.space("delta_scan", "reference")
    with pytest.raises(schedules.ConfigError, match=r"config: chunk_size: got .*expected one of \[16, 32, 64, 128\]") as exc:
        space.check({"chunk_size": value}, "cpu")
    assert exc.value.knob == "chunk_size" and isinstance(exc.value, ValueError)
    assert space.check({"chunk_size": 64}, "cpu") == {"chunk_size": 64}
    assert space.check(None, "cpu") == space.default("cpu")


def test_space_check_rejects_unknown_knobs_and_checks_launch_settings():
    space = schedules.space("delta_scan", "tilelang")
    with pytest.raises(schedules.ConfigError, match=r"config: bogus: not a knob of delta_scan/tilelang") as exc:
        space.check({"bogus": 1}, "cpu")
    assert exc.value.knob == "bogus"
    assert space.check({"cpu_threads": 2}, "cpu")["cpu_threads"] == 2
    for bad in ("2", True, 2.0, 0, -1, 10 ** 9, '"""\nimport os\n"""'):
        with pytest.raises(schedules.ConfigError, match=r"cpu_threads: expected a positive int"):
            space.check({"cpu_threads": bad}, "cpu")
    with pytest.raises(schedules.ConfigError, match="config: expected a dict"):
        space.check([("BV", 64)], "cpu")
    with pytest.raises(schedules.ConfigError, match="--config: cpu_mr: does nothing on sm_90"):
        space.check({"cpu_mr": 1}, "sm_90", label="--config")


def test_the_scan_split_knobs_pass_the_same_check_with_their_dtype_defaults():
    """The phases' knobs (split, prepare_cols, prepare_warps) are checked like any other; the
    dtype- and split-dependent defaults (the space's overlays) fill what a config leaves out,
    then the whole config is checked; a config's own entries always win."""
    space = schedules.space("delta_scan", "triton")
    for bad in ("fused ", "FUSED", "prepare+recur", True, 1, '"); import os; ("'):
        with pytest.raises(schedules.ConfigError, match=r"config: split: got ") as exc:
            space.check({"split": bad}, "sm_90")
        assert exc.value.knob == "split"
    for knob in ("prepare_cols", "prepare_warps"):
        with pytest.raises(schedules.ConfigError, match=rf"{knob}: got 16.0"):
            space.check({knob: 16.0}, "sm_90")
    bf16, fp32 = (space.check(None, "sm_90", dtype=d) for d in ("bfloat16", "float32"))
    assert bf16["split"] == fp32["split"] == "prepare+recur+output" and fp32["chunk_size"] < bf16["chunk_size"]
    assert space.check({"chunk_size": 64}, "sm_90", dtype="float32")["chunk_size"] == 64
    assert space.check({"split": "fused"}, "sm_90")["BV"] == 16
    assert space.check(None, "cpu", dtype="float32")["split"] == "fused"


def test_the_split_reaches_a_generated_source_only_as_a_checked_symbol():
    from hola_dsl import kernels, spec
    from hola_dsl.backends.codegen import UncheckedValue
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    cuda = schedules.space("delta_scan", "tilelang").check(None, "sm_90a")
    kir = next(k for k in spec.trace(kernels.spec("delta_scan"), cuda, {"K": 32, "V": 32})
               if k.name == "delta_scan_recur")
    assert "'split': 'prepare+recur+output'" in tilelang_runtime.emit(kir, cuda, "sm_90a", "cuda")
    for bad in ['prepare+recur"; import os; "', "+recur", "recur+", "a" * 33, "Fused", "prepare + recur"]:
        with pytest.raises(UncheckedValue, match="split"):
            tilelang_runtime.emit(kir, {**cuda, "split": bad}, "sm_90a", "cuda")


def test_a_record_made_before_a_knob_existed_stays_usable():
    """The shipped TileLang scan record predates the knobs split and prepare_cols: a record's
    config is checked completed with its target's defaults (as the backend completes it), so it
    still applies rather than being skipped."""
    path = Path(__file__).parents[1] / "configs" / "amd-epyc" / "x86_64-avx512" / "delta_scan.json"
    _, records, problems = database.load(path)
    old = [r for r in records if database.record_key(r).backend == "tilelang"]
    assert problems == [] and old and "split" not in old[0]["config"] and database.record_problem(old[0]) is None
    completed = schedules.space("delta_scan", "tilelang").check(old[0]["config"], "cpu")
    assert completed["split"] == "fused" and completed["prepare_cols"] == 64


@pytest.mark.parametrize("backend", ["reference", "eager"])
@pytest.mark.parametrize("config, knob", [({"chunk_size": True}, "chunk_size"), ({"chunk_size": "64"}, "chunk_size"),
                                          ({"chunk_sise": 64}, "chunk_sise")])
def test_ops_config_errors_name_config_and_the_knob(backend, config, knob):
    x = scan_inputs(SCAN)
    with pytest.raises(ValueError, match=rf"config: {knob}: "):
        ops.delta_scan(**x, backend=backend, config=config)


def test_bv_zero_is_a_config_error_not_a_division_by_zero():
    x = scan_inputs(SCAN)
    with pytest.raises(ValueError, match=r"config: BV: got 0, expected one of \[16, 32, 64, 128\]"):
        ops.delta_scan(**x, backend="eager", config={"BV": 0})
    with pytest.raises(ValueError, match=r"config: .*not a knob of cache_select/reference"):
        ops.cache_select(torch.rand(1, 8, 1), capacity=2, block_size=4, backend="reference", config={"BC": 64})


def test_emit_refuses_configs_its_space_rejects_naming_the_flag():
    from hola_dsl.emit import emit_sources
    for config in ({"num_warps": "4"}, {"dot_precision": 'ieee"); import os; ("'}, {"BV": 64.0}):
        with pytest.raises(ValueError, match="--config: "):
            emit_sources("delta_scan", "triton", "sm_90", config)
    with pytest.raises(ValueError, match="--config: cpu_threads"):
        emit_sources("delta_scan", "tilelang", "sm_90a", {"cpu_threads": "2"})


HOSTILE = ['"""\nimport os; os.system("echo pwned")\n"""', "4); import os; (", float("nan")]
NOT_INTS = HOSTILE + [True, 2.5e300, 4.0]


@pytest.mark.parametrize("value", NOT_INTS)
def test_lowerings_embed_only_checked_numbers(value):
    """Defence in depth: a schedule that skipped the space check still cannot put text into a
    generated source; where an int is due, nothing else passes (True is not 1)."""
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    from hola_dsl import kernels, spec
    from hola_dsl.backends.codegen import UncheckedValue
    from hola_dsl.backends.triton import lower as lower_triton
    (kir,) = spec.trace(kernels.spec("cache_select"), {"BC": 64})
    cuda = schedules.space("cache_select", "tilelang").default("sm_90a")
    cpu = schedules.space("cache_select", "tilelang").default("cpu")
    emits = [lambda: lower_triton.emit(kir, {"num_warps": value, "num_stages": 1}, "sm_90"),
             lambda: tilelang_runtime.emit(kir, {**cuda, "threads": value}, "sm_90a", "cuda"),
             lambda: tilelang_runtime.emit(kir, {**cpu, "cpu_mr": value}, "cpu", "cpu")]
    if value in HOSTILE or value != value:        # anywhere: no text, no NaN
        emits += [lambda: lower_triton.emit(kir, {"num_warps": 4, "num_stages": 1, "extra": value}, "sm_90"),
                  lambda: tilelang_runtime.emit(kir, {**cuda, "cpu_threads": value}, "sm_90a", "cuda")]
    for emit in emits:
        with pytest.raises(UncheckedValue):
            emit()


def test_tilelang_cuda_sources_leave_launch_settings_out():
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    assert tilelang_runtime.code_schedule({"BC": 64, "cpu_threads": 2}) == {"BC": 64}


# ------------------------------------------------------------------------------------------------
# 2. keys come from fixed vocabularies and never name a path outside the database

@pytest.mark.parametrize("field, value", [
    ("kernel", "../x"), ("kernel", "/tmp/evil"), ("kernel", "delta_scan/../../x"), ("backend", "nope"),
    ("backend", 3), ("dtypes", "int8"), ("dtypes", ["float32"]),
    ("target", "../../etc/x"), ("target", "/abs/sm_90"), ("target", "a/b/c"), ("target", "noslash"),
    ("target", "a/.."), ("target", "a/x..y"), ("target", "UPPER/sm_90"), ("target", "a b/sm_90"), ("target", 7),
    ("dims", {"K": 0, "V": 8}), ("dims", {"K": -8, "V": 8}), ("dims", {"K": True, "V": 8}),
    ("dims", {"K": 8.0, "V": 8}), ("dims", {"K": 8}), ("dims", {"K": 8, "V": 8, "X": 1}), ("dims", {"K": 2 ** 40, "V": 8}),
    ("dims", [["K", 8], ["V", 8]]), ("bucket", {"T": 0}), ("bucket", {"T": -4}), ("bucket", {"T": 3}),
    ("bucket", {"T": True}), ("bucket", {"T": 64.0}), ("bucket", {"T": 2 ** 80}), ("bucket", "64"),
])
def test_keys_outside_the_vocabularies_are_rejected(field, value):
    good = _here()["key"]
    TuningKey.from_json(good)
    with pytest.raises(ValueError, match=field if field != "bucket" else "bucket"):
        TuningKey.from_json({**good, field: value})


def test_store_paths_stay_inside_the_store(tmp_path):
    store = db.Store(tmp_path / "db")
    assert store.file_for(HERE, "delta_scan") == tmp_path / "db" / "amd-epyc" / "x86_64-avx512" / "delta_scan.json"
    for target, kernel in (("../../x/y", "delta_scan"), ("a/b", "../../k"), ("a/b", "/abs")):
        with pytest.raises(ValueError):
            store.file_for(target, kernel)
    (tmp_path / "db" / "link").mkdir(parents=True)
    (tmp_path / "db" / "link" / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(database.DatabaseError, match="outside"):
        store.file_for("link/out", "delta_scan")


def _tree(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("action", ["import", "merge", "export"])
def test_db_commands_never_write_outside_the_database_folder(tmp_path, action, capsys):
    sandbox = tmp_path / "sandbox"
    evil = []
    for kernel, target in (("../../../escaped", HERE), (str(tmp_path / "abs"), HERE), ("delta_scan", "../../up/sm_90")):
        r = _here()
        r["key"] = {**r["key"], "kernel": kernel, "target": target}
        evil.append(r)
    src = _write(sandbox / "in" / "evil.json", evil + [_here()])
    before = _tree(tmp_path)
    out = sandbox / "out"
    argv = {"import": ["db", "--db", str(out), "import", str(src)], "merge": ["db", "merge", str(out), str(src)],
            "export": ["db", "--db", str(src), "export", str(out)]}[action]
    assert hola(argv) == 1                                  # written, but some input was skipped
    err = capsys.readouterr().err
    assert "evil.json" in err and "skipped 3" in err
    new = _tree(tmp_path) - before
    assert new and all(str(p).startswith(str(Path("sandbox") / "out")) for p in new), new
    assert any(r["key"]["dims"] == {"K": 8, "V": 8} for r in db.Store(out).records())


# ------------------------------------------------------------------------------------------------
# 3. a bad record or file is skipped with one warning and never stops a kernel call

def _raw_record(**key_fields) -> str:
    r = _here(time_s=5e-4, config={"chunk_size": 32})
    r["key"].update(key_fields)
    return json.dumps(r, allow_nan=True)


KILLERS = {
    "bucket 0": _raw_record(bucket={"T": 0}),
    "negative bucket": _raw_record(bucket={"T": -4}),
    "Infinity in dims": _raw_record(dims={"K": float("inf"), "V": 8}),
    "Infinity bucket": _raw_record(bucket={"T": float("inf")}),
    "target without /": _raw_record(target="amd-epyc"),
    "NaN time": json.dumps(_here(time_s=float("nan"), config={"chunk_size": 32}), allow_nan=True),
    "negative time": json.dumps(_here(time_s=-1.0, config={"chunk_size": 32})),
    "string time": json.dumps(_here(time_s="fast", config={"chunk_size": 32})),
    "unknown knob": json.dumps(_here(time_s=5e-4, config={"chunk_size": 32, "cpu_threads": 2})),
    "bool knob": json.dumps(_here(time_s=5e-4, config={"chunk_size": True})),
    "NaN in an extra field": json.dumps(_here(time_s=5e-4, config={"chunk_size": 32}, spread=float("nan")), allow_nan=True),
    "list provenance": json.dumps({**_here(time_s=5e-4, config={"chunk_size": 32}), "provenance": [1]}),
    "bad alternatives": json.dumps(_here(time_s=5e-4, config={"chunk_size": 32}, alternatives=[{"time_s": "x"}])),
    "nested extra field": json.dumps(_here(time_s=5e-4, config={"chunk_size": 32}, x=json.loads("[" * 60 + "]" * 60))),
    "not an object": "[1, 2]",
}


@pytest.mark.parametrize("bad", list(KILLERS))
def test_one_bad_record_is_skipped_with_one_warning_and_the_good_ones_still_apply(tmp_path, monkeypatch, bad):
    good = json.dumps(_here())
    path = _write(tmp_path / "team.json", [], raw='{"format": "hola-tuning-db", "version": 1, "records": ['
                  + good + ", " + KILLERS[bad] + "]}")
    monkeypatch.setenv(database.ENV_VAR, str(path))
    seen = _chunks_used(monkeypatch)
    x = scan_inputs(SCAN)
    with pytest.warns(RuntimeWarning, match=r"team.json: skipped 1 of 2 records \(record 1: ") as caught:
        ops.delta_scan(**x, backend="reference")
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # once per version of the file
        ops.delta_scan(**x, backend="reference")
        ops.delta_scan(**x, backend="eager")
    assert seen == [16, 16]
    with pytest.raises(database.DatabaseError, match=r"team.json: record 1: "):
        database.read_file(path)                      # writers still refuse the file


FILE_KILLERS = {
    "deeply nested JSON": '{"format": "hola-tuning-db", "version": 1, "records": [' + "[" * 200000 + "]" * 200000 + "]}",
    "bad version": '{"format": "hola-tuning-db", "version": "one", "records": []}',
    "NaN top-level field": '{"format": "hola-tuning-db", "version": 1, "x": NaN, "records": []}',
    "not utf-8": b"\xff\xfe{".decode("latin-1"),
}


@pytest.mark.parametrize("bad", list(FILE_KILLERS))
@pytest.mark.parametrize("backend", ["reference", "eager"])
def test_a_bad_file_is_skipped_with_one_warning(tmp_path, monkeypatch, bad, backend):
    path = tmp_path / "team.json"
    path.write_bytes(FILE_KILLERS[bad].encode("latin-1"))
    monkeypatch.setenv(database.ENV_VAR, str(path))
    x = scan_inputs(SCAN)
    with pytest.warns(RuntimeWarning, match="team.json"):
        o, _, _ = getattr(ops, "delta_scan")(**x, backend=backend)
    assert not o.isnan().any()


def test_a_fifo_in_the_database_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    monkeypatch.setenv(database.ENV_VAR, str(path))
    with pytest.warns(RuntimeWarning, match="not a regular file"):
        ops.delta_scan(**scan_inputs(SCAN), backend="reference")


@pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None, reason="TileLang is not available here")
@pytest.mark.parametrize("threads", ["2", True, 2.0, 0])
def test_a_record_with_a_bad_thread_count_does_not_stop_tilelang(tmp_path, monkeypatch, threads):
    tuned = dict(schedules.space("delta_scan", "tilelang").default("cpu"), cpu_threads=threads)
    path = _write(tmp_path / "team.json", [], raw='{"format": "hola-tuning-db", "version": 1, "records": ['
                  + json.dumps(_here(backend="tilelang", config=tuned)) + "]}")
    monkeypatch.setenv(database.ENV_VAR, str(path))
    with pytest.warns(RuntimeWarning, match="cpu_threads"):
        assert lookup.config_for("delta_scan", "tilelang", torch.device("cpu"), torch.float32, {"K": 8, "V": 8}, 40) is None
    lookup.clear_cache()
    with pytest.warns(RuntimeWarning, match="cpu_threads"):
        o, _, _ = ops.delta_scan(**scan_inputs(SCAN), backend="tilelang")
    assert not o.isnan().any()


def test_nan_and_negative_times_are_never_written_and_files_stay_standard_json(tmp_path):
    store = db.Store(tmp_path / "db.json")
    for bad in (float("nan"), -1.0, 0.0, float("inf")):
        with pytest.raises(database.DatabaseError, match="time_s"):
            store.add([record(time_s=bad)])
    with pytest.raises(database.DatabaseError, match="spread"):
        store.add([record(spread=float("nan"))])
    assert not (tmp_path / "db.json").exists()
    store.add([record(time_s=2e-3), record(time_s=1e-3, host="b")])
    text = (tmp_path / "db.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_a_nan_record_neither_wins_a_merge_nor_makes_it_order_dependent(tmp_path):
    nan = _write(tmp_path / "nan.json", [], raw='{"format": "hola-tuning-db", "version": 1, "records": ['
                 + json.dumps(record(time_s=float("nan"), host="nan-box"), allow_nan=True) + "]}")
    good = _write(tmp_path / "good.json", [record(time_s=1e-3, host="good-box")])
    for i, sources in enumerate(((nan, good), (good, nan))):
        assert hola(["db", "merge", str(tmp_path / f"out{i}"), *map(str, sources)]) == 1
        [merged] = db.Store(tmp_path / f"out{i}").records()
        assert merged["provenance"]["host"] == "good-box" and "alternatives" not in merged


def test_db_show_skips_a_bad_file_with_one_warning_and_still_shows_the_rest(tmp_path, capsys):
    _write(tmp_path / "db" / "broken" / "x" / "delta_scan.json", [], raw='{"format": "hola-tuning-db", "records": [')
    db.Store(tmp_path / "db").add([_here()])
    assert hola(["db", "--db", str(tmp_path / "db"), "show", "--no-shipped"]) == 1
    captured = capsys.readouterr()
    assert "1 record(s)" in captured.out and HERE in captured.out
    [line] = [x for x in captured.err.splitlines() if "broken" in x]
    assert "delta_scan.json" in line and "truncated or corrupt" in line


def test_db_show_prints_no_control_characters_from_a_record(tmp_path, capsys):
    r = _here(provenance={"host": "evil\x1b[2J\rbox", "measured_at": "now\n  faked line"}, id="\x1b]0;title\x07")
    _write(tmp_path / "db.json", [r])
    assert hola(["db", "--db", str(tmp_path / "db.json"), "show", "--no-shipped"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert not any(line.strip().startswith("faked line") for line in out.splitlines())


def test_prune_illegal_repairs_a_file_with_bad_records(tmp_path, capsys):
    path = _write(tmp_path / "user.json", [], raw='{"format": "hola-tuning-db", "version": 1, "records": ['
                  + json.dumps(_here()) + ", " + KILLERS["NaN time"] + "]}")
    assert hola(["db", "--db", str(path), "prune", "--kernel", "cache_read"]) == 2   # refuses to rewrite garbage
    assert "record 1" in capsys.readouterr().err
    assert hola(["db", "--db", str(path), "prune", "--illegal"]) == 0
    assert [r["config"] for r in database.read_file(path)[1]] == [{"chunk_size": 16}]


# ------------------------------------------------------------------------------------------------
# 4. writes keep the mode, leave no litter, and a read-only database ends a tune politely

def test_writes_keep_the_file_mode(tmp_path):
    path = tmp_path / "db.json"
    store = db.Store(path)
    store.add([record()])
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    path.chmod(0o640)
    store.add([record(T=64)])
    assert path.stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stale_temporary_files_of_a_killed_writer_are_swept(tmp_path):
    path = tmp_path / "db.json"
    stale, fresh, other = (tmp_path / ".db.json.123.stale.tmp", tmp_path / ".db.json.456.fresh.tmp",
                           tmp_path / ".notes.tmp")
    for p in (stale, fresh, other):
        p.write_text("{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    db.Store(path).add([record()])
    assert not stale.exists() and fresh.exists() and other.exists()


def test_a_read_only_database_prints_the_winner_and_says_where_it_could_not_write(tmp_path, monkeypatch):
    def refuse(self, records):
        raise PermissionError(13, "Permission denied", str(tmp_path / "db" / "x.json"))
    monkeypatch.setattr(db.Store, "add", refuse)
    space = Space("delta_scan", "replay", (Knob("A", (1, 2)),), {"*": {"A": 1}})
    logs = []
    with schedules.overlay(space):
        result = tune(TuneRequest("delta_scan", "replay", Shape(B=1, T=64, H=1, K=8, V=8), device="cpu",
                                  target="replay-box/x86_64", space=space, db_path=str(tmp_path / "db"), progress=False),
                      evaluator=ReplayEvaluator({config_id({"A": 1}): 2e-3, config_id({"A": 2}): 1e-3}), log=logs.append)
    assert result.record["config"] == {"A": 2} and result.written_to is None
    assert any("best A=2" in line for line in logs)
    assert "could not write" in result.message and "Permission denied" in result.message and "x.json" in result.message
    assert result.message in logs


# ------------------------------------------------------------------------------------------------
# 6. noisy timings are re-measured, and not written when they stay noisy

class Noisy(ReplayEvaluator):
    """Re-measures return samples spread by ``spreads[i]`` on the i-th call (the last repeats)."""

    def __init__(self, table, spreads):
        super().__init__(table)
        self.spreads, self.remeasures = list(spreads), 0

    def remeasure(self, configs, rounds):
        s = self.spreads[min(self.remeasures, len(self.spreads) - 1)]
        self.remeasures += 1
        return [Timing([self._time(c) * (1 + s * u) for u in (-1, -0.5, 0, 0.5, 1)]) for c in configs]


def _noisy_tune(tmp_path, spreads, **kw):
    space = Space("delta_scan", "replay", (Knob("A", (1, 2)),), {"*": {"A": 1}})
    ev = Noisy({config_id({"A": 1}): 2e-3, config_id({"A": 2}): 1e-3}, spreads)
    logs = []
    with schedules.overlay(space):
        result = tune(TuneRequest("delta_scan", "replay", Shape(B=1, T=64, H=1, K=8, V=8), device="cpu",
                                  target="replay-box/x86_64", space=space, db_path=str(tmp_path / "db"), progress=False,
                                  **kw), evaluator=ev, log=logs.append)
        stored = db.Store(tmp_path / "db").records()
    return result, ev, logs, stored


def test_noisy_timings_are_remeasured_and_a_quiet_remeasure_is_written(tmp_path):
    result, ev, logs, stored = _noisy_tune(tmp_path, [0.5, 0.01], max_spread=0.1)
    assert ev.remeasures == 2 and result.record is not None and len(stored) == 1
    assert stored[0]["spread"] <= 0.1
    assert any("re-measuring" in line and "spread" in line for line in logs)


def test_timings_that_stay_noisy_are_not_written(tmp_path):
    result, ev, logs, stored = _noisy_tune(tmp_path, [0.5], max_spread=0.1)
    assert ev.remeasures == 3 and stored == [] and result.written_to is None
    assert "not written" in result.message and "--max-spread" in result.message and result.message in logs
    assert any("best A=2" in line for line in logs)             # the winner is still shown


# ------------------------------------------------------------------------------------------------
# 7. `hola tune` and `hola db`: one line naming the argument, never a traceback

def _one_line_error(capsys, argv, *words):
    assert hola(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


TUNE = ["tune", "--kernel", "delta_scan", "--shape", "B=1,T=64,H=1,K=8,V=8", "--no-progress"]


def test_tune_rejects_bad_arguments_before_the_first_trial(tmp_path, capsys, monkeypatch):
    import autotune.tuner
    monkeypatch.setattr(autotune.tuner, "tune", lambda *a, **k: pytest.fail("tuned despite bad input"))
    db_flag = ["--db", str(tmp_path / "db")]
    _one_line_error(capsys, TUNE + db_flag + ["--backend", "nope"], "--backend", "'nope'", "reference")
    _one_line_error(capsys, TUNE + db_flag + ["--backend", "reference", "--dtype", "float33"], "--dtype", "float33")
    _one_line_error(capsys, TUNE + db_flag + ["--backend", "reference", "--dtype", "int64"], "--dtype", "int64")
    _one_line_error(capsys, TUNE + db_flag + ["--backend", "reference", "--device", "nope"], "--device", "nope")
    _one_line_error(capsys, TUNE + db_flag + ["--backend", "reference", "--target", "../x/sm_90"], "--target")
    for flag, value in (("--rounds", "0"), ("--finalists", "0"), ("--measure-seconds", "-1"), ("--measure-seconds", "nan"),
                        ("--compile-timeout", "0"), ("--check-T", "0"), ("--patience", "0"), ("--max-spread", "-0.1"),
                        ("--max-spread", "nan"), ("--trials", "0"), ("--timeout", "0")):
        _one_line_error(capsys, TUNE + db_flag + ["--backend", "reference", flag, value], flag, value)
    if backends.unavailable_reason("tilelang") is None:
        _one_line_error(capsys, TUNE + db_flag + ["--backend", "tilelang", "--dtype", "bfloat16"],
                        "--dtype", "bfloat16", "tilelang", "float32")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not torch.cuda.is_available():
        _one_line_error(capsys, TUNE + db_flag + ["--backend", "triton"], "--backend", "triton", "cannot run here")
        _one_line_error(capsys, TUNE + db_flag + ["--backend", "reference", "--device", "cuda"], "--device", "cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _one_line_error(capsys, TUNE + db_flag + ["--backend", "triton", "--device", "cpu", "--dtype", "bfloat16"],
                    "--dtype", "bfloat16", "triton")


def test_db_commands_answer_bad_input_in_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["db", "--db", str(tmp_path / "u"), "import", str(tmp_path / "missing.json")], "missing.json")
    _one_line_error(capsys, ["db", "--db", str(tmp_path / "u"), "prune", "--older-than", "nan"], "--older-than", "nan")
    _one_line_error(capsys, ["db", "--db", str(tmp_path / "u"), "prune", "--older-than", "-1"], "--older-than")
    db.Store(tmp_path / "u").add([record()])
    locked = tmp_path / "locked"
    locked.write_text("not a folder")
    _one_line_error(capsys, ["db", "merge", str(locked / "out"), str(tmp_path / "u")], "locked")


def test_db_action_help_explains_every_argument():
    import argparse
    from tools.commands import db as db_command
    db_parser = argparse.ArgumentParser(prog="hola db")
    db_command.add_arguments(db_parser)
    actions = next(a for a in db_parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(actions) == {"show", "export", "import", "merge", "prune"}
    for name, p in actions.items():
        for a in p._actions:
            if not isinstance(a, argparse._HelpAction):
                assert a.help and a.help != argparse.SUPPRESS, (name, a.dest)
        assert "skipped" in p.format_help()          # what happens to bad input is said in --help
