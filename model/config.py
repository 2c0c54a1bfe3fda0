"""The model's settings: one dataclass, saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from hola_dsl import backends
from model.tokenizer import JSON_IDENTITY_PREFIX, vocab_size_of

# Token mixers the language model offers (docs/math.md section 4, plus the softmax baseline).
VARIANTS = ("gdn", "hola", "hola-recency", "ahn", "lola", "transformer")
# Which cache policy (docs/math.md section 2) each variant's cache uses; None = no cache.
CACHE_POLICY = {"gdn": None, "hola": "hola", "hola-recency": "recency", "ahn": "recency", "lola": "lola",
                "transformer": None}
_POSITIVE_INTS = ("vocab_size", "d_model", "n_layers", "n_heads", "head_k_dim", "head_v_dim",
                  "cache_capacity", "cache_block", "chunk_size", "conv_size")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, *, above: Optional[float] = None, at_least: Optional[float] = None) -> float:
    """``value`` as a float when it is a finite number within the bound, else a ValueError."""
    bound = f" > {above}" if above is not None else f" >= {at_least}" if at_least is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (above is not None and value <= above) or (at_least is not None and value < at_least):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value!r}")
    return float(value)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def _backend_names() -> list[str]:
    return backends.names() + ["auto"]


@dataclass
class HOLAConfig:
    """Sizes and settings of a HOLA language model.

    d_model: residual width; n_heads heads of key dim head_k_dim (K) and value dim head_v_dim (V);
    cache_capacity (w) exact entries per head and layer, refreshed every cache_block (C) tokens;
    chunk_size: the scan's chunk (C must be a multiple of it). ``backend`` is the default
    ``hola_dsl.ops`` backend for forward passes (overridable per call).
    """

    vocab_size: int = 8192
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 2
    head_k_dim: int = 64
    head_v_dim: int = 64
    mlp_hidden: int = 0               # 0: about 8/3 * d_model, rounded up to a multiple of 16
    variant: str = "hola"
    cache_capacity: int = 64
    cache_block: int = 256
    chunk_size: int = 64
    conv_size: int = 4
    norm_eps: float = 1e-6
    gate_init: float = -4.0
    init_std: float = 0.02
    rope_base: float = 10000.0        # the transformer baseline's rotary embedding
    backend: str = "reference"
    tokenizer: str = ""               # "gpt2-N", "json-sha256:<hash>" (model.tokenizer_select), "" = none

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("mlp_hidden", self.mlp_hidden, minimum=0)
        self.norm_eps = _check_float("norm_eps", self.norm_eps, above=0.0)
        self.gate_init = _check_float("gate_init", self.gate_init)
        self.init_std = _check_float("init_std", self.init_std, at_least=0.0)
        self.rope_base = _check_float("rope_base", self.rope_base, above=0.0)
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("backend", self.backend, _backend_names())
        self._check_tokenizer()
        self._check_relations()
        if self.mlp_hidden == 0:
            self.mlp_hidden = -(-(8 * self.d_model) // (3 * 16)) * 16

    def _check_tokenizer(self) -> None:
        if not isinstance(self.tokenizer, str):
            raise ValueError(f"tokenizer: expected a tokenizer name or \"\", got {self.tokenizer!r}")
        if self.tokenizer.startswith(JSON_IDENTITY_PREFIX):
            # A tokenizers JSON file, named by its hash; its size is checked where the file is read.
            if not re.fullmatch(r"[0-9a-f]{64}", self.tokenizer[len(JSON_IDENTITY_PREFIX):]):
                raise ValueError(f"tokenizer: expected {JSON_IDENTITY_PREFIX} and a SHA-256 in hex, "
                                 f"got {self.tokenizer!r}")
        elif self.tokenizer:
            ids = vocab_size_of(self.tokenizer)
            if self.vocab_size < ids:
                raise ValueError(f"vocab_size: tokenizer {self.tokenizer!r} has {ids} ids, so expected >= {ids}, "
                                 f"got {self.vocab_size}")

    def _check_relations(self) -> None:
        if self.chunk_size & (self.chunk_size - 1):
            raise ValueError(f"chunk_size: expected a power of two, got {self.chunk_size}")
        if self.cache_block % self.chunk_size:
            raise ValueError(
                f"cache_block: expected a multiple of chunk_size={self.chunk_size}, got {self.cache_block}"
            )
        if self.variant == "transformer":
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads} for the transformer, "
                                 f"got {self.d_model}")
            if (self.d_model // self.n_heads) % 2:
                raise ValueError(f"d_model: the transformer's rotary embedding needs an even head size "
                                 f"d_model / n_heads, got {self.d_model} / {self.n_heads}")

    @property
    def cache_policy(self):
        """The docs/math.md section 2 policy of this variant's cache, or None without a cache."""
        return CACHE_POLICY[self.variant]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HOLAConfig":
        if not isinstance(data, dict):
            raise ValueError(f"config: expected a JSON object of HOLAConfig fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "HOLAConfig":
        """The config saved at ``path``; a ValueError naming the file if it is not a valid one."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, UnicodeDecodeError) as exc:   # JSONDecodeError is a ValueError
            raise ValueError(f"checkpoint: {path}: {exc}") from None
