"""The cache read's gradient (hola_dsl/kernels/cache_read_backward.py) on every DSL backend
against the float64 oracle's autograd, and the autograd glue of hola_dsl.ops around it."""

import pytest
import torch

from hola_dsl import backends, ops
from hola_dsl.testing import (READ_CASES, READ_GRAD_INPUTS, TOLERANCE, Shape, cache_read_grads, oracle_read_grads,
                              read_grad_inputs, rel_err, run_check)

# Small, and every hard case of the layout: T not a multiple of C, several blocks (the first with
# an empty cache), W not a power of two, K != V.
SHAPE = Shape(B=2, T=45, H=2, K=16, V=24, W=5, C=16)
TOL = TOLERANCE[torch.float32]


def _runs_cpu(name: str) -> None:
    reason = backends.runs_on(name, "cpu")
    if reason is not None:
        pytest.skip(f"{name}: {reason}")


def _check(backend: str, shape: Shape, case: str, seed: int, config=None) -> None:
    x, do = read_grad_inputs(shape, case=case, seed=seed)
    got = cache_read_grads(backend, x, do, shape.C, config)
    ref = oracle_read_grads(x, do, shape.C)
    errors = {n: rel_err(a, b) for n, a, b in zip(READ_GRAD_INPUTS, got, ref)}
    assert all(a.dtype == x[n].dtype and a.shape == x[n].shape for n, a in zip(READ_GRAD_INPUTS, got))
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("case", READ_CASES)
def test_eager_gradients_match_the_oracle(case):
    _check("eager", SHAPE, case, seed=3)


@pytest.mark.parametrize("shape", [Shape(B=1, T=1, H=1, K=16, V=16, W=4, C=16),      # one token
                                   Shape(B=1, T=32, H=3, K=8, V=8, W=40, C=16)])      # W > C: padded slots
def test_eager_gradients_at_the_edges(shape):
    _check("eager", shape, "random", seed=5)


def test_eager_gradients_with_small_tiles_and_gamma():
    """Tiles smaller than the block (several query and key programs per block)."""
    _check("eager", Shape(B=1, T=70, H=2, K=16, V=16, W=6, C=32), "shared_keys", seed=7, config={"BQ": 16, "BKV": 16})


@pytest.mark.slow
@pytest.mark.parametrize("case", ["random", "shared_keys"])
def test_triton_interpreter_gradients_match_the_oracle(case):
    _runs_cpu("triton")
    _check("triton", SHAPE, case, seed=11)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["random", "large_sink"])
def test_tilelang_cpu_gradients_match_the_oracle(case):
    _runs_cpu("tilelang")
    _check("tilelang", SHAPE, case, seed=13)


def test_spec_row_through_hola_check():
    """`hola check`'s row of the backward kernel (float32: 1e-5) on the eager backend."""
    r = run_check("cache_read_backward", "eager", SHAPE, seed=17)
    assert r.ok and set(r.errors) == {f"d{n}" for n in READ_GRAD_INPUTS}, r.errors


def test_autograd_through_ops_uses_the_backward_kernel(monkeypatch):
    """ops.cache_read on a DSL backend is one custom op whose backward is the DSL kernel: the
    eager interpreter's own autograd is not used (its graph would hold every program's ops)."""
    x, do = read_grad_inputs(SHAPE, case="shared_keys", seed=19)
    leaves = {n: x[n].clone().requires_grad_() for n in READ_GRAD_INPUTS}
    calls = []
    from hola_dsl import spec
    launch = spec.launch
    monkeypatch.setattr(spec, "launch", lambda kspec, *a: calls.append(kspec.name) or launch(kspec, *a))
    o = ops.cache_read(**{**x, **leaves}, block_size=SHAPE.C, backend="eager")
    assert "hola_cache_read" in type(o.grad_fn).__name__
    grads = torch.autograd.grad(o, list(leaves.values()), do)
    assert calls == ["cache_read", "cache_read_backward"]
    ref = oracle_read_grads(x, do, SHAPE.C)
    assert max(rel_err(a, b) for a, b in zip(grads, ref)) <= TOL


def test_value_checks_run_inside_the_custom_op():
    x, _ = read_grad_inputs(Shape(B=1, T=8, H=2, K=16, V=16, W=2, C=4), seed=0)
    x["k"][0, 5, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="k: contains NaN or inf"):
        ops.cache_read(**x, block_size=4, backend="eager")


def test_differentiability_is_derived_from_the_backward_kernels():
    for name in ("eager", "triton", "tilelang"):
        if backends.unavailable_reason(name) is None:
            impl = backends.get(name)
            assert backends.backward_kernel(impl, "cache_read") == "cache_read_backward"
            assert backends.differentiates(impl, "cache_read")
            assert backends.backward_kernel(impl, "cache_select") is None
    assert backends.backward_kernel(backends.get("reference"), "cache_read") is None  # autograd follows it


# ---------------------------------------------------------------- the scan's backward (branch bwdscan)

