"""One HOLA mixer: prefill equals the float64 oracle composition of docs/math.md sections 1-4, and
decoding one token at a time (holding only state, cache, pending block and conv tail)
reproduces the prefill outputs over several cache blocks, with memory constant in T, on every
backend that runs here, with the rows of one batch at different positions."""

import math

import pytest
import torch

from hola_dsl import backends

from hola_dsl.testing import rel_err, select_inputs, Shape
from hola_dsl.reference import oracle
from model.config import HOLAConfig
from model.mixer import CACHE_EPS, Entries, HOLAMixer, MixerMemory, top_entries

C, W, CHUNK = 16, 6, 16
T = 3 * C + 5  # three full cache blocks and a partial one
VARIANTS = ["gdn", "hola", "hola-recency", "ahn", "lola"]
OTHER_BACKENDS = [b.name for b in backends.available("cpu") if b.name != "reference"]


def make_mixer(variant: str, seed: int = 0) -> HOLAMixer:
    torch.manual_seed(seed)
    config = HOLAConfig(vocab_size=16, d_model=24, n_heads=2, head_k_dim=8, head_v_dim=12, variant=variant,
                        cache_capacity=W, cache_block=C, chunk_size=CHUNK)
    mixer = HOLAMixer(config)
    with torch.no_grad():  # large, varied weights so that every path (cache included) matters
        for p in mixer.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
        if mixer.policy is not None:
            mixer.cache_gate.fill_(1.0)
            mixer.sink.normal_(0, 1)
            mixer.gamma_q.uniform_(0.5, 2.0)
            mixer.gamma_k.uniform_(0.5, 2.0)
    return mixer.eval()


def oracle_mixer(mixer: HOLAMixer, x: torch.Tensor) -> torch.Tensor:
    """The mixer's output with the scan, selection and read computed by the float64 oracle."""
    c = mixer.config
    B, T_, _ = x.shape
    q, k, v, g, beta, _ = mixer._features(x, mixer._tail0(B, x.device, x.dtype))
    if c.variant == "ahn":
        o = torch.zeros(B, T_, c.n_heads, c.head_v_dim, dtype=torch.float64)
        for n in range(math.ceil(T_ / C)):
            a = max(0, n * C - W)
            if a > 0:
                _, _, S = oracle.naive_delta_scan(q[:, :a], k[:, :a], v[:, :a], g[:, :a], beta[:, :a],
                                                     output_final_state=True)
                qb = q[:, n * C:(n + 1) * C].double() * c.head_k_dim ** -0.5
                o[:, n * C:(n + 1) * C] = torch.einsum("bthk,bhkv->bthv", qb, S)
        scores = torch.zeros_like(g)
    else:
        o, m, _ = oracle.naive_delta_scan(q, k, v, g, beta)
        scores = m
    if mixer.policy == "lola":
        states = oracle.naive_block_states(k, v, g, beta, block_size=C)
        idx = oracle.naive_lola_select(k, v, states, capacity=W, block_size=C)
    elif mixer.policy is not None:
        idx = oracle.naive_cache_select(scores, capacity=W, block_size=C, policy=mixer.policy)
    if mixer.policy is not None:
        oc = oracle.naive_cache_read(q, k, v, idx, mixer.gamma_q, mixer.gamma_k, mixer.sink,
                                        block_size=C, eps=CACHE_EPS)
        o = o + torch.sigmoid(mixer.cache_gate.double()).view(1, 1, -1, 1) * oc
    return mixer._output(x, o.float())


def memory_numel(mem) -> int:
    tensors = [mem.pos, mem.conv, mem.state] + ([mem.absorbed] if mem.absorbed is not None else [])
    if mem.slots is not None:
        tensors += list(mem.slots.fields())
    return sum(t.numel() for t in tensors)


def memory_bound(mixer: HOLAMixer, B: int) -> int:
    """State + conv tail + w cache slots + one block of slots (+ positions), whatever T is."""
    c = mixer.config
    D = 2 * c.n_heads * c.head_k_dim + c.n_heads * c.head_v_dim
    n = B + B * (c.conv_size - 1) * D + B * c.n_heads * c.head_k_dim * c.head_v_dim
    if mixer.policy is not None:
        per_entry = c.head_k_dim + c.head_v_dim + 4          # k, v, score, pos, g, beta
        n += B + B * c.n_heads * (W + C) * per_entry
    return n


