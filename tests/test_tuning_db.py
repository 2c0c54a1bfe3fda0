"""The tuning database: records, merge, atomic multi-writer files, corrupt files, lookup, and
the lookup wired into hola_dsl.ops."""

import json
import multiprocessing

import pytest
import torch

from autotune import db
from schedules import database, lookup
from schedules.key import TuningKey, t_bucket
from tools.cli import main as hola

TARGET = "test-cpu/x86_64-avx512"


def record(T=4096, config=None, time_s=1e-3, host="a", kernel="delta_scan", backend="reference",
           target=TARGET, dims=None, **extra):
    key = TuningKey.make(kernel, backend, target, "float32", dims or {"K": 128, "V": 128}, T)
    return {"key": key.to_json(), "id": key.id, "config": config or {"chunk_size": 64}, "time_s": time_s,
            "provenance": {"host": host, "measured_at": "2026-01-01T00:00:00+00:00"}, **extra}


@pytest.fixture(autouse=True)
def fresh_cache():
    lookup.clear_cache()
    yield
    lookup.clear_cache()


def test_bucket_and_readable_key():
    assert [t_bucket(t) for t in (1, 2, 3, 64, 65, 4096)] == [1, 2, 4, 64, 128, 4096]
    key = TuningKey.make("delta_scan", "reference", TARGET, torch.float32, {"V": 128, "K": 128}, 3000)
    assert key.id == "delta_scan|reference|test-cpu/x86_64-avx512|float32|K=128,V=128|T<=4096"
    assert TuningKey.from_json(key.to_json()) == key


