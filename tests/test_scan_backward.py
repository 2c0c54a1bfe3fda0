"""delta_scan_backward (hola_dsl/kernels/delta_scan_backward.py) against the float64 oracle's
autograd (torch.autograd.grad through ``naive_delta_scan``), docs/tolerances.md's float32 tolerance, on the
hard cases, on every DSL backend that runs here; its Triton GPU builds without spills (the
TileLang CUDA dialect's lowering and nvcc build: tests/test_tilelang_nvcc.py and
tests/test_tilelang_cuda_sync.py, which take every kernel).

No float64 gradcheck: the DSL's dots accumulate in float32 (``hola_dsl.registry``: dot ->
float32), so no DSL backend computes in float64; the oracle's float64 autograd is the check."""

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")      # before any generated Triton kernel is created

from hola_dsl import backends  # noqa: E402
from hola_dsl.testing import TOLERANCE, Shape, rel_err, run_check, scan_grads, scan_inputs  # noqa: E402

NAMES = ("dq", "dk", "dv", "dg", "dbeta", "dinitial_state")
K, V = 16, 32
SCALE = K ** -0.5


def _inputs(case: str, T: int, *, h0: bool = True, dfinal: bool = True, seed: int = 0):
    """Scan inputs of docs/tolerances.md's hard ``case`` (or "g50": gates of -50 at every other token), o's
    gradient and the final state's."""
    base = "random" if case == "g50" else case
    x = scan_inputs(Shape(B=1, T=T, H=2, K=K, V=V), case=base, seed=seed, initial_state=h0)
    if case == "g50":
        x["g"] = torch.where(torch.arange(T)[None, :, None] % 2 == 0, -50.0, x["g"])
    gen = torch.Generator().manual_seed(seed + 1)
    do = torch.randn(1, T, 2, V, generator=gen)
    dS = torch.randn(1, 2, K, V, generator=gen) if dfinal else None
    return x, do, dS


def _check(backend: str, case: str, T: int, chunk: int, *, h0: bool = True, dfinal: bool = True,
           config=None) -> None:
    x, do, dS = _inputs(case, T, h0=h0, dfinal=dfinal)
    # The backward's chunk is its schedule's (the call's chunk_size is the forward's): a config sets it.
    out = backends.get(backend).run("delta_scan_backward", x["q"], x["k"], x["v"], x["g"], x["beta"], do, dS,
                                    scale=SCALE, initial_state=x["initial_state"], chunk_size=chunk,
                                    config={"chunk_size": chunk, **(config or {})})
    assert len(out) == 6
    assert (out[5] is None) == (not h0)
    for name, got, want, like in zip(NAMES, out, scan_grads(x, do, dS, SCALE), ("q", "k", "v", "g", "beta", "initial_state")):
        if want is None:                                 # no initial state: none returned (asserted above)
            continue
        assert got.dtype == x[like].dtype and got.shape == x[like].shape, name
        assert torch.isfinite(got).all(), f"{backend} {case}: {name} not finite"
        err = rel_err(got, want)
        # beta = 0 leaves k and v without effect: their gradients are exactly 0 (rel_err is then absolute)
        assert err <= TOLERANCE[torch.float32], f"{backend} {case} T={T}: {name} off by {err:.2e}"


# docs/tolerances.md's hard cases: repeated keys with beta = 1 and g = 0, beta = 0 (u = 0 everywhere), strong
# gates, T = 1, T not a multiple of the chunk, with and without the initial state and dfinal.
EAGER_CASES = [
    ("random", 50, 16, True, True),
    ("repeated", 50, 16, True, True),
    ("beta0", 50, 16, True, True),
    ("g50", 50, 16, True, False),
    ("strong_decay", 40, 32, False, True),
    ("beta1_nodecay", 1, 16, False, False),
]


@pytest.mark.parametrize("case,T,chunk,h0,dfinal", EAGER_CASES)
def test_eager_matches_oracle_autograd(case, T, chunk, h0, dfinal):
    _check("eager", case, T, chunk, h0=h0, dfinal=dfinal)


