"""HOLAConfig refuses every bad field at construction, naming it; a corrupt checkpoint names its
file and what is wrong (NaN weights by tensor, not later as a kernel's input error)."""

import json
import math

import pytest
import torch

from model import HOLAConfig, HOLALM

SMALL = dict(vocab_size=64, d_model=16, n_layers=1, n_heads=2, head_k_dim=8, head_v_dim=8,
             cache_capacity=4, cache_block=16, chunk_size=16)


@pytest.mark.parametrize("field, value", [
    ("vocab_size", 0), ("vocab_size", True), ("vocab_size", 64.0), ("vocab_size", "64"),
    ("d_model", -1), ("n_layers", 0), ("n_heads", 0), ("head_k_dim", 0), ("head_v_dim", -8),
    ("mlp_hidden", -1), ("cache_capacity", 0), ("cache_block", 0), ("chunk_size", 0), ("chunk_size", 12),
    ("conv_size", 0), ("cache_block", 24),
    ("norm_eps", -1.0), ("norm_eps", 0.0), ("norm_eps", math.nan), ("norm_eps", math.inf), ("norm_eps", "1e-6"),
    ("gate_init", math.nan), ("init_std", -0.1), ("init_std", math.inf), ("rope_base", 0.0), ("rope_base", None),
    ("variant", "mamba"), ("variant", None), ("backend", "nope"), ("backend", ""),
    ("tokenizer", "bpe"), ("tokenizer", None),
])
def test_config_rejects_a_bad_field_by_name(field, value):
    with pytest.raises(ValueError, match=f"^{field}: ") as info:
        HOLAConfig(**dict(SMALL, **{field: value}))
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_config_needs_a_vocabulary_that_holds_the_tokenizer():
    with pytest.raises(ValueError, match="^vocab_size: tokenizer 'gpt2-1023' has 1024 ids"):
        HOLAConfig(**dict(SMALL, tokenizer="gpt2-1023"))


def test_config_rejects_an_odd_transformer_head():
    with pytest.raises(ValueError, match="d_model.*even"):
        HOLAConfig(**dict(SMALL, variant="transformer", d_model=6, n_heads=2))


def test_config_accepts_json_integers_for_float_fields():
    config = HOLAConfig(**dict(SMALL, rope_base=10000, gate_init=-4))
    assert config.rope_base == 10000.0 and isinstance(config.rope_base, float)
    assert HOLAConfig(**dict(SMALL, backend="auto", tokenizer="gpt2-256", vocab_size=257)).backend == "auto"


@pytest.fixture
def saved(tmp_path):
    HOLALM(HOLAConfig(**SMALL)).save(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _rewrite_weights(path, change):
    from safetensors.torch import load_file, save_file
    state = load_file(str(path / "model.safetensors"))
    change(state)
    save_file(state, str(path / "model.safetensors"))


def test_truncated_or_garbage_weights_name_the_file(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], b"\x00" * 7, b"garbage" * 100):
        weights.write_bytes(broken)
        with pytest.raises(ValueError, match=f"{weights}.*safetensors"):
            HOLALM.load(saved)


def test_nan_weights_are_caught_on_load_with_the_tensor_name(saved):
    def poison(state):
        state["blocks.0.mixer.cache_gate"][0] = float("nan")
        state["embed.weight"][3, 2] = float("inf")
    _rewrite_weights(saved, poison)
    with pytest.raises(ValueError, match="blocks.0.mixer.cache_gate has 1 NaN/inf") as info:
        HOLALM.load(saved)
    assert "embed.weight has 1 NaN/inf" in str(info.value) and "model.safetensors" in str(info.value)


def test_missing_extra_and_misshapen_tensors_are_named(saved):
    def damage(state):
        del state["norm.weight"]
        state["stray"] = torch.zeros(1)
        state["blocks.0.mixer.cache_gate"] = torch.zeros(3)
    _rewrite_weights(saved, damage)
    with pytest.raises(ValueError) as info:
        HOLALM.load(saved)
    message = str(info.value)
    assert "missing tensors ['norm.weight']" in message and "unexpected tensors ['stray']" in message
    assert "blocks.0.mixer.cache_gate has shape [3], expected [2]" in message


@pytest.mark.parametrize("text, expected", [
    ("{not json", "config.json"), ("[]", "JSON object"), (json.dumps({"d_model": 16, "wings": 2}), "wings"),
    (json.dumps({"norm_eps": -1.0}), "norm_eps"),
])
def test_bad_config_json_names_the_file(saved, text, expected):
    (saved / "config.json").write_text(text)
    with pytest.raises(ValueError, match="config.json") as info:
        HOLALM.load(saved)
    assert expected in str(info.value)
