"""Named model + training sizes, so an experiment is one command and one place to read.

- "tiny": the tests' size (seconds on one core).
- "small": the Python-documentation language models of the perplexity comparison (minutes on
  2 CPU cores): d_model 128, 2 layers, 2 heads of 64, cache w = 16 every C = 64 tokens.
- "synthetic": the MQAR / passkey models, trained at 128 tokens: d_model 64, 2 layers, 2 heads
  with K = 16 (a head's state has 16 key directions, fewer than MQAR's 24 pairs), cache w = 16
  every C = 32 tokens.
"""

from __future__ import annotations

from model import tasks

PRESETS: dict[str, dict] = {
    "tiny": dict(
        model=dict(d_model=32, n_layers=1, n_heads=2, head_k_dim=16, head_v_dim=16,
                   cache_capacity=8, cache_block=32, chunk_size=32, vocab_size=1024),
        train=dict(steps=40, batch_size=8, seq_len=64, eval_every=20, lr=3e-3, warmup=5),
    ),
    "small": dict(
        model=dict(d_model=128, n_layers=2, n_heads=2, head_k_dim=64, head_v_dim=64,
                   cache_capacity=16, cache_block=64, chunk_size=64, vocab_size=8192),
        train=dict(steps=300, batch_size=8, seq_len=256, eval_every=100, lr=3e-3, warmup=30),
    ),
    "synthetic": dict(
        model=dict(d_model=64, n_layers=2, n_heads=2, head_k_dim=16, head_v_dim=32,
                   cache_capacity=16, cache_block=32, chunk_size=32, vocab_size=tasks.VOCAB_SIZE),
        train=dict(steps=1000, batch_size=16, seq_len=128, eval_every=250, lr=3e-3, warmup=50),
    ),
}


def get(name: str) -> dict:
    """The preset called ``name``: {"model": HOLAConfig fields, "train": TrainConfig fields}."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {list(PRESETS)}, got {name!r}")
    return {part: dict(fields) for part, fields in PRESETS[name].items()}
