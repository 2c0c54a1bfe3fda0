"""A shared tuning database is untrusted input (SPEC.md section 7): configs are checked against
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
from autotune import db, query
from autotune.key import TuningKey
from autotune.measure import Timing
from autotune.replay import ReplayEvaluator, config_id
from autotune.target import Target, cpu_target
from autotune.tuner import tune
from hola_dsl import backends, ops
from hola_dsl.testing import Shape, scan_inputs
from schedules import Knob, Space
from test_tuning_db import record
from tools.cli import main as hola

HERE = cpu_target().name
SCAN = Shape(B=1, T=40, H=1, K=8, V=8)


@pytest.fixture(autouse=True)
def fresh_cache():
    query.clear_cache()
    yield
    query.clear_cache()


def _here(**kw):
    """A record ops would find for SCAN on this CPU (reference backend, chunk 16)."""
    kw.setdefault("config", {"chunk_size": 16})
    return record(T=SCAN.T, target=HERE, dims={"K": 8, "V": 8}, **kw)


def _write(path: Path, records: list, raw: str = None) -> Path:
    """A database file holding ``records`` (JSON text of NaN/Infinity allowed) or raw text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = raw if raw is not None else json.dumps({"format": db.FORMAT, "version": 1, "records": records})
    path.write_text(text)
    return path


def _chunks_used(monkeypatch):
    from model import chunked
    seen = []
    real = chunked.chunked_delta_scan
    monkeypatch.setattr(chunked, "chunked_delta_scan", lambda *a, **kw: seen.append(kw["chunk_size"]) or real(*a, **kw))
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
    from hola_dsl.emit import emit_source
    for config in ({"num_warps": "4"}, {"dot_precision": 'ieee"); import os; ("'}, {"BV": 64.0}):
        with pytest.raises(ValueError, match="--config: "):
            emit_source("delta_scan", "triton", "sm_90", config)
    with pytest.raises(ValueError, match="--config: cpu_threads"):
        emit_source("delta_scan", "tilelang", "sm_90a", {"cpu_threads": "2"})


HOSTILE = ['"""\nimport os; os.system("echo pwned")\n"""', "4); import os; (", float("nan")]
NOT_INTS = HOSTILE + [True, 2.5e300, 4.0]


@pytest.mark.parametrize("value", NOT_INTS)
def test_lowerings_embed_only_checked_numbers(value):
    """Defence in depth: a schedule that skipped the space check still cannot put text into a
    generated source; where an int is due, nothing else passes (True is not 1)."""
    from hola_dsl import aot, tilelang_runtime
    from hola_dsl.lower import UncheckedValue
    from hola_dsl.lower import triton as lower_triton
    kir = aot.specialise("cache_select", {"BC": 64}, None, "float32")
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
    from hola_dsl import tilelang_runtime
    assert tilelang_runtime.code_schedule({"BC": 64, "cpu_threads": 2}) == {"BC": 64}