def _needs(backend: str):
    reason = backends.unavailable_reason(backend)
    return pytest.mark.skipif(reason is not None, reason=f"{backend}: {reason}")


# One shape per compiled backend (one compile each), several value cases on it. Small V tiles and
# key pieces, so that the recurrences run several V tiles and the states several pieces.
COMPILED = [("repeated", True), ("beta0", True), ("g50", False), ("random", False)]
SMALL_TILES = {"BV": 16, "key_cols": 16, "grad_cols": 16, "prepare_cols": 16}


@pytest.mark.slow
@_needs("triton")
@pytest.mark.parametrize("case,dfinal", COMPILED)
def test_triton_interpreter_matches_oracle_autograd(case, dfinal):
    _check("triton", case, 40, 16, dfinal=dfinal, config={**SMALL_TILES, "chunk_size": 16})


@pytest.mark.slow
@_needs("tilelang")
@pytest.mark.parametrize("case,dfinal", COMPILED)
def test_tilelang_cpu_matches_oracle_autograd(case, dfinal):
    _check("tilelang", case, 40, 16, dfinal=dfinal, config={**SMALL_TILES, "chunk_size": 16})


def test_bad_arguments_are_named():
    x, do, dS = _inputs("random", 8)
    run = backends.get("eager").run
    args = (x["q"], x["k"], x["v"], x["g"], x["beta"])
    opts = dict(scale=SCALE, initial_state=x["initial_state"], chunk_size=16)
    with pytest.raises(ValueError, match="do"):
        run("delta_scan_backward", *args, do[:, :4], dS, **opts)
    with pytest.raises(TypeError, match="dfinal"):
        run("delta_scan_backward", *args, do, dS.double(), **opts)
    with pytest.raises(ValueError, match="chunk_size"):
        run("delta_scan_backward", *args, do, dS, **{**opts, "chunk_size": 12})


def test_run_check_compares_every_gradient():
    """`hola check` / the tuner's check path (hola_dsl.testing.run_check) for the backward."""
    r = run_check("delta_scan_backward", "eager", Shape(B=1, T=20, H=1, K=16, V=16), chunk_size=16)
    assert set(r.errors) == set(NAMES) and r.ok, r.errors


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sm_90", "gfx942"])
def test_gpu_builds_have_no_spills(target):
    """Every launch of the default schedule (K = V = 128, bfloat16) compiles without spills."""
    pytest.importorskip("triton")
    from hola_dsl.backends.triton import aot
    rows = aot.build("delta_scan_backward", target)
    assert [r.kernel for r in rows] == ["delta_scan_prepare", "delta_scan_recur", "delta_scan_backward_recur",
                                        "delta_scan_backward_grads"]
    for r in rows:
        assert r.ok and r.spills == 0, (r.kernel, r.spills, r.error)


def test_backward_scratch_is_poisoned_under_the_suite(monkeypatch):
    """The plan's scratch (spec.scratch) is NaN (-2 for ints) under HOLA_POISON_SCRATCH=1, as the
    suite runs, so a scratch row no launch writes fails the oracle checks above."""
    from hola_dsl.kernels import delta_scan_backward as dsb
    import schedules
    monkeypatch.setenv("HOLA_POISON_SCRATCH", "1")
    x, do, dS = _inputs("random", 20)
    sched = schedules.space("delta_scan_backward", "eager").default("cpu")
    plan = dsb.plan(sched, x["q"], x["k"], x["v"], x["g"], x["beta"], do, dS, scale=SCALE,
                    initial_state=x["initial_state"], chunk_size=16)
    inputs = {id(t) for t in (*x.values(), do, dS)}
    scratch = {name: t for step in plan.launches for name, t in step.args.items()
               if isinstance(t, torch.Tensor) and id(t) not in inputs and t.stride() and 0 not in t.stride()}
    assert {"w", "u", "gh", "gl", "aqk", "un", "hs", "dhs", "du"} <= set(scratch)
    for name, t in scratch.items():
        assert (t.isnan().all() if t.is_floating_point() else (t == -2).all()), name