def _scan_backward_or_skip(name: str) -> None:
    _runs_cpu(name)
    if backends.backward_kernel(backends.get(name), "delta_scan") is None:
        pytest.skip(f"{name}: no delta_scan_backward kernel (hola_dsl/kernels/delta_scan_backward.py) yet")


def test_beta0_with_m_in_the_graph_has_finite_right_gradients():
    """Tokens with beta = 0 (nothing written) while m is computed: the eager interpreter's own
    autograd gives NaN for every input there (0 * inf in m's norm); the DSL backward must not."""
    from hola_dsl.reference import oracle
    from hola_dsl.testing import scan_inputs
    _scan_backward_or_skip("eager")
    x = scan_inputs(Shape(B=1, T=40, H=2, K=16, V=16), case="beta0", seed=23)
    x["beta"][:, ::2] = 0.5                           # some tokens written, some not
    names = ("q", "k", "v", "g", "beta", "initial_state")
    leaves = {n: x[n].clone().requires_grad_() for n in names}
    o, m, S = ops.delta_scan(**leaves, output_final_state=True, chunk_size=16, backend="eager")
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(1))
    dS = torch.randn(S.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad((o * do).sum() + (S * dS).sum() + 0 * m.sum(), list(leaves.values()),
                              allow_unused=True)
    ref_leaves = {n: x[n].detach().double().requires_grad_() for n in names}
    ro, _, rS = oracle.naive_delta_scan(**ref_leaves, output_final_state=True)
    ref = torch.autograd.grad((ro * do.double()).sum() + (rS * dS.double()).sum(), list(ref_leaves.values()))
    for n, a, b in zip(names, got, ref):
        assert a is not None and bool(torch.isfinite(a).all()), n
        assert rel_err(a, b) <= TOL, (n, rel_err(a, b))


# ---------------------------------------------------------------- torch.compile of a HOLA mixer

def _mixer():
    from model.config import HOLAConfig
    from model.mixer import HOLAMixer
    torch.manual_seed(0)
    cfg = HOLAConfig(d_model=32, n_layers=1, n_heads=2, head_k_dim=16, head_v_dim=16, cache_capacity=8,
                     cache_block=32, chunk_size=32, vocab_size=64)
    return HOLAMixer(cfg), torch.randn(1, 48, 32, generator=torch.Generator().manual_seed(0))


def _compiled_matches(backend: str, grad: bool) -> None:
    """fullgraph=True (an error on any graph break) through AOTAutograd, forward and backward;
    the results equal the uncompiled mixer's."""
    mixer, x = _mixer()
    torch._dynamo.reset()
    step = torch.compile(lambda x: mixer(x, backend=backend), fullgraph=True, backend="aot_eager")
    if not grad:
        with torch.no_grad():
            assert torch.equal(step(x), mixer(x, backend=backend))
        return
    step(x).square().sum().backward()
    compiled = [p.grad.clone() for p in mixer.parameters()]
    mixer.zero_grad()
    mixer(x, backend=backend).square().sum().backward()
    for a, p in zip(compiled, mixer.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_compiled_mixer_trains_without_graph_breaks(backend):
    if backend == "auto":
        _runs_cpu("tilelang")
    _compiled_matches(backend, grad=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["eager", "tilelang"])
def test_compiled_mixer_forward_without_graph_breaks(backend):
    _runs_cpu(backend)
    _compiled_matches(backend, grad=False)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["eager", "tilelang"])
def test_compiled_mixer_trains_on_dsl_backends_once_both_backwards_exist(backend):
    _scan_backward_or_skip(backend)
    _compiled_matches(backend, grad=True)


# ---------------------------------------------------------------- TileLang CUDA: shared memory

@pytest.mark.slow
def test_tilelang_cuda_default_fits_99_kb_of_shared_memory(cuda_build_cache):
    """The default sm_80 schedule at the default head dims in bfloat16 (K = V = 128, W = 64, C = 256):
    each launch fits the 99 KB of shared memory per block of sm_86/sm_89 (so an A100's 163 KB
    too), builds without spills and without sync problems. One nvcc build per launch (the
    forward kernel, which a call without the saved o and lse runs first, and the two passes)."""
    from hola_dsl.backends.tilelang import nvcc
    from schedules import targets
    if backends.unavailable_reason("tilelang") is not None or nvcc.find_nvcc() is None:
        pytest.skip("tilelang or nvcc unavailable")
    rows = nvcc.build("cache_read_backward", "sm_80", dims={"K": 128, "V": 128, "W": 64, "C": 256})
    assert [r.kernel for r in rows] == ["cache_read", "cache_read_bwd_query", "cache_read_bwd_key"]
    for r in rows:
        assert r.ok, (r.kernel, r.error)
        assert 0 < r.shared <= targets.shared_limit("sm_86"), (r.kernel, r.shared)
        assert r.spills == 0 and not r.extra["sync_problems"], (r.kernel, r.spills, r.extra["sync_problems"])
