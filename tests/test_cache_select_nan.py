"""NaN scores in cache_select (SPEC.md section 2). With value checks on they are an error; with
them off every backend follows one rule: a NaN score counts as -inf, the lowest score, so a
NaN token still beats an empty slot and ties with -inf tokens (the later position wins)."""

from __future__ import annotations

import pytest
import torch

from hola_dsl import backends, ops
from hola_dsl.reference.oracle import naive_cache_select

BACKENDS = [b for b in ("reference", "eager", "tilelang", "triton") if backends.unavailable_reason(b) is None]
DSL = {"eager", "tilelang", "triton"}
NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


def _scores(dtype) -> torch.Tensor:
    """[1, 130, 3]: head 0 random with NaN and -inf sprinkled and ties, head 1 all NaN but a few,
    head 2 NaN and -inf alternating with a block of real scores."""
    gen = torch.Generator().manual_seed(3)
    s = (torch.rand(1, 130, 3, generator=gen) * 4).floor() / 4
    pick = torch.rand(1, 130, 3, generator=gen)
    s[..., 0] = torch.where(pick[..., 0] < 0.2, NAN, torch.where(pick[..., 0] > 0.9, -INF, s[..., 0]))
    s[..., 1] = NAN
    s[0, [7, 45, 90], 1] = torch.tensor([0.5, -INF, 0.5])
    s[0, :, 2] = torch.where(torch.arange(130) % 2 == 0, NAN, -INF)
    s[0, 40:80, 2] = torch.rand(40, generator=gen)
    return s.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_nan_scores_follow_one_rule_on_every_backend(backend, dtype, monkeypatch):
    """W = 10, C = 40 (not a multiple of BC = 16: every block's last merge is part padding)."""
    monkeypatch.setenv("HOLA_CHECK_VALUES", "0")
    s = _scores(dtype)
    want = naive_cache_select(s, capacity=10, block_size=40)
    got = ops.cache_select(s, capacity=10, block_size=40, backend=backend,
                           config={"BC": 16} if backend in DSL else None)
    assert torch.equal(got, want)


def test_oracle_counts_nan_as_minus_inf():
    s = torch.tensor([NAN, 2.0, -INF, NAN, 1.0, 0.0]).view(1, 6, 1)
    idx = naive_cache_select(s, capacity=3, block_size=2)
    assert idx[0, 0].tolist() == [[-1, -1, -1], [1, 0, -1], [1, 3, 2]]
    for s in (s, _scores(torch.float32)):
        assert torch.equal(naive_cache_select(s, capacity=3, block_size=2),
                           naive_cache_select(torch.where(s.isnan(), -INF, s), capacity=3, block_size=2))


def test_nan_scores_are_an_error_while_value_checks_are_on():
    with pytest.raises(ValueError, match="scores: contains NaN"):
        ops.cache_select(_scores(torch.float32), capacity=10, block_size=40, backend="reference")


@pytest.mark.parametrize("backend", BACKENDS)
def test_infinite_scores_are_numbers_while_value_checks_are_on(backend):
    """SPEC.md section 2: scores may be any real number, -inf included (and inf ranks first)."""
    s = torch.rand(1, 100, 2, generator=torch.Generator().manual_seed(4))
    s[0, ::7, 0], s[0, ::11, 1] = -INF, INF
    got = ops.cache_select(s, capacity=8, block_size=32, backend=backend,
                           config={"BC": 16} if backend in DSL else None)
    assert torch.equal(got, naive_cache_select(s, capacity=8, block_size=32))


def test_decoder_merge_follows_the_same_rule():
    """The decoder's merge of its pending block (model.mixer.top_entries) ranks like the prefill."""
    from model.mixer import Entries, top_entries
    scores = torch.tensor([NAN, 2.0, -INF, NAN, 1.0]).view(1, 1, 5)
    e = Entries.empty(1, 1, 5, 2, 2, "cpu", torch.float32)
    e = Entries(e.k, e.v, scores, torch.arange(5).view(1, 1, 5), e.g, e.beta)
    best = top_entries(e.cat(Entries.empty(1, 1, 2, 2, 2, "cpu", torch.float32)), 6, "hola")
    assert best.pos[0, 0].tolist() == [1, 4, 3, 2, 0, -1]
