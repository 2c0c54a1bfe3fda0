"""TileLang CUDA's dot_precision: float32 inputs get FMA fp32 dots (TF32 tensor cores would
miss docs/tolerances.md's 1e-5), bf16 inputs keep T.gemm; the CPU dialect has no such knob to set."""

import pytest

from hola_dsl.backends import tilelang
from hola_dsl.emit import emit_sources
from schedules import ConfigError


def _text(dtype, config=None):
    sources, sched = emit_sources("delta_scan", "tilelang", "sm_90a", config, dtype=dtype)
    return "\n".join(src for _, src in sources), sched


def test_float32_inputs_take_fma_dots():
    text, sched = _text("float32")
    assert sched["dot_precision"] == "ieee" and "T.gemm" not in text and "T.serial" in text


def test_bfloat16_inputs_keep_tensor_cores():
    text, sched = _text("bfloat16")
    assert sched["dot_precision"] == "tf32" and "T.gemm" in text


def test_a_config_may_ask_for_tf32():
    text, sched = _text("float32", {"dot_precision": "tf32"})
    assert sched["dot_precision"] == "tf32" and "T.gemm" in text


def test_cpu_dialect_pins_it():
    assert tilelang.schedule("delta_scan", None, "cpu")["dot_precision"] == "tf32"
    with pytest.raises(ConfigError, match="dot_precision: does nothing on cpu"):
        tilelang.schedule("delta_scan", {"dot_precision": "ieee"}, "cpu")


@pytest.mark.parametrize("value", ["tf32x3", "IEEE", 1, None])
def test_bad_values_refused(value):
    with pytest.raises(ConfigError, match="dot_precision"):
        tilelang.schedule("cache_read", {"dot_precision": value}, "sm_90a")
