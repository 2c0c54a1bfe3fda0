"""The TileLang CPU dialect's fast paths and the selection's shortcuts, each against a slow
truth: the in-place loop-carried accumulator and the per-row load masks (against the eager
interpreter, and in the generated source), and the cache selection's sorted-cache and
later-position shortcuts under adversarial ties (against the float64 oracle, exactly)."""

import re

import pytest
import torch

from hola_dsl import backends, eager, lang as hl, ops
from hola_dsl.kernels import cache_read as cache_read_kernel
from hola_dsl.reference.oracle import naive_cache_select

pytestmark = pytest.mark.skipif(backends.unavailable_reason("tilelang") is not None,
                                reason=f"tilelang backend unavailable: {backends.unavailable_reason('tilelang')}")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


@hl.kernel
def _carried_dots(x: hl.In("N", "D"), pos: hl.In("M", dtype="int32"), ya: hl.Out("N", "D"),
                  yc: hl.Out("N", "D"), ye: hl.Out("N", "D"), yg: hl.Out("N", "D"), *, D: int, STEPS: int):
    (pid,) = hl.grid(1)
    rows, cols = hl.tile(0, 16), hl.tile(0, D)
    t = x[rows, cols].to("float32") * 0.25                               # [16, D], D = 16
    s = hl.sum(t * t, 1)                                                 # [16]
    at = pos.load((hl.tile(0, 16),), other=-1)                           # [16] rows, -1 = none
    g = x.load((at, cols), other=0.0).to("float32")                      # gathered rows, -1 -> 0
    zero = hl.zeros((16, D))

    @hl.loop(0, STEPS, carry=(zero, zero, zero, zero))
    def acc(i, a, c, e, d):
        decay = hl.exp(-s * 0.1 * i.to("float32"))
        a_next = hl.dot(t, g, a * decay[:, None], trans_a=True)         # in place: old a feeds only acc
        c_next = hl.dot(t, t, c * 0.5)                                   # not in place: old c is read below
        d_next = d + c
        e_next = hl.dot(g, t, e.T * 0.5, trans_b=True)                   # not in place: acc reads e transposed
        return a_next, c_next, e_next, d_next

    a, c, e, d = acc
    ya[rows, cols] = a
    yc[rows, cols] = c
    ye[rows, cols] = e
    yg[rows, cols] = d + g


def test_carried_accumulator_in_place_only_when_safe_and_matches_eager():
    from hola_dsl.backends.tilelang import runtime as tilelang_runtime
    from hola_dsl.backends.tilelang import lower_cpu as tilelang_cpu
    kir = _carried_dots.trace({n: "float32" for n in ("x", "ya", "yc", "ye", "yg")} | {"pos": "int32"},
                              D=16, STEPS=3)
    source = tilelang_cpu.emit(kir, {"cpu_mr": 4, "cpu_nr": 16})
    # The accumulate helper writes straight into a's carried buffer (the loop's first carry);
    # c and e get a result tile of their own and a copy back.
    helpers = [ln for ln in source.splitlines() if "T.call_extern(\"int32\", \"hola_dot_" in ln and "_acc\"" in ln]
    written = sorted(re.findall(r"T\.address_of\((\w+)\[", ln)[-1] for ln in helpers)
    assert len(written) == 3 and written[0].startswith("a__"), written
    assert all(w.startswith(("c_next", "e_next")) for w in written[1:]), written
    # The gathered rows test their index once per row, then copy the row without conditions.
    gather = source[source.index("g = x.load"):].splitlines()[1:8]
    assert any(ln.strip().startswith("if ") for ln in gather), gather
    assert not any("if_then_else" in ln for ln in gather), gather

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 16, generator=gen)
    pos = torch.tensor([3, -1, 0, 15, 7, -1, 2, 2, 9, 1, 0, 4, 5, 6, 11, 12], dtype=torch.int32)
    outs = lambda: {n: torch.full((16, 16), float("nan")) for n in ("ya", "yc", "ye", "yg")}
    want, got = outs(), outs()
    eager.run(kir, dict(x=x, pos=pos, **want))
    tilelang_runtime.launch_cpu(kir, {"cpu_mr": 4, "cpu_nr": 16}, dict(x=x, pos=pos, **got), threads=1)
    for name in want:
        assert torch.isfinite(want[name]).all(), name
        assert torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-5), (name, (got[name] - want[name]).abs().max())


