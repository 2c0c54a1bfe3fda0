"""The delta scan as phases (hola_dsl/kernels/delta_scan_phases.py): every split on every DSL
backend here against the float64 oracle on docs/tolerances.md's hard cases; the blockwise inverse exact on
repeated keys; no float64 in any scan kernel; the plan's scratch poisoned; the split schedule
knob; and (slow) ahead-of-time builds without register spills, and the TileLang CUDA dialect
through nvcc. The eager backend is the fast subset; the compiled backends (Triton's
interpreter, TileLang's C dialect) are marked slow."""

from __future__ import annotations

import math

import pytest
import torch

from hola_dsl import backends, eager, ir, kernels, ops, spec
from hola_dsl.backends import tilelang as tilelang_backend, triton as triton_backend
from hola_dsl.reference.oracle import naive_delta_scan
from hola_dsl.testing import SCAN_CASES, TOLERANCE, Shape, rel_err, scan_inputs
from schedules import targets
from schedules.delta_scan import SPLITS

BACKENDS = [b if b == "eager" else pytest.param(b, marks=pytest.mark.slow)
            for b in ("eager", "triton", "tilelang") if backends.unavailable_reason(b) is None]
TOL = TOLERANCE[torch.float32]
SCAN = kernels.spec("delta_scan")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hola-cache"))


def _errors(x: dict, config: dict, backend: str, final: bool = True) -> list[float]:
    o, m, s = ops.delta_scan(**x, output_final_state=final, backend=backend, config=config)
    ro, rm, rs = naive_delta_scan(**x, output_final_state=final)
    assert (s is None) == (not final)
    return [rel_err(o, ro), rel_err(m, rm)] + ([rel_err(s, rs)] if final else [])


def _oracle_cases() -> list:
    """(backend, split, case) for every backend here, split and hard case; the fast subset keeps
    the GPU default split on the eager backend on repeated keys (the case the blockwise inverse
    must survive), the rest is slow (test_one_token_and_no_state_arguments keeps every split in
    the fast subset; test_dsl_eager.py covers the fused kernel)."""
    out = []
    for backend in ("eager", "triton", "tilelang"):
        if backends.unavailable_reason(backend) is not None:
            continue
        for split in SPLITS:
            for case in SCAN_CASES:
                fast = (backend, split, case) == ("eager", "prepare+recur+output", "repeated")
                out.append(pytest.param(backend, split, case, marks=() if fast else pytest.mark.slow))
    return out


@pytest.mark.parametrize("backend,split,case", _oracle_cases())
def test_split_matches_oracle(backend, split, case):
    """T = 100 over 32-token chunks (the last one holds 4 tokens), three V tiles, an initial and a
    final state."""
    x = scan_inputs(Shape(B=2, T=100, H=2, K=32, V=48), case=case, seed=17)
    errors = _errors(x, {"split": split, "chunk_size": 32, "BV": 16}, backend)
    assert max(errors) <= TOL, errors


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_token_and_no_state_arguments(backend, split):
    """T = 1 with both states; T = 77 with neither (two V tiles, 16-token chunks)."""
    x = scan_inputs(Shape(B=2, T=1, H=2, K=32, V=48), case="random", seed=3)
    errors = _errors(x, {"split": split, "chunk_size": 16}, backend)
    x = scan_inputs(Shape(B=1, T=77, H=2, K=32, V=48), case="strong_decay", seed=4, initial_state=False)
    errors += _errors(x, {"split": split, "chunk_size": 16, "BV": 32}, backend, final=False)
    assert max(errors) <= TOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS[1:])
@pytest.mark.parametrize("backend", BACKENDS)
def test_key_and_value_pieces(backend, split):
    """K = 96, V = 80: the recurrence's state in two 64-column pieces (the second one masked),
    prepare stepping through K and V 32 columns at a time (the last steps masked)."""
    for case in ("random", "repeated"):
        x = scan_inputs(Shape(B=1, T=70, H=2, K=96, V=80), case=case, seed=5)
        errors = _errors(x, {"split": split, "chunk_size": 32, "BV": 32, "prepare_cols": 32}, backend)
        assert max(errors) <= TOL, (case, errors)


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS[1:])
def test_bf16_phases_meet_the_bf16_tolerance(split):
    """bfloat16 inputs on the eager backend, which rounds dot operands to bf16 exactly as tensor
    cores take them: docs/tolerances.md's 5e-3 on every hard case (rounding every float32 operand once, as fla
    does, measured 5.1e-3 at T = 1000)."""
    tol = TOLERANCE[torch.bfloat16]
    for case in SCAN_CASES:
        x = scan_inputs(Shape(B=1, T=300, H=2, K=64, V=64), torch.bfloat16, case=case, seed=5)
        o, m, s = ops.delta_scan(**x, output_final_state=True, backend="eager",
                                 config={"split": split, "chunk_size": 64, "BV": 32})
        ref = naive_delta_scan(**{n: (t.float() if n in "qkv" else t) for n, t in x.items()}, output_final_state=True)
        errors = [rel_err(a, b) for a, b in zip((o, m, s), ref)]
        assert o.dtype == torch.bfloat16 and max(errors) <= tol, (case, errors)


