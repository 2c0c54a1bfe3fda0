"""Property-based checks of docs/design.md with hypothesis: arbitrary JSON thrown at records,
keys and configs never crashes a lookup, never puts code into a generated source and never
names a path outside the database folder. Bounded and derandomized, so the suite stays fast
and every run tries the same examples."""

import ast
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import schedules
from autotune import db
from schedules import database, lookup
from schedules.key import TuningKey
from test_tuning_db import record

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Writes go to a database folder deep inside SANDBOX, so that the escapes below still land in
# SANDBOX, where the test can see them.
SANDBOX = Path(tempfile.mkdtemp(prefix="hola-properties-"))
ROOT = SANDBOX / "a" / "b" / "c" / "d" / "db"
# What a hostile file may hold: any JSON value, and the strings most likely to do harm.
HOSTILE_TEXT = st.sampled_from(["..", "../..", "../x", "../../../x", "x/../../..", "../../etc", "/abs", "/", "a/b",
                                "a/../b", "../../../..", f"{SANDBOX}/abs", f"{SANDBOX}/x/y", "~", ".", "", "x" * 300,
                                '"""', "'", "\\", "\n", "\x00", "a b", "é", "delta_scan", "reference", "float32",
                                "sm_90", "cpu", "nan", "64", "True"])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | HOSTILE_TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | HOSTILE_TEXT, inner, max_size=3), max_leaves=10)

GOOD = record(T=4096, target="amd-epyc/x86_64-avx512", config={"chunk_size": 32})
KEY_FIELDS = ("kernel", "backend", "target", "dtypes", "dims", "bucket")
RECORD_FIELDS = ("key", "config", "time_s", "provenance", "alternatives", "failures", "spread", "id")


@st.composite
def mutated_records(draw):
    """A valid record with some key fields and record fields replaced by arbitrary JSON."""
    r = json.loads(json.dumps(GOOD))
    for f in draw(st.sets(st.sampled_from(KEY_FIELDS), max_size=3)):
        r["key"][f] = draw(HOSTILE_TEXT | JSON)
    for f in draw(st.sets(st.sampled_from(RECORD_FIELDS), max_size=2)):
        r[f] = draw(JSON)
    if draw(st.booleans()):
        r["config"] = draw(configs())
    return r


@st.composite
def configs(draw):
    """Dicts of known knob and launch-setting names (and others) to arbitrary values."""
    names = st.sampled_from(["BV", "chunk_size", "num_warps", "num_stages", "dot_precision", "cpu_threads",
                             "cpu_mr", "cpu_nr", "threads", "BC", "BQ", "BKV"]) | st.text(max_size=6)
    values = st.sampled_from([16, 32, 64, 128, 1, 2, 4, 8, "ieee", "tf32"]) | SCALARS
    return draw(st.dictionaries(names, values, max_size=4))


def _write(path: Path, records) -> None:
    path.write_text(json.dumps({"format": database.FORMAT, "version": 1, "records": records}, allow_nan=True))


@SETTINGS
@given(st.lists(mutated_records() | JSON, min_size=1, max_size=4))
def test_lookup_never_crashes_and_returns_only_checked_configs(records):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "team.json"
        _write(path, [GOOD] + records)
        lookup.clear_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found, how = lookup.lookup_record("delta_scan", "reference", "amd-epyc/x86_64-avx512", "float32",
                                             {"K": 128, "V": 128}, 3000, db_path=str(path))
            for r in db.Store(path).records(on_skip=lambda message: None):
                key = TuningKey.from_json(r["key"])
                space = schedules.space(key.kernel, key.backend)
                space.check(r["config"], "cpu", dict(key.dims))
        assert found is not None and how in ("exact", "nearest")
        schedules.space("delta_scan", "reference").check(found["config"], "cpu")
    lookup.clear_cache()


def _top_level(source: str) -> list:
    """The module's statements without their values: what code a source would run."""
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            out.append(("assign", tuple(ast.unparse(t) for t in node.targets)))
        else:
            out.append((type(node).__name__, getattr(node, "name", None)))
    return out


@pytest.fixture(scope="module")
def cache_select_ir():
    from hola_dsl import kernels, spec
    (kernel,) = spec.trace(kernels.spec("cache_select"), {"BC": 64})
    return kernel


@SETTINGS
@given(configs())
def test_configs_pass_the_check_or_never_reach_a_generated_source(cache_select_ir, config):
    """Unchecked values make the lowerings raise; checked ones come out as literals that read
    back as the same values, in a module with the same statements as the default one."""
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    from hola_dsl.backends.codegen import UncheckedValue
    from hola_dsl.backends.triton import lower as lower_triton
    default = schedules.space("cache_select", "tilelang").default("sm_90a")
    reference = _top_level(tilelang_runtime.emit(cache_select_ir, default, "sm_90a", "cuda"))
    for sched, emit in (({**default, **config}, lambda s: tilelang_runtime.emit(cache_select_ir, s, "sm_90a", "cuda")),
                        ({"num_warps": 4, "num_stages": 1, **config}, lambda s: lower_triton.emit(cache_select_ir, s, "sm_90"))):
        try:
            source = emit(sched)
        except UncheckedValue:
            continue
        # enum values: identifiers, or several joined by "+" (the split "blocks+merge")
        assert all(type(v) in (int, float, bool) or (type(v) is str and all(p.isidentifier() for p in v.split("+")))
                   for v in sched.values())
        doc = ast.get_docstring(ast.parse(source))
        if "tilelang" in source.split("\n")[0]:
            assert _top_level(source) == reference
            text = doc.split("schedule ", 1)[1].rsplit("; target", 1)[0]
            assert ast.literal_eval(text) == sched
            assert [type(v) for v in ast.literal_eval(text).values()] == [type(v) for v in sched.values()]
    try:
        checked = schedules.space("cache_select", "triton").check(config, "sm_90")
    except schedules.ConfigError:
        return
    lower_triton.emit(cache_select_ir, checked, "sm_90")     # a checked config always lowers


@SETTINGS
@given(st.lists(mutated_records(), min_size=1, max_size=3))
def test_records_never_write_outside_the_database_folder(records):
    shutil.rmtree(SANDBOX, ignore_errors=True)
    ROOT.mkdir(parents=True)
    try:
        for r in records:
            try:
                db.Store(ROOT).add([r])
            except ValueError:                      # DatabaseError and key errors: refused, nothing written
                continue
        outside = [p for p in SANDBOX.rglob("*") if p.is_file() and ROOT not in p.parents]
        assert outside == []
        for p in ROOT.rglob("*"):
            assert p.resolve().is_relative_to(ROOT.resolve())
    finally:
        shutil.rmtree(SANDBOX, ignore_errors=True)