def test_store_roundtrip_keeps_unknown_fields_and_layout(tmp_path):
    store = db.Store(tmp_path)
    store.add([record(future_field={"x": [1, 2]})])
    path = tmp_path / "test-cpu" / "x86_64-avx512" / "delta_scan.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == database.FORMAT and len(doc["records"]) == 1
    doc["future_top_level"] = "kept"
    doc["version"] = 7
    path.write_text(json.dumps(doc))
    store.add([record(T=100, time_s=5e-4)])
    doc = json.loads(path.read_text())
    assert doc["future_top_level"] == "kept" and doc["version"] == 7
    assert {r["key"]["bucket"]["T"] for r in doc["records"]} == {4096, 128}
    assert next(r for r in doc["records"] if r["key"]["bucket"]["T"] == 4096)["future_field"] == {"x": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["delta_scan.json"]   # no temp or lock files left


def test_merge_keeps_the_faster_record_and_the_provenance_of_both():
    slow, fast = record(time_s=2e-3, host="slow-box"), record(time_s=1e-3, host="fast-box", config={"chunk_size": 32})
    for a, b in ((slow, fast), (fast, slow)):
        [merged] = db.merge_records([a], [b])
        assert merged["provenance"]["host"] == "fast-box" and merged["config"] == {"chunk_size": 32}
        assert [alt["provenance"]["host"] for alt in merged["alternatives"]] == ["slow-box"]
    [twice] = db.merge_records([fast], [fast], [fast])
    assert "alternatives" not in twice                # the same measurement imported again is not new


@pytest.mark.parametrize("content", ['{"format": "hola-tuning-db", "records": [{"key": ', "not json at all", "[]",
                                     '{"format": "hola-tuning-db", "records": [{"config": {}}]}'])
def test_corrupt_file_gives_an_error_naming_it_and_is_left_untouched(tmp_path, content):
    path = tmp_path / "db.json"
    path.write_text(content)
    before = path.stat().st_mtime_ns
    with pytest.raises(database.DatabaseError, match=str(path)):
        db.Store(path).add([record()])
    with pytest.raises(database.DatabaseError, match="db.json"):
        db.Store(path).records()
    assert path.read_text() == content and path.stat().st_mtime_ns == before
    assert hola(["db", "--db", str(path), "show", "--no-shipped"]) == 1   # the CLI skips it with a warning, not crashes


def _writer(path, host, n):
    store = db.Store(path)
    for i in range(n):
        store.add([record(T=2 ** (i % 13), time_s=1e-3, host=host, dims={"K": 16 * (i + 1), "V": 64})])


def test_two_writer_processes_lose_no_record(tmp_path):
    path = tmp_path / "shared.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, host, 25)) for host in ("w1", "w2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = db.Store(path).records()
    # Both wrote the same 25 keys: one record per key, the other writer's measurement kept alongside.
    assert len(records) == 25
    assert all({r["provenance"]["host"]} | {a["provenance"]["host"] for a in r.get("alternatives", [])} == {"w1", "w2"}
               for r in records)


def test_lookup_exact_then_nearest_bucket_then_none(tmp_path, monkeypatch):
    monkeypatch.setenv(database.ENV_VAR, str(tmp_path))
    db.Store(tmp_path).add([record(T=4096, config={"chunk_size": 128}), record(T=256, config={"chunk_size": 32})])
    args = ("delta_scan", "reference", TARGET, "float32", {"K": 128, "V": 128})
    assert lookup.lookup(*args, 3000) == {"chunk_size": 128}              # exact bucket 4096
    assert lookup.lookup(*args, 300) == {"chunk_size": 32}                # nearest: 256 (512 is 1 step)
    assert lookup.lookup(*args, 100000) == {"chunk_size": 128}            # nearest: 4096
    assert lookup.lookup("delta_scan", "reference", TARGET, "bfloat16", {"K": 128, "V": 128}, 4096) is None
    assert lookup.lookup("delta_scan", "reference", TARGET, "float32", {"K": 64, "V": 128}, 4096) is None


def test_lookup_sees_a_rewritten_file_and_skips_configs_the_space_rejects(tmp_path, monkeypatch):
    monkeypatch.setenv(database.ENV_VAR, str(tmp_path))
    args = ("delta_scan", "reference", TARGET, "float32", {"K": 128, "V": 128}, 4096)
    db.Store(tmp_path).add([record(config={"chunk_size": 128}, time_s=2e-3)])
    assert lookup.lookup(*args) == {"chunk_size": 128}
    db.Store(tmp_path).add([record(config={"chunk_size": 16}, time_s=1e-3)])   # faster: replaces it
    assert lookup.lookup(*args) == {"chunk_size": 16}
    # A file from elsewhere whose record has a chunk size the space does not have (the database
    # refuses to write one itself): skipped with a warning.
    path = db.Store(tmp_path).file_for(TARGET, "delta_scan")
    path.write_text(json.dumps({"format": database.FORMAT, "records": [record(config={"chunk_size": 48}, time_s=1e-4)]}))
    with pytest.warns(RuntimeWarning, match="chunk_size: got 48"):
        assert lookup.lookup(*args) is None


def test_ops_use_the_database_when_config_is_none(tmp_path, monkeypatch):
    from schedules.targets import cpu_machine
    from hola_dsl import ops
    from hola_dsl.testing import Shape, scan_inputs
    from hola_dsl.backends.reference import FUNCTIONS

    seen = []
    real = FUNCTIONS["delta_scan"]
    monkeypatch.setitem(FUNCTIONS, "delta_scan", lambda *a, **kw: seen.append(kw["chunk_size"]) or real(*a, **kw))
    monkeypatch.setenv(database.ENV_VAR, str(tmp_path))
    x = scan_inputs(Shape(B=1, T=40, H=1, K=8, V=8))
    ops.delta_scan(**x, backend="reference")
    db.Store(tmp_path).add([record(T=40, target=cpu_machine().name, dims={"K": 8, "V": 8}, config={"chunk_size": 16})])
    ops.delta_scan(**x, backend="reference")
    ops.delta_scan(**x, backend="reference", config={"chunk_size": 32})
    monkeypatch.setenv(database.ENV_VAR, "off")
    ops.delta_scan(**x, backend="reference")
    assert seen == [64, 16, 32, 64]


def test_cli_merge_keeps_both_machines_and_the_faster_wins(tmp_path, capsys):
    a, b, out = tmp_path / "a.json", tmp_path / "b", tmp_path / "merged"
    db.Store(a).add([record(host="box-a", time_s=3e-3), record(host="box-a", T=64, time_s=1e-3)])
    db.Store(b).add([record(host="box-b", time_s=2e-3, config={"chunk_size": 32}),
                     record(host="box-b", target="other-gpu/sm_90", time_s=5e-3)])
    assert hola(["db", "merge", str(out), str(a), str(b)]) == 0
    records = {r["id"]: r for r in db.Store(out).records()}
    assert len(records) == 3
    shared = records[record()["id"]]
    assert shared["provenance"]["host"] == "box-b" and shared["config"] == {"chunk_size": 32}
    assert shared["alternatives"][0]["provenance"]["host"] == "box-a"
    assert (out / "other-gpu" / "sm_90" / "delta_scan.json").exists()
    assert hola(["db", "--db", str(out), "show", "--no-shipped"]) == 0
    assert "box-b" in capsys.readouterr().out
    # import into a user database, then prune by age and target.
    user = tmp_path / "user"
    assert hola(["db", "--db", str(user), "import", str(out)]) == 0
    assert len(db.Store(user).records()) == 3
    assert hola(["db", "--db", str(user), "prune", "--target", "other-gpu/sm_90"]) == 0
    assert len(db.Store(user).records()) == 2
    assert hola(["db", "--db", str(user), "prune", "--older-than", "1"]) == 0      # all are from 2026-01-01
    assert db.Store(user).records() == []


def test_hola_emit_uses_the_tuned_schedule_of_the_arch(tmp_path, monkeypatch, capsys):
    pytest.importorskip("triton")
    monkeypatch.setenv(database.ENV_VAR, str(tmp_path / "db"))
    tuned = {"BV": 64, "chunk_size": 64, "num_warps": 8, "num_stages": 3, "dot_precision": "ieee"}
    db.Store(tmp_path / "db").add([record(backend="triton", target="nvidia-h100/sm_90", config=tuned)])
    argv = ["emit", "--kernel", "delta_scan", "--backend", "triton", "--dtype", "float32", "--out", str(tmp_path / "src")]
    assert hola(argv + ["--target", "sm_90"]) == 0
    assert '"num_stages": 3' in capsys.readouterr().out
    assert hola(argv + ["--target", "sm_80"]) == 0                  # no record for sm_80: the default
    assert '"num_stages": 3' not in capsys.readouterr().out


def test_a_corrupt_database_warns_once_and_ops_use_the_defaults(tmp_path, monkeypatch):
    from hola_dsl import ops
    from hola_dsl.testing import Shape, scan_inputs

    lookup.clear_cache()
    bad = tmp_path / "team.json"
    bad.write_text('{"format": "hola-tuning-db", "records": [')
    monkeypatch.setenv(database.ENV_VAR, str(bad))
    x = scan_inputs(Shape(B=1, T=8, H=1, K=8, V=8))
    with pytest.warns(RuntimeWarning, match="team.json.*truncated or corrupt.*ignoring this tuning file"):
        o, _, _ = ops.delta_scan(**x, backend="reference")
    assert not o.isnan().any()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # the same broken file is not reported again
        ops.delta_scan(**x, backend="reference")
    assert bad.read_text() == '{"format": "hola-tuning-db", "records": ['
    with pytest.raises(database.DatabaseError, match="team.json"):
        database.read_file(bad)                              # the database tools still refuse it'


def test_prune_drops_records_the_current_space_rejects(tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"format": database.FORMAT, "records": [record(config={"chunk_size": 48}),
                                                                 record(T=64, config={"chunk_size": 32})]}))
    assert hola(["db", "--db", str(user), "prune", "--illegal", "--dry-run"]) == 0
    _, good, bad = database.load(user)
    assert len(good) == 1 and len(bad) == 1                    # the dry run changed nothing
    assert hola(["db", "--db", str(user), "prune", "--illegal"]) == 0
    assert [r["config"] for r in db.Store(user).records()] == [{"chunk_size": 32}]