def _runner(backend: str) -> spec.Runner:
    """The backend's Runner (what the generic launcher hands each traced kernel), for float32 CPU
    tensors."""
    if backend == "eager":
        return eager.run
    if backend == "triton":
        sched = triton_backend.schedule("delta_scan", None, "interpreter", torch.float32)
        return triton_backend._runner(sched, torch.device("cpu"))
    return tilelang_backend._runner(tilelang_backend.schedule("delta_scan", None, "cpu"), torch.device("cpu"))


def _launch(run: spec.Runner, schedule: dict, q, k, v, g, beta, **options):
    """One delta_scan call through the generic launcher with ``schedule`` (its split)."""
    return spec.launch(SCAN, run, schedule, (q, k, v, g, beta), options)


def _power_product_inverse(a: torch.Tensor) -> torch.Tensor:
    """(I + L)^-1 = (I - L)(I + L^2)(I + L^4)... for a strictly lower [n, n] L, in a's dtype: exact
    in exact arithmetic, and what docs/design.md warns against."""
    n = a.shape[-1]
    eye = torch.eye(n, dtype=a.dtype)
    out, p = eye - a, a @ a
    while p.abs().max() > 0 and n > 1:
        out, p, n = out @ (eye + p), p @ p, n // 2
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_blockwise_inverse_is_exact_on_repeated_keys(backend):
    """Near-identical keys, beta = 1, g = 0, and v the identity of each chunk: prepare's U is then
    Tm = (I + strict_lower(K K^T))^-1 itself, which must match the float64 inverse. The power
    product loses every digit on these keys (checked here too, so the test has teeth)."""
    BT, T = 64, 128
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(1, 1, 1, 32, generator=gen).expand(1, T, 1, 32) + 1e-3 * torch.randn(1, T, 1, 32, generator=gen)
    k = ops.l2norm(k)
    v = torch.eye(BT).repeat(T // BT, 1).reshape(1, T, 1, BT)
    g, beta = torch.zeros(1, T, 1), torch.ones(1, T, 1)
    got = {}
    run = _runner(backend)

    def spy(kernel, args):
        run(kernel, args)
        if kernel.name == "delta_scan_prepare":
            got["u"] = args["u"].clone()
    _launch(spy, {"BV": 64, "chunk_size": BT, "split": "prepare+recur+output"}, k, k, v, g, beta, scale=1.0,
            initial_state=None, output_final_state=False, chunk_size=BT)
    for c in range(T // BT):
        kc = k[0, c * BT:(c + 1) * BT, 0].double()
        a = torch.tril(kc @ kc.T, -1)
        eye = torch.eye(BT, dtype=torch.float64)
        exact = torch.linalg.solve_triangular(eye + a, eye, upper=False, unitriangular=True)
        err = rel_err(got["u"][0, c * BT:(c + 1) * BT, 0], exact)
        assert err < 1e-5, (c, err)
        assert rel_err(_power_product_inverse(a.float()), exact) > 1e-2


def _dtypes(kernel: ir.Kernel) -> set[str]:
    out = {p.value.type.dtype for p in kernel.params}
    for op in ir.walk(kernel.body):
        out |= {v.type.dtype for v in op.args + op.results}
        out |= {a.type.dtype for r in op.regions for a in r.args}
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("split", SPLITS)
def test_no_float64_in_scan_kernels(split, dtype):
    """GPUs run float64 at 1/64 rate or worse: no value, tensor or op of any scan kernel is float64."""
    for target in ("sm_90", "interpreter"):
        sched = triton_backend.schedule("delta_scan", {"split": split}, target, getattr(torch, dtype))
        traced = spec.trace(SCAN, sched, {"K": 64, "V": 64}, getattr(torch, dtype))
        assert len(traced) == {"fused": 1, "prepare+recur+output": 3, "prepare+recur_output": 2}[split]
        assert {k.name for k in traced} <= {k.name for k in SCAN.kernels}
        for kernel in traced:
            assert "float64" not in _dtypes(kernel), (kernel.name, target)


def test_unwritten_phase_output_fails_the_check():
    """Scratch and outputs are poisoned: a pipeline whose output phase never runs leaves NaN."""
    x = scan_inputs(Shape(B=1, T=40, H=1), seed=0)
    run = _runner("eager")
    skip = lambda kernel, args: None if kernel.name == "delta_scan_output" else run(kernel, args)
    o, m, s = _launch(skip, {"BV": 64, "chunk_size": 16, "split": "prepare+recur+output"}, x["q"], x["k"], x["v"],
                      x["g"], x["beta"], scale=1.0, initial_state=x["initial_state"], output_final_state=True,
                      chunk_size=16)
    assert torch.isnan(o).all() and rel_err(o, torch.zeros_like(o)) == math.inf
    assert torch.isfinite(m).all() and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="split"):
        _launch(run, {"BV": 64, "split": "prepare+recur"}, x["q"], x["k"], x["v"], x["g"], x["beta"], scale=1.0,
                initial_state=None, output_final_state=False, chunk_size=16)


def test_a_plan_on_meta_tensors_allocates_poisoned_scratch():
    """A split plan is made on meta tensors as well (what emit and the builds trace) and, on
    real ones, every scratch tensor it allocates starts poisoned (NaN, or -2 for integers)."""
    inputs, options = SCAN.example({"K": 32, "V": 32, "chunk_size": 16}, torch.float32)
    plan = SCAN.plan({"BV": 32, "chunk_size": 16, "split": "prepare+recur+output"}, *inputs, **options)
    assert [step.kernel.name for step in plan.launches] == ["delta_scan_prepare", "delta_scan_recur",
                                                            "delta_scan_output"]
    x = scan_inputs(Shape(B=1, T=20, H=1, K=32, V=32), seed=0)
    plan = SCAN.plan({"BV": 32, "chunk_size": 16, "split": "prepare+recur_output"}, x["q"], x["k"], x["v"], x["g"],
                     x["beta"], scale=1.0, initial_state=None, output_final_state=True, chunk_size=16)
    scratch = {n: t for step in plan.launches for n, t in step.args.items()
               if n in ("w", "u", "gh", "gl", "aqk")}
    assert set(scratch) == {"w", "u", "gh", "gl", "aqk"}
    for name, t in scratch.items():
        assert (t == -2).all() if not t.dtype.is_floating_point else torch.isnan(t).all(), name


def test_split_defaults_per_target():
    """The CPU keeps the fused kernel; GPU targets run the phases; float32 inputs get smaller tiles."""
    import schedules
    schedule = triton_backend.schedule
    assert schedules.space("delta_scan", "eager").default("cpu")["split"] == "fused"
    assert schedules.space("delta_scan", "tilelang").default("cpu")["split"] == "fused"
    assert schedules.space("delta_scan", "tilelang").default("sm_90a")["split"] == "prepare+recur+output"
    assert schedule("delta_scan", None, "interpreter", torch.float32)["split"] == "fused"
    for target in ("sm_80", "sm_90", "sm_100", "gfx942"):
        bf16, fp32 = (schedule("delta_scan", None, target, d) for d in (torch.bfloat16, torch.float32))
        assert bf16["split"] == fp32["split"] == "prepare+recur+output"
        assert fp32["chunk_size"] < bf16["chunk_size"]
        assert fp32["dot_precision"] == ("ieee" if target.startswith("gfx") else "tf32x3")
    assert schedule("delta_scan", {"split": "fused"}, "sm_90")["chunk_size"] == 16
    assert schedule("delta_scan", {"split": "fused", "chunk_size": 64}, "sm_90")["chunk_size"] == 64


# ---------------------------------------------------------------- compile-heavy (no GPU needed)

def _has_triton_backend(name: str) -> bool:
    try:
        from triton.backends import backends as tb
        return name in tb
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS[1:])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("target", targets.DEFAULT_BUILD["triton"])
def test_phases_build_without_spills(target, dtype, split, tmp_path, monkeypatch):
    """Every kernel of each split, K = V = 128, default schedule for the target and dtype: Triton
    compiles it ahead of time with zero register spills."""
    pytest.importorskip("triton")
    from hola_dsl.backends.triton import aot
    if not _has_triton_backend("nvidia" if target.startswith("sm_") else "amd"):
        pytest.skip(f"triton built without the backend for {target}")
    monkeypatch.setenv("HOLA_CACHE_DIR", str(tmp_path))
    results = aot.build("delta_scan", target, {"split": split}, dtype=dtype)
    assert [r.kernel for r in results] == [k.name for k in spec.trace(SCAN, results[0].schedule, None,
                                                                       getattr(torch, dtype))]
    for r in results:
        assert r.ok, (r.kernel, r.error)
        assert r.dtype == dtype
        assert r.spills == 0, f"{r.kernel} spills {r.spills} bytes on {target} ({dtype}) with {r.schedule}"


# The sm_90a default split's phases are built by tests/test_tilelang_nvcc.py at the real dims;
# the other split's prepare phase holds all of the default one's (plus aqk) at the small dims.
OTHER_CUDA_SPLITS = [s for s in SPLITS[1:] if s != "prepare+recur+output"]


@pytest.mark.slow
@pytest.mark.parametrize("split", OTHER_CUDA_SPLITS)
def test_phases_lower_through_tilelang_cuda_and_nvcc(split, cuda_build_cache):
    """The TileLang CUDA dialect of every phase, built by nvcc for sm_90a, free of sync problems."""
    import schedules
    from hola_dsl.backends.tilelang import nvcc
    if backends.unavailable_reason("tilelang") is not None or nvcc.find_nvcc() is None:
        pytest.skip("needs tilelang and nvcc")
    assert schedules.space("delta_scan", "tilelang").default("sm_90a")["split"] not in OTHER_CUDA_SPLITS
    rows = nvcc.build("delta_scan", "sm_90a", {"split": split}, dims=nvcc.CHECK_DIMS)
    assert len(rows) == 2
    for r in rows:
        assert r.ok, (r.kernel, r.error)
        assert r.spills == 0 and not r.extra["sync_problems"], (r.kernel, r.extra["sync_problems"])