@pytest.mark.parametrize("variant", ["gdn", "hola", "hola-recency", "ahn"])
def test_prefill_matches_float64_oracle(variant):
    mixer = make_mixer(variant)
    x = torch.randn(2, T, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = mixer(x, backend="reference")
        ref = oracle_mixer(mixer, x)
    assert rel_err(y, ref) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_decode_reproduces_prefill(variant):
    mixer = make_mixer(variant)
    x = torch.randn(2, T, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = mixer(x, backend="reference")
        mem = mixer.init_memory(2)
        outs = torch.full_like(y, float("nan"))  # poisoned: every step must write its slot
        sizes = []
        for t in range(T):
            outs[:, t : t + 1], mem = mixer.step(x[:, t : t + 1], mem, backend="reference")
            sizes.append(memory_numel(mem))
            assert mem.pos.tolist() == [t + 1, t + 1]
    assert rel_err(outs, y) <= 1e-5
    # Memory is the same size after every token, and no more than its bound.
    assert set(sizes) == {memory_numel(mixer.init_memory(2))} and sizes[0] <= memory_bound(mixer, 2)


def decode_ragged(mixer: HOLAMixer, x: torch.Tensor, lengths: list[int], steps: int, backend: str):
    """Prefill row b's first lengths[b] tokens on its own (reference), join the rows into one
    batch and decode ``steps`` more tokens per row together on ``backend``: [B, steps, d]."""
    mems = []
    for b, n in enumerate(lengths):
        if n:
            mems.append(mixer(x[b : b + 1, :n], backend="reference", return_memory=True)[1])
        else:
            mems.append(mixer.init_memory(1))
        assert memory_numel(mems[-1]) == memory_numel(mixer.init_memory(1))   # whatever the length
    mem = MixerMemory.cat(mems)
    size = memory_numel(mem)
    outs = torch.full((len(lengths), steps, x.shape[-1]), float("nan"))
    at = torch.tensor(lengths)
    for i in range(steps):
        xi = x[torch.arange(len(lengths)), at + i][:, None]
        outs[:, i : i + 1], mem = mixer.step(xi, mem, backend=backend)
        assert memory_numel(mem) == size
    assert mem.pos.tolist() == [n + steps for n in lengths]
    return outs


# Rows at a block boundary, inside one, and empty, which cross the next boundaries at different
# steps of one batch.
LENGTHS, STEPS = [C, 2 * C + 7, 0], C + 4


def check_ragged(variant: str, backend: str) -> None:
    mixer = make_mixer(variant)
    x = torch.randn(3, max(LENGTHS) + STEPS, 24, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        got = decode_ragged(mixer, x, LENGTHS, STEPS, backend)
        for b, n in enumerate(LENGTHS):
            want = mixer(x[b : b + 1, : n + STEPS], backend="reference")[:, n:]
            assert rel_err(got[b : b + 1], want) <= 1e-5, (b, n)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_decode_rows_at_different_positions(variant):
    check_ragged(variant, "reference")


@pytest.mark.slow
@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the reference backend is available here")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_decode_on_every_backend(variant, backend):
    check_ragged(variant, backend)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["hola", "ahn", "lola"])
def test_prefill_memory_continues_decoding(variant):
    mixer = make_mixer(variant)
    x = torch.randn(2, T, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = mixer(x, backend="reference")
        for split in (2 * C, 2 * C + 7):  # at a block boundary and inside a block
            head, mem = mixer(x[:, :split], backend="reference", return_memory=True)
            outs = [head]
            for t in range(split, T):
                out, mem = mixer.step(x[:, t : t + 1], mem, backend="reference")
                outs.append(out)
            assert rel_err(torch.cat(outs, 1), y) <= 1e-5, split


def test_cache_matters_and_policies_differ():
    """Guard against a test that cannot fail: the cache changes the output, and the three
    policies select different sets on these inputs."""
    x = torch.randn(2, T, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        hola, recency, lola = make_mixer("hola"), make_mixer("hola-recency"), make_mixer("lola")
        recency.load_state_dict(hola.state_dict())
        lola.load_state_dict(hola.state_dict())
        y_h, y_r, y_l = hola(x), recency(x), lola(x)
        hola.cache_gate.fill_(-30.0)
        y_off = hola(x)
    assert rel_err(y_h, y_r) > 1e-3
    assert rel_err(y_l, y_h) > 1e-3 and rel_err(y_l, y_r) > 1e-3
    assert rel_err(y_h, y_off) > 1e-2


def test_incremental_selection_matches_oracle_on_ties():
    """Merging each finished block into the cache (the decoder's rule) gives the oracle's rows,
    in order, even with many tied scores."""
    shape = Shape(B=2, T=5 * C, H=2, W=W, C=C)
    scores = select_inputs(shape, seed=5, ties=True)
    ref = oracle.naive_cache_select(scores, capacity=W, block_size=C, policy="hola")
    B, T_, H = scores.shape
    cache = Entries.empty(B, H, W, 1, 1, "cpu", torch.float32)
    assert bool((ref[:, :, 0] == -1).all())
    for n in range(1, T_ // C):
        lo = (n - 1) * C
        block = Entries(k=torch.zeros(B, H, C, 1), v=torch.zeros(B, H, C, 1),
                        score=scores[:, lo:lo + C].transpose(1, 2).float(),
                        pos=torch.arange(lo, lo + C).expand(B, H, C), g=torch.zeros(B, H, C),
                        beta=torch.zeros(B, H, C))
        cache = top_entries(cache.cat(block), W, "hola")
        assert torch.equal(cache.pos, ref[:, :, n])
