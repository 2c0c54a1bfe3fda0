"""Policy "lola"'s selection (docs/math.md section 2, LoLA's self-recall error): the float64 oracle's
meaning on hand-made cases, and every backend exactly equal to it (idx, order included).

Exact equality across backends is well posed on two kinds of inputs: integer-valued k, v and
states (every product and sum exact in float32, so ties are exact ties: duplicated tokens,
entries the state has learned exactly with sre = 0), and seeded random inputs whose sre values
are further apart than float32 rounding (checked, not assumed)."""

from __future__ import annotations

import math

import pytest
import torch

from hola_dsl import backends, ops
from hola_dsl.reference import oracle
from hola_dsl.testing import Shape, lola_inputs

DSL = ("eager", "triton", "tilelang")
FAST = [b for b in ("reference", "eager") if backends.unavailable_reason(b) is None]
COMPILED = [b for b in ("triton", "tilelang") if backends.unavailable_reason(b) is None]
K, V = 8, 12


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


def _integer_case(T: int, C: int, seed: int, W: int = 1):
    """Integer-valued k, v, states with duplicated tokens and exactly learned entries
    (``hola_dsl.testing.lola_inputs``, what `hola check` runs)."""
    x = lola_inputs(Shape(B=2, T=T, H=2, K=K, V=V, W=W, C=C), seed=seed)
    return x["k"], x["v"], x["states"]


def _random_case(T: int, C: int, seed: int, B: int = 1, H: int = 2):
    """Unit-L2 keys, the scan's own block-start states (float32), and the gap check."""
    gen = torch.Generator().manual_seed(seed)
    k = ops.l2norm(torch.randn(B, T, H, K, generator=gen))
    v = torch.randn(B, T, H, V, generator=gen)
    g = -torch.rand(B, T, H, generator=gen) * 0.2
    beta = torch.rand(B, T, H, generator=gen)
    states = oracle.naive_block_states(k, v, g, beta, block_size=C).float()
    for n in range(1, states.shape[2]):              # every sre any step could rank, per (b, h)
        sre = oracle.self_recall_error(k[:, : n * C].transpose(1, 2), v[:, : n * C].transpose(1, 2),
                                       states[:, :, n]).sort(-1).values
        gap = ((sre[..., 1:] - sre[..., :-1]) / sre[..., 1:]).min().item()
        assert gap > 1e-5, f"seed {seed}: sre values {gap:.1e} apart, within float32 rounding"
    return k, v, states


def _select(backend, k, v, states, W, C, config=None):
    return ops.lola_select(k, v, states, capacity=W, block_size=C, backend=backend, config=config)


# (T, C, W): T not a multiple of C; W above the candidates (32 + 32 < 70); T < C; T = 1.
SHAPES = [(150, 32, 12), (100, 32, 70), (20, 32, 12), (1, 32, 12)]


def test_oracle_evicts_what_the_state_learned():
    """Blocks of 4 tokens with one-hot keys e0..e3 (repeated in each block). The state at block
    1's start recalls token 1 exactly (sre 0): Cache_1 = tokens 3, 2, 0 (sre 4, 3, 1). The
    state at block 2's start recalls token 3 instead and has forgotten token 1's key: token 3
    (sre 0 now) leaves, tokens 2 and 6 tie at 3 (the later first), then token 5 (sre 2)."""
    k = torch.eye(4).view(1, 4, 1, 4).repeat(1, 3, 1, 1)           # tokens 4..7, 8..11 repeat the keys
    v = torch.tensor([[1.0, 0], [0, 2], [3, 0], [0, 4]]).repeat(3, 1).view(1, 12, 1, 2)
    S = torch.zeros(1, 1, 3, 4, 2)
    S[0, 0, 1, 1] = torch.tensor([0.0, 2])                          # learned token 1 (and 5)
    S[0, 0, 2, 3] = torch.tensor([0.0, 4])                          # learned token 3 (and 7)
    idx = oracle.naive_lola_select(k, v, S, capacity=3, block_size=4)
    assert idx[0, 0].tolist() == [[-1, -1, -1], [3, 2, 0], [6, 2, 5]]


def test_oracle_ranks_ties_by_later_position_and_pads():
    k = torch.zeros(1, 6, 1, 2)
    v = torch.ones(1, 6, 1, 2)                                      # every sre = sqrt(2)
    idx = oracle.naive_lola_select(k, v, torch.zeros(1, 1, 3, 2, 2), capacity=5, block_size=2)
    assert idx[0, 0].tolist() == [[-1] * 5, [1, 0, -1, -1, -1], [3, 2, 1, 0, -1]]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("T, C, W", SHAPES)
def test_integer_ties_exact(backend, T, C, W):
    k, v, states = _integer_case(T, C, seed=T)
    want = oracle.naive_lola_select(k, v, states, capacity=W, block_size=C)
    assert (want >= 0).any() or T <= C                             # the case selects something
    assert torch.equal(_select(backend, k, v, states, W, C, {"BC": 16} if backend in DSL else None), want)


@pytest.mark.parametrize("backend", FAST)
def test_random_exact(backend):
    k, v, states = _random_case(130, 32, seed=1)
    want = oracle.naive_lola_select(k, v, states, capacity=8, block_size=32)
    assert torch.equal(_select(backend, k, v, states, 8, 32), want)


@pytest.mark.slow
@pytest.mark.parametrize("backend", COMPILED)
def test_compiled_backends_exact(backend):
    """Triton (interpreter) and TileLang (C): the integer ties at two shapes (one with C = 40,
    not a multiple of BC = 16) and the random case, one compile per shape."""
    for T, C, W in ((150, 32, 12), (100, 40, 70)):
        k, v, states = _integer_case(T, C, seed=T)
        assert torch.equal(_select(backend, k, v, states, W, C, {"BC": 16}),
                           oracle.naive_lola_select(k, v, states, capacity=W, block_size=C)), (T, C, W)
    k, v, states = _random_case(130, 32, seed=1)
    assert torch.equal(_select(backend, k, v, states, 12, 32, {"BC": 16}),
                       oracle.naive_lola_select(k, v, states, capacity=12, block_size=32))


def test_bad_inputs_name_the_argument():
    k, v, states = _integer_case(40, 16, seed=0)
    with pytest.raises(ValueError, match="states: dim NB is 3, expected ceil"):
        ops.lola_select(k, v, states, capacity=4, block_size=32)
    with pytest.raises(TypeError, match="v: expected the dtype of k"):
        ops.lola_select(k, v.half(), states, capacity=4, block_size=16)
    with pytest.raises(ValueError, match="states"):
        ops.lola_select(k, v, states[:, :, :, :, :5], capacity=4, block_size=16)
    bad = states.clone()
    bad[0, 0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="states"):
        ops.lola_select(k, v, bad, capacity=4, block_size=16)
    with pytest.raises(ValueError, match="lola_select"):
        ops.cache_select(torch.zeros(1, 4, 1), policy="lola")


def test_auto_takes_bf16_cpu_inputs_to_a_backend_that_computes_them():
    """"auto" skips TileLang for bf16 CPU inputs (its C dialect has no bf16) instead of failing."""
    gen = torch.Generator().manual_seed(5)
    k = torch.randn(1, 8, 2, 16, generator=gen).bfloat16()
    v = torch.randn(1, 8, 2, 16, generator=gen).bfloat16()
    states = torch.randn(1, 2, 2, 16, 16, generator=gen)
    got = ops.lola_select(k, v, states, capacity=2, block_size=4, backend="auto")
    assert torch.equal(got, ops.lola_select(k, v, states, capacity=2, block_size=4, backend="reference"))