def test_cache_read_accumulates_in_place_and_gathers_rows():
    """The shipped kernel takes both paths: no per-trip copy of the accumulator, no
    per-element condition on a gathered cache row."""
    from hola_dsl.kernels.cache_read import cache_read as read_def
    from hola_dsl.backends.tilelang import lower_cpu as tilelang_cpu
    consts = cache_read_kernel.consts(32, 48, 8, 64, 1e-6, {"BQ": 32, "BKV": 16})
    dtypes = {n: "float32" for n in ("q", "k", "v", "gamma_q", "gamma_k", "sink", "o")}
    source = tilelang_cpu.emit(read_def.trace({**dtypes, "idx": "int64"}, **consts), {"cpu_mr": 8, "cpu_nr": 16})
    assert "acc__next" not in source and "_acc\"" in source
    kc = source[source.index("kc = k[b, ids"):].splitlines()[1:6]
    assert any(ln.strip().startswith("if ") for ln in kc) and not any("if_then_else" in ln for ln in kc), kc


def _tied_scores(kind: str, T: int, H: int) -> torch.Tensor:
    t = torch.arange(T, dtype=torch.float32)
    if kind == "all_equal":           # every token ties: the cache is the most recent positions
        s = torch.full((T,), 0.5)
    elif kind == "block_constant":    # a whole block ties with the cached entries of earlier blocks
        s = (t // 24 % 3) * 0.25
    elif kind == "decreasing":        # nothing after the first w tokens ever enters
        s = 1.0 - t / T
    elif kind == "increasing":        # every token enters and evicts the oldest
        s = t / T
    else:                             # few distinct values, repeating with a short period
        s = (t * 7 % 5) / 4
    return torch.stack([s, s.flip(0)] + [s.roll(h) for h in range(H - 2)], -1)[None]


@pytest.mark.parametrize("kind", ["all_equal", "block_constant", "decreasing", "increasing", "periodic"])
@pytest.mark.parametrize("bc", [16, 128])
def test_cache_select_ties_and_orders_exact_on_tilelang(kind, bc):
    """W = 10 (not a power of two), C = 48 (three or more merges of BC = 16 per block, one of
    BC = 128), T = 250 (a partial last block)."""
    scores = _tied_scores(kind, 250, 3)
    want = naive_cache_select(scores, capacity=10, block_size=48)
    got = ops.cache_select(scores, capacity=10, block_size=48, backend="tilelang", config={"BC": bc})
    assert torch.equal(got, want)


@pytest.mark.parametrize("kind", ["all_equal", "block_constant", "periodic"])
def test_cache_select_ties_exact_on_eager_and_float64(kind):
    scores = _tied_scores(kind, 130, 2).double()
    want = naive_cache_select(scores, capacity=7, block_size=32)
    for backend in ("eager", "tilelang"):
        got = ops.cache_select(scores, capacity=7, block_size=32, backend=backend, config={"BC": 16})
        assert torch.equal(got, want), backend


def test_cache_select_recency_is_the_window():
    scores = torch.rand(1, 300, 2)
    got = ops.cache_select(scores, capacity=12, block_size=64, policy="recency", backend="tilelang")
    for n in range(got.shape[2]):
        start = n * 64
        window = [j for j in range(start - 1, max(start - 13, -1), -1)]
        row = got[0, 0, n].tolist()
        assert row == window + [-1] * (12 - len(window)), (n, row)


def test_cache_select_minus_inf_scores_with_value_checks_off(monkeypatch):
    """-inf is also the padding's score: a cached -inf entry must not be outranked by padding
    (C = 40 is not a multiple of BC = 16, so every block's last merge is part padding)."""
    monkeypatch.setenv("HOLA_CHECK_VALUES", "0")
    s = torch.full((1, 130, 2), float("-inf"))
    s[0, 5, 0], s[0, 50, 0] = 1.0, 0.5
    s[0, 70:, 1] = torch.rand(60, generator=torch.Generator().manual_seed(1))
    want = naive_cache_select(s, capacity=10, block_size=40)
    for backend in ("eager", "tilelang"):
        got = ops.cache_select(s, capacity=10, block_size=40, backend=backend, config={"BC": 16})
        assert torch.equal(got, want), backend
