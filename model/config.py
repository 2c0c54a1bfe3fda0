"""The model's settings: one dataclass, saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

# Token mixers the language model offers (SPEC.md section 4, plus the softmax baseline).
VARIANTS = ("gdn", "hola", "hola-recency", "ahn", "transformer")
# Which cache policy (SPEC.md section 2) each variant's cache uses; None = no cache.
CACHE_POLICY = {"gdn": None, "hola": "hola", "hola-recency": "recency", "ahn": "recency", "transformer": None}


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
    tokenizer: str = ""               # name understood by model.tokenizer.load ("" = none)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {self.variant!r}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "head_k_dim", "head_v_dim",
                     "cache_capacity", "cache_block", "chunk_size", "conv_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.chunk_size & (self.chunk_size - 1):
            raise ValueError(f"chunk_size: expected a power of two, got {self.chunk_size}")
        if self.cache_block % self.chunk_size:
            raise ValueError(
                f"cache_block: expected a multiple of chunk_size={self.chunk_size}, got {self.cache_block}"
            )
        if self.variant == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads} for the transformer, "
                             f"got {self.d_model}")
        if self.mlp_hidden == 0:
            self.mlp_hidden = -(-(8 * self.d_model) // (3 * 16)) * 16

    @property
    def cache_policy(self):
        """The SPEC section 2 policy of this variant's cache, or None without a cache."""
        return CACHE_POLICY[self.variant]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HOLAConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "HOLAConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
