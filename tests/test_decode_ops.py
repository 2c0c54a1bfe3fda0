"""The decode kernels (hola_dsl.decode) on every backend that runs here against the float64
oracle: the recurrent step equals the token-by-token rule from a carried state (several tokens,
in place, into given outputs), the step's cache read equals a softmax over the sink, the cache
and each row's own pending tokens; bad inputs are named; repeated calls reuse what was prepared."""

import math

import pytest
import torch

from hola_dsl import backends, decode, spec
from hola_dsl.reference import oracle
from hola_dsl.testing import TOLERANCE, Shape, rel_err, scan_inputs

FAST = ("reference", "eager")
BACKENDS = [pytest.param(b.name, marks=() if b.name in FAST else pytest.mark.slow)
            for b in backends.available("cpu")]
SHAPE = Shape(B=3, T=3, H=2, K=16, V=24)
W, C, EPS = 5, 8, 1e-6


@pytest.mark.parametrize("case", ["random", "repeated", "strong_decay"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_delta_step_matches_oracle(backend, case):
    x = scan_inputs(SHAPE, case=case, seed=1)
    o_ref, m_ref, s_ref = oracle.naive_delta_scan(x["q"], x["k"], x["v"], x["g"], x["beta"],
                                                  initial_state=x["initial_state"], output_final_state=True)
    B, T, H, V = SHAPE.B, SHAPE.T, SHAPE.H, SHAPE.V
    state = x["initial_state"].clone()
    o, m = torch.full((B, T, H, V), math.nan), torch.full((B, T, H), math.nan)   # poisoned
    got = decode.delta_step(x["q"], x["k"], x["v"], x["g"], x["beta"], state, in_place=True, o=o, m=m,
                            backend=backend)
    assert got[0] is o and got[1] is m and got[2] is state
    tol = TOLERANCE[torch.float32]
    assert rel_err(o, o_ref) <= tol and rel_err(m, m_ref) <= tol and rel_err(state, s_ref) <= tol
    # Not in place: the state passed in is left alone.
    before = x["initial_state"].clone()
    o2, _, s2 = decode.delta_step(x["q"], x["k"], x["v"], x["g"], x["beta"], before, backend=backend)
    assert torch.equal(before, x["initial_state"]) and rel_err(s2, s_ref) <= tol and rel_err(o2, o_ref) <= tol


def slot_inputs(seed: int = 2):
    """B rows with W cache slots (some empty) and a C-slot pending block; pending lengths differ."""
    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = SHAPE.B, 2, SHAPE.H, SHAPE.K, SHAPE.V
    r = lambda *s: torch.randn(*s, generator=gen)
    pos = torch.arange(W + C).repeat(B, H, 1)
    pos[0, :, 1] = -1
    pos[1, 1, :W] = -1                                    # a row and head with an empty cache
    pending = torch.tensor([2, 5, C], dtype=torch.int32)
    return dict(q=r(B, T, H, K), slot_k=3 * r(B, H, W + C, K), slot_v=r(B, H, W + C, V), slot_pos=pos,
                pending=pending, gamma_q=torch.rand(K, generator=gen) + 0.5,
                gamma_k=torch.rand(K, generator=gen) + 0.5, sink=r(H))


def read_oracle(x) -> torch.Tensor:
    """docs/math.md section 3 for each query, one at a time, in float64."""
    q, k, v = (x[n].double() for n in ("q", "slot_k", "slot_v"))
    B, T, H, K = q.shape
    qc = q * torch.rsqrt((q * q).mean(-1, keepdim=True) + EPS) * x["gamma_q"].double()
    kc = k * torch.rsqrt((k * k).mean(-1, keepdim=True) + EPS) * x["gamma_k"].double()
    out = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            cached = [j for j in range(W) if x["slot_pos"][b, h, j] >= 0]
            for t in range(T):
                seen = int(x["pending"][b]) - T + t + 1
                vis = torch.tensor(cached + list(range(W, W + seen)))
                logits = torch.cat([x["sink"][h].double().view(1), kc[b, h, vis] @ qc[b, t, h] / math.sqrt(K)])
                out[b, t, h] = torch.softmax(logits, 0)[1:] @ v[b, h, vis]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_cache_read_step_matches_oracle(backend):
    x = slot_inputs()
    ref = read_oracle(x)
    o = torch.full(ref.shape, math.nan)
    got = decode.cache_read_step(**x, capacity=W, eps=EPS, o=o, backend=backend)
    assert got is o and rel_err(o, ref) <= TOLERANCE[torch.float32]
    # Stale slots past a row's pending length are never read.
    y = dict(x, slot_k=x["slot_k"].clone(), slot_v=x["slot_v"].clone())
    y["slot_v"][0, :, W + 2:] = 1e6
    assert rel_err(decode.cache_read_step(**y, capacity=W, eps=EPS, backend=backend), ref) <= TOLERANCE[torch.float32]


def test_bad_inputs_are_named():
    x = scan_inputs(SHAPE, seed=3)
    args = [x[n] for n in ("q", "k", "v", "g", "beta", "initial_state")]
    with pytest.raises(ValueError, match="state"):
        decode.delta_step(*args[:5], args[5][:, :1].clone(), backend="reference")
    with pytest.raises(TypeError, match="state"):
        decode.delta_step(*args[:5], args[5].double(), backend="reference")
    with pytest.raises(ValueError, match="^o:"):
        decode.delta_step(*args, o=torch.empty(1), backend="reference")
    with pytest.raises(ValueError, match="^g:"):
        decode.delta_step(*args[:3], -args[3], *args[4:], backend="reference")
    s = slot_inputs()
    with pytest.raises(ValueError, match="pending"):
        decode.cache_read_step(**dict(s, pending=torch.tensor([1, 2, C + 1], dtype=torch.int32)), capacity=W)
    with pytest.raises(ValueError, match="capacity"):
        decode.cache_read_step(**s, capacity=W + C + 1)
    with pytest.raises(TypeError, match="pending"):
        decode.cache_read_step(**dict(s, pending=s["pending"].long()), capacity=W)


def test_repeated_calls_trace_and_schedule_once(monkeypatch):
    """The host path of a decode call: after the first call nothing is traced, scheduled or
    resolved again (``hola_dsl.decode`` keeps the prepared call)."""
    x = scan_inputs(Shape(B=1, T=1, H=2, K=16, V=24), seed=4)
    args = [x[n] for n in ("q", "k", "v", "g", "beta", "initial_state")]
    first = decode.delta_step(*args, backend="eager", check=False)
    fail = lambda *a, **k: pytest.fail("prepared again")
    monkeypatch.setattr(spec, "specialize", fail)
    monkeypatch.setattr(backends, "resolve", fail)
    again = decode.delta_step(*args, backend="eager", check=False)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_auto_takes_bf16_cpu_inputs_to_a_backend_that_computes_them():
    """TileLang's C dialect has no bf16 type: "auto" must pass bf16 CPU inputs over it (it
    used to send them there and die in TileLang's code generator)."""
    s = scan_inputs(Shape(B=1, T=3, H=2, K=16, V=16), seed=3, initial_state=True, dtype=torch.bfloat16)
    args = (s["q"], s["k"], s["v"], s["g"], s["beta"], s["initial_state"].float())
    o, m, state = decode.delta_step(*args, backend="auto")
    want = decode.delta_step(*args, backend="reference")
    assert o.dtype == torch.bfloat16
    for got, ref in zip((o, m, state), want):
        assert torch.equal(got, ref)


def test_a_gradient_is_never_silently_dropped():
    """The decode kernels have no backward: with an input that requires grad, "auto" takes a
    backend autograd runs through, and a named kernel backend says so rather than returning
    outputs cut off from the graph."""
    s = scan_inputs(Shape(B=1, T=2, H=2, K=16, V=16), seed=4, initial_state=True)
    v = s["v"].clone().requires_grad_()
    args = (s["q"], s["k"], v, s["g"], s["beta"], s["initial_state"])
    o, _, _ = decode.delta_step(*args, backend="auto")
    (grad,) = torch.autograd.grad(o.sum(), v)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    for name in backends.names():
        if backends.runs_on(name, "cpu") is None and not backends.get(name).differentiable:
            with pytest.raises(ValueError, match="requires grad"):
                decode.delta_step(*args, backend=name)
            with torch.no_grad():
                decode.delta_step(*args, backend=name)
