"""One HOLA mixer: prefill equals the float64 oracle composition of SPEC.md sections 1-4, and
decoding one token at a time (holding only state, cache, pending block and conv tail)
reproduces the prefill outputs over several cache blocks, with memory constant in T."""

import math

import pytest
import torch

from hola_dsl.testing import rel_err, select_inputs, Shape
from hola_dsl.reference import oracle
from model.config import HOLAConfig
from model.mixer import CACHE_EPS, Entries, HOLAMixer, top_entries

C, W, CHUNK = 16, 6, 16
T = 3 * C + 5  # three full cache blocks and a partial one


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
    tensors = [mem.conv, mem.state]
    for entries in (mem.cache, mem.block):
        if entries is not None:
            tensors += list(entries.fields())
    return sum(t.numel() for t in tensors)


@pytest.mark.parametrize("variant", ["gdn", "hola", "hola-recency", "ahn", "lola"])
def test_prefill_matches_float64_oracle(variant):
    mixer = make_mixer(variant)
    x = torch.randn(2, T, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = mixer(x, backend="reference")
        ref = oracle_mixer(mixer, x)
    assert rel_err(y, ref) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["hola", "hola-recency", "ahn", "lola", "gdn"])
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
            if mem.cache is not None:
                assert mem.cache.size == W and mem.block.size == (t + 1) % C
    assert rel_err(outs, y) <= 1e-5
    # Memory is bounded by state + conv tail + w cache slots + one block, whatever T is.
    bound = memory_numel(mixer.init_memory(2))
    if mixer.policy is not None:
        per_entry = sum(f.numel() for f in Entries.empty(2, 2, 1, 8, 12, "cpu", torch.float32).fields())
        bound += C * per_entry
    assert max(sizes) <= bound
    if mixer.policy is not None:
        assert sizes[C - 1] == sizes[2 * C - 1] == sizes[3 * C - 1]  # right after each merge


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
