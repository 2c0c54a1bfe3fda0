"""NaN scores in cache_select (docs/math.md section 2). With value checks on they are an error; with
them off every backend follows one rule: a NaN score counts as -inf, the lowest score, so a
NaN token still beats an empty slot and ties with -inf tokens (the later position wins).
Both forms of the kernel (the schedule's ``split``: serial, blocks+merge) on every DSL backend
match the oracle exactly on the tie cases (all-equal, -inf, NaN, few distinct values) at the
awkward lengths (T = 1, T < C, W > tokens, T not a multiple of C)."""

from __future__ import annotations

import pytest
import torch

from hola_dsl import backends, ops
from hola_dsl.reference.oracle import naive_cache_select
from schedules.cache_select import SPLITS

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


def _tie_cases(T: int) -> torch.Tensor:
    """[1, T, 5]: all equal; all -inf; NaN, -inf and a few real values; four distinct values
    with -inf; NaN between equal scores."""
    t = torch.arange(T)
    few = (t * 7 % 4) / 4.0
    return torch.stack([torch.full((T,), 0.5), torch.full((T,), -INF),
                        torch.where(t % 3 == 0, NAN, torch.where(t % 5 == 0, 1.0, -INF)),
                        torch.where(t % 6 == 1, -INF, few),
                        torch.where(t % 4 == 2, NAN, torch.full((T,), 0.25))], -1)[None]


def _split_params() -> list:
    """(backend, split): eager and Triton's interpreter in the fast subset; TileLang's C
    dialect compiles each form (slow)."""
    return [pytest.param(b, split, marks=pytest.mark.slow if b == "tilelang" else ())
            for b in BACKENDS if b in DSL for split in SPLITS]


@pytest.mark.parametrize("backend,split", _split_params())
def test_splits_exact_on_tie_cases(backend, split, monkeypatch):
    """W = 10, C = 16 = BC: T = 1, T = 8 (< C and < W), T = 40 (a partial last block), T = 70
    (five blocks: four merges of winners); policy hola, recency at T = 40, float64 at T = 70."""
    monkeypatch.setenv("HOLA_CHECK_VALUES", "0")
    for T, policy, dtype in ((1, "hola", torch.float32), (8, "hola", torch.float32), (40, "hola", torch.float32),
                             (70, "hola", torch.float32), (40, "recency", torch.float32), (70, "hola", torch.float64)):
        s = _tie_cases(T).to(dtype)
        if dtype == torch.float64:      # differences float32 would round away (the scratch keeps float64)
            s[0, :, 3] += (torch.arange(T) % 3) * 1e-13
        got = ops.cache_select(s, capacity=10, block_size=16, policy=policy, backend=backend,
                               config={"BC": 16, "split": split})
        assert torch.equal(got, naive_cache_select(s, capacity=10, block_size=16, policy=policy)), (T, policy, dtype)


def test_blocks_plan_joins_its_phases_by_a_poisoned_scratch():
    """blocks+merge: two launches, the block phase writes the scratch the merge reads (winners
    and their scores); it starts poisoned (-2, NaN) so a slot the block phase skips is no silent
    -1 or -inf."""
    from hola_dsl.kernels import cache_select as k

    s = torch.rand(2, 50, 3)
    p = k.plan({"BC": 16, "split": "blocks+merge"}, s, capacity=10, block_size=16, policy="hola")
    (blocks, merge) = p.launches
    assert (blocks.kernel, merge.kernel) == (k.cache_select_blocks, k.cache_select_merge)
    win, wsc = blocks.args["win"], blocks.args["wsc"]
    assert win is merge.args["win"] and win.shape == (2, 3, 4, 16) and win.dtype == torch.int32
    assert wsc is merge.args["wsc"] and wsc.shape == (2, 3, 4, 16) and wsc.dtype == torch.float32
    assert (win == -2).all() and wsc.isnan().all()
    (serial,) = k.plan({"BC": 16}, s, capacity=10, block_size=16, policy="hola").launches
    assert serial.kernel is k.cache_select
    with pytest.raises(ValueError, match="split: expected one of"):
        k.plan({"BC": 16, "split": "scan"}, s, capacity=10, block_size=16, policy="hola")


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
    """docs/math.md section 2: scores may be any real number, -inf included (and inf ranks first)."""
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
