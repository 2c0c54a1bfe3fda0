"""generate: greedy is argmax decoding, top-k = 1 and a tiny top-p are greedy, a stop token ends
its row only, seeds reproduce draws, and prompts of different lengths in one batch continue
exactly as each does alone."""

import pytest
import torch

from model import HOLAConfig, HOLALM
from model.generate import sample

VOCAB = 64


def make_lm(variant: str = "hola") -> HOLALM:
    torch.manual_seed(0)
    config = HOLAConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=2, head_k_dim=16, head_v_dim=16,
                        variant=variant, cache_capacity=5, cache_block=16, chunk_size=16)
    lm = HOLALM(config)
    with torch.no_grad():
        for block in lm.blocks:
            if hasattr(block.mixer, "cache_gate"):
                block.mixer.cache_gate.fill_(1.0)
    return lm.eval()


def prompts(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g) for n in lengths]


def test_greedy_is_argmax_of_the_full_forward():
    lm = make_lm()
    ids = torch.stack(prompts([20, 20]))
    new = lm.generate(ids, 6)
    with torch.no_grad():
        assert torch.equal(lm(torch.cat([ids, new], 1))[:, 19:-1].argmax(-1), new)


def test_top_k_one_and_tiny_top_p_are_greedy():
    lm = make_lm()
    ids = torch.stack(prompts([9, 9, 9]))
    greedy = lm.generate(ids, 8)
    assert torch.equal(lm.generate(ids, 8, temperature=1.5, top_k=1, seed=3), greedy)
    assert torch.equal(lm.generate(ids, 8, temperature=1.5, top_p=1e-6, seed=3), greedy)
    wide = lm.generate(ids, 8, temperature=5.0, seed=3)
    assert not torch.equal(wide, greedy)          # sampling does sample


def test_seeds_reproduce_and_differ():
    lm = make_lm()
    ids = torch.stack(prompts([7, 7]))
    a = lm.generate(ids, 10, temperature=2.0, top_k=20, top_p=0.95, seed=11)
    b = lm.generate(ids, 10, temperature=2.0, top_k=20, top_p=0.95, seed=11)
    c = lm.generate(ids, 10, temperature=2.0, top_k=20, top_p=0.95, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_respects_top_k_and_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).expand(400, 5)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, top_k=2, generator=g).tolist()) == {0, 1}
    # p = softmax: 0.64, 0.24, 0.09, ...: 0.7 keeps the two most likely (0.64 < 0.7 <= 0.88)
    assert set(sample(logits, top_p=0.7, generator=g).tolist()) == {0, 1}


def test_stop_token_stops_its_row_only():
    lm = make_lm()
    ids = torch.stack(prompts([11, 11, 11], seed=4))
    greedy = lm.generate(ids, 12)
    stop = int(greedy[0, 2])
    out = lm.generate(ids, 12, stop_token=stop, pad_token=-7)
    for row, want in zip(out, greedy):
        hits = (want == stop).nonzero()
        end = int(hits[0]) + 1 if len(hits) else 12
        assert torch.equal(row[:end], want[:end])
        assert bool((row[end:] == -7).all())
    assert bool((out[0, 3:] == -7).all())            # row 0 emits the stop token by its third token


@pytest.mark.parametrize("variant", ["hola", pytest.param("ahn", marks=pytest.mark.slow)])
def test_prompts_of_different_lengths_decode_as_alone(variant):
    """Rows at different positions in one batch (crossing cache blocks at different steps)."""
    lm = make_lm(variant)
    rows = prompts([3, 17, 30, 17])
    together = lm.generate(rows, 14)
    for row, p in zip(together, rows):
        assert torch.equal(row, lm.generate(p[None], 14)[0])


def test_bad_arguments_are_named():
    lm = make_lm("gdn")
    ids = torch.stack(prompts([4]))
    for kwargs, needle in (({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"),
                           ({"top_p": 0.0}, "top_p"), ({"stop_token": VOCAB}, "stop_token")):
        with pytest.raises(ValueError, match=needle):
            lm.generate(ids, 2, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(ids, 0)
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        lm.generate([ids[0], torch.tensor([VOCAB])], 2)
    with pytest.raises(ValueError, match="transformer"):
        make_lm("transformer").generate(prompts([3, 4]), 2)
