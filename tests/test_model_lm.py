"""The language model: token-by-token decoding reproduces prefill logits for every variant,
prefill hands decoding a memory it can continue from, and save/load keeps the logits."""

import pytest
import torch

from hola_dsl.testing import rel_err
from model import HOLAConfig, HOLALM
from model.config import VARIANTS

T = 2 * 16 + 9  # more than two cache blocks of 16


def make_lm(variant: str) -> HOLALM:
    torch.manual_seed(0)
    config = HOLAConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, head_k_dim=16, head_v_dim=16,
                        variant=variant, cache_capacity=5, cache_block=16, chunk_size=16)
    lm = HOLALM(config)
    with torch.no_grad():
        for block in lm.blocks:  # open the cache gate so that decoding's cache path is exercised
            if hasattr(block.mixer, "cache_gate"):
                block.mixer.cache_gate.fill_(1.0)
    return lm.eval()


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_decode_steps_reproduce_prefill_logits(variant):
    lm = make_lm(variant)
    ids = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = lm(ids)
        mem = lm.init_decode(2)
        steps = torch.full_like(logits, float("nan"))
        for t in range(T):
            steps[:, t], mem = lm.decode_step(ids[:, t], mem)
        split = 16 + 3
        head, mem = lm.prefill(ids[:, :split])
        cont = [head]
        for t in range(split, T):
            out, mem = lm.decode_step(ids[:, t : t + 1], mem)
            cont.append(out[:, None])
    assert logits.shape == (2, T, 64)
    assert rel_err(steps, logits) <= 1e-5
    assert rel_err(torch.cat(cont, 1), logits) <= 1e-5


@pytest.mark.slow
def test_generate_is_greedy_decoding():
    lm = make_lm("hola")
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(2))
    new = lm.generate(ids, 6)
    with torch.no_grad():
        full = torch.cat([ids, new], 1)
        assert torch.equal(lm(full)[:, 19:-1].argmax(-1), new)


def test_save_load_roundtrip(tmp_path):
    lm = make_lm("ahn")
    ids = torch.randint(0, 64, (1, T), generator=torch.Generator().manual_seed(3))
    lm.save(tmp_path / "ckpt")
    again = HOLALM.load(tmp_path / "ckpt")
    assert again.config == lm.config
    with torch.no_grad():
        assert torch.equal(again(ids), lm(ids))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="variant"):
        HOLAConfig(variant="mamba")
    with pytest.raises(ValueError, match="cache_block"):
        HOLAConfig(cache_block=100, chunk_size=64)
    with pytest.raises(FileNotFoundError, match="config.json"):
        HOLALM.load("/nonexistent/checkpoint")
