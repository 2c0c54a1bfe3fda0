"""The same weights give the same logits and the same perplexity on every backend available
here (docs/tolerances.md: float32 relative error <= 1e-5 for logits; perplexity to 1e-4)."""

import pytest
import torch

from hola_dsl import backends
from hola_dsl.testing import TOLERANCE, rel_err
from model import HOLAConfig, HOLALM
from model.evaluate import perplexity

VARIANTS = ("gdn", "hola", "hola-recency", "ahn", "lola")
OTHER_BACKENDS = [b.name for b in backends.available("cpu") if b.name != "reference"]


def make_lm(variant: str) -> HOLALM:
    torch.manual_seed(0)
    config = HOLAConfig(vocab_size=48, d_model=32, n_layers=2, n_heads=2, head_k_dim=16, head_v_dim=16,
                        variant=variant, cache_capacity=4, cache_block=16, chunk_size=16)
    lm = HOLALM(config)
    with torch.no_grad():
        for block in lm.blocks:
            if hasattr(block.mixer, "cache_gate"):
                block.mixer.cache_gate.fill_(1.0)
    return lm.eval()


@pytest.mark.slow
@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the reference backend is available here")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_agree_across_backends(variant, backend):
    lm = make_lm(variant)
    ids = torch.randint(0, 48, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lm(ids, backend="reference")
        out = lm(ids, backend=backend)
    assert torch.isfinite(ref).all()
    assert rel_err(out, ref) <= TOLERANCE[torch.float32]


@pytest.mark.slow
@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the reference backend is available here")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_perplexity_agrees_across_backends(backend):
    lm = make_lm("hola")
    tokens = torch.randint(0, 48, (150,), generator=torch.Generator().manual_seed(2))
    ref = perplexity(lm, tokens, seq_len=40, batch_size=2, backend="reference")
    out = perplexity(lm, tokens, seq_len=40, batch_size=2, backend=backend)
    assert ref["tokens"] == out["tokens"] == 149
    assert abs(out["perplexity"] - ref["perplexity"]) <= 1e-4 * ref["perplexity"]


def test_perplexity_counts_every_token_once():
    """Windowing must neither drop nor double-count tokens: the sum over windows equals one
    long forward pass when the window is the whole stream (and the model is causal)."""
    lm = make_lm("gdn")
    tokens = torch.randint(0, 48, (70,), generator=torch.Generator().manual_seed(3))
    table = list(range(1, 49))
    whole = perplexity(lm, tokens, table, seq_len=69)
    with torch.no_grad():
        logits = lm(tokens[None, :-1])
        nll = torch.nn.functional.cross_entropy(logits[0].double(), tokens[1:], reduction="mean").item()
    assert whole["tokens"] == 69 and abs(whole["loss"] - nll) < 1e-9
    assert whole["bytes"] == int(torch.tensor(table)[tokens[1:]].sum())
    windows = perplexity(lm, tokens, table, seq_len=16, batch_size=3)
    assert windows["tokens"] == 69 and windows["bytes"] == whole["bytes"]
