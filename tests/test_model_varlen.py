"""Prefill of packed prompts (cu_seqlens): every recurrent variant's logits equal running each
prompt alone (no short convolution, state or cache block leaks across prompts)."""

from __future__ import annotations

import pytest
import torch

from model.config import HOLAConfig
from model.lm import HOLALM
from model.mixer import causal_conv, packed_causal_conv

LENGTHS = (1, 5, 16, 0, 37)


def _lm(variant: str) -> HOLALM:
    torch.manual_seed(0)
    config = HOLAConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, head_k_dim=16, head_v_dim=16,
                        variant=variant, cache_capacity=5, cache_block=16, chunk_size=16)
    lm = HOLALM(config)
    with torch.no_grad():
        for block in lm.blocks:     # open the cache gate so that the cache read counts
            if hasattr(block.mixer, "cache_gate"):
                block.mixer.cache_gate.fill_(1.0)
    return lm.eval()


def test_packed_conv_matches_each_alone():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, sum(LENGTHS), 6, generator=gen), torch.randn(6, 4, generator=gen)
    offsets = [0] + torch.tensor(LENGTHS).cumsum(0).tolist()
    y = packed_causal_conv(x, w, offsets)
    assert y.shape == x.shape
    for s, e in zip(offsets[:-1], offsets[1:]):
        if e > s:
            alone, _ = causal_conv(x[:, s:e], w, torch.zeros(1, 3, 6))
            assert torch.equal(y[:, s:e], alone)


@pytest.mark.parametrize("variant", ["gdn", "hola", "hola-recency", "ahn", "lola"])
def test_packed_prefill_matches_each_alone(variant):
    lm = _lm(variant)
    ids = torch.randint(0, 64, (1, sum(LENGTHS)), generator=torch.Generator().manual_seed(1))
    cu = torch.tensor([0] + torch.tensor(LENGTHS).cumsum(0).tolist())
    with torch.no_grad():
        packed = lm(ids, backend="reference", cu_seqlens=cu)
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
            if e > s:
                alone = lm(ids[:, s:e], backend="reference")
                torch.testing.assert_close(packed[:, s:e], alone, rtol=1e-5, atol=1e-5)


def test_packed_prefill_errors():
    lm = _lm("hola")
    ids = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="B = 1"):
        lm(ids, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="recurrent variant"):
        _lm("transformer")(ids[:1], cu_seqlens=torch.tensor([0, 8]))
