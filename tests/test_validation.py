"""Bad inputs give errors that name the argument, what was given and what was expected."""

import pytest
import torch

from hola_dsl import ops
from hola_dsl.testing import Shape, read_inputs, scan_inputs


def _scan(**override):
    x = scan_inputs(Shape(B=1, T=8, H=2, K=4, V=6), seed=0)
    kwargs = {"backend": "reference"}
    for name, value in override.items():
        (x if name in x else kwargs)[name] = value
    return ops.delta_scan(**x, **kwargs)


@pytest.mark.parametrize("override,message", [
    (dict(q=torch.zeros(1, 8, 2)), "q: expected rank 4"),
    (dict(v=torch.zeros(1, 9, 2, 6)), "v: dim T is 9"),
    (dict(k=torch.zeros(1, 8, 2, 5)), "k: dim K is 5"),
    (dict(q=torch.zeros(1, 8, 2, 4, dtype=torch.float64)), "q: expected dtype"),
    (dict(g=torch.full((1, 8, 2), 0.5)), "g: expected values <= 0"),
    (dict(beta=torch.full((1, 8, 2), 1.5)), "beta: expected values <= 1"),
    (dict(beta=torch.full((1, 8, 2), -0.1)), "beta: expected values >= 0"),
    (dict(v=torch.full((1, 8, 2, 6), float("nan"))), "v: contains NaN"),
    (dict(initial_state=torch.zeros(1, 2, 4, 7)), "initial_state: dim V is 7"),
    (dict(chunk_size=48), "chunk_size: expected a power of two"),
    (dict(backend="cuda-magic"), "backend: unknown backend 'cuda-magic'"),
])
def test_scan_errors(override, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        _scan(**override)


def test_select_errors():
    s = torch.rand(1, 10, 2)
    with pytest.raises(ValueError, match="capacity: expected an integer >= 1, got 0"):
        ops.cache_select(s, capacity=0, backend="reference")
    with pytest.raises(ValueError, match="policy: expected one of"):
        ops.cache_select(s, policy="lru", backend="reference")
    with pytest.raises(ValueError, match="scores: expected rank 3"):
        ops.cache_select(s[0], backend="reference")


def test_read_errors():
    x = read_inputs(Shape(B=1, T=20, H=2, K=4, V=4, W=2, C=8), seed=0)
    with pytest.raises(ValueError, match=r"idx: dim NB is 3, expected ceil\(T / block_size\)"):
        ops.cache_read(**x, block_size=16, backend="reference")
    bad = x["idx"].clone()
    bad[0, 0, 1, 0] = 12
    with pytest.raises(ValueError, match=r"idx: entry \[0, 0, 1, 0\] = 12"):
        ops.cache_read(**{**x, "idx": bad}, block_size=8, backend="reference")
    with pytest.raises(ValueError, match="gamma_q: dim K is 5"):
        ops.cache_read(**{**x, "gamma_q": torch.ones(5)}, block_size=8, backend="reference")


def test_value_checks_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("HOLA_CHECK_VALUES", "0")
    _scan(g=torch.full((1, 8, 2), 0.1))  # accepted: the caller took responsibility


def _one_bad(shape, index, value, dtype=torch.float32):
    x = torch.rand(shape, dtype=dtype)
    x[index] = value
    return x


@pytest.mark.parametrize("name,value,message", [
    ("q", float("inf"), "q: contains NaN or inf"),
    ("k", float("-inf"), "k: contains NaN or inf"),
    ("v", float("nan"), "v: contains NaN or inf"),
    ("g", float("nan"), "g: contains NaN or inf"),
    ("g", float("-inf"), "g: contains NaN or inf"),
    ("beta", float("nan"), "beta: contains NaN or inf"),
    ("beta", 1.0001, "beta: expected values <= 1"),
])
def test_one_bad_element_anywhere_is_caught(name, value, message):
    """A single NaN/inf/out-of-range element, first, last or in the middle, fails the check."""
    x = scan_inputs(Shape(B=1, T=8, H=2, K=4, V=6), seed=0)
    for index in [(0,) * x[name].dim(), tuple(s - 1 for s in x[name].shape), (0, 3, 1)]:
        bad = x[name].clone()
        bad[index] = value
        with pytest.raises(ValueError, match=message):
            ops.delta_scan(**{**x, name: bad}, backend="reference")


def test_value_checks_on_half_precision_and_scores():
    bad = _one_bad((1, 8, 2), (0, 5, 1), float("nan"), torch.bfloat16)
    with pytest.raises(ValueError, match="scores: contains NaN"):
        ops.cache_select(bad, backend="reference")
    ops.cache_select(torch.rand(1, 8, 2, dtype=torch.bfloat16).float(), capacity=2, block_size=4,
                     backend="reference")
    empty = torch.zeros(1, 0, 2)
    assert ops.cache_select(empty, backend="reference").shape == (1, 2, 0, 64)


def _without_backward():
    """(backend, op): a DSL backend that runs CPU tensors here and has no backward kernel of op."""
    from hola_dsl import backends
    for name in ("tilelang", "triton"):
        if backends.unavailable_reason(name) is None and "cpu" in backends.get(name).devices:
            for op in ("delta_scan", "cache_read"):
                if backends.backward_kernel(backends.get(name), op) is None:
                    return name, op
    pytest.skip("no backend without a backward kernel runs CPU tensors here")


def test_backends_without_backward_refuse_inputs_that_need_grad():
    """Outputs silently cut off from the graph would train nothing; say so instead."""
    name, op = _without_backward()
    if op == "delta_scan":
        x, call, grad = scan_inputs(Shape(B=1, T=8, H=2, K=16, V=16), seed=0), ops.delta_scan, "v"
    else:
        x, call, grad = read_inputs(Shape(B=1, T=8, H=2, K=16, V=16, W=2, C=4), seed=0), ops.cache_read, "gamma_q"
        call = lambda **kw: ops.cache_read(**kw, block_size=4)
    x[grad].requires_grad_(True)
    with pytest.raises(ValueError, match=f"backend: '{name}' computes no gradients of {op}, but {grad} requires grad; "
                                         r"train with a differentiable backend \(reference, eager"):
        call(**x, backend=name)
    out = call(**x, backend="auto")                  # auto picks a differentiable one
    assert (out[0] if op == "delta_scan" else out).requires_grad
    with torch.no_grad():
        out = call(**x, backend=name)
    out = out[0] if op == "delta_scan" else out
    assert not out.requires_grad and not out.isnan().any()


def test_auto_skips_backends_without_backward_when_grad_is_needed(monkeypatch):
    """auto: the first available backend of the order, unless a gradient is needed and it has no
    backward for the op (nor does autograd follow it), or it cannot run the dtype."""
    from hola_dsl import backends
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ("tilelang", "eager", "reference"))
    if backends.unavailable_reason("tilelang") is None:
        assert backends.resolve("auto", "cpu").name == "tilelang"
        assert backends.resolve("auto", "cpu", dtype=torch.bfloat16).name == "eager"
        assert backends.resolve("auto", "cpu", grad_of="q", op="cache_read").name == "tilelang"
    # Packed sequences have no backward kernel: autograd must follow the backend (eager does).
    assert backends.resolve("auto", "cpu", grad_of="q", op="cache_read", packed=True).name == "eager"
    every = all(backends.backward_kernel(backends.get("tilelang"), op) for op in ("delta_scan", "cache_read"))
    if backends.unavailable_reason("tilelang") is None:
        assert backends.resolve("auto", "cpu", grad_of="q").name == ("tilelang" if every else "eager")
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ("tilelang", "reference"))
    expected = "tilelang" if backends.unavailable_reason("tilelang") is None else "reference"
    assert backends.resolve("auto", "cpu", grad_of="q", op="cache_read").name == expected


def _far_keys(factor: float):
    x = scan_inputs(Shape(B=1, T=300, H=2, K=32, V=48), seed=0)
    x["k"] = x["k"] * factor
    return x


def test_keys_far_from_unit_norm_are_an_error_naming_k():
    """docs/math.md section 1: keys far from unit norm make the recurrence diverge (here o and m turn
    inf); that is an error, never a silent inf. The delta rule is stable while
    beta * ||k||^2 <= 2."""
    with pytest.raises(ValueError, match=r"k: beta \* \|\|k\|\|\^2 reaches .* use_qk_l2norm=True"):
        ops.delta_scan(**_far_keys(10.0), backend="reference")


def test_keys_within_the_stable_range_or_normalised_inside_are_accepted():
    x = _far_keys(1.3)
    x["beta"] = x["beta"].clamp(max=1.0)           # beta * ||k||^2 <= 1.69
    ops.delta_scan(**x, backend="reference")
    o, m, _ = ops.delta_scan(**_far_keys(10.0), use_qk_l2norm=True, backend="reference")
    assert o.isfinite().all() and m.isfinite().all()
    x = _far_keys(10.0)
    x["beta"] = x["beta"] * 0.01                   # weak writes keep large keys stable
    ops.delta_scan(**x, backend="reference")


def test_key_check_is_a_value_check(monkeypatch):
    monkeypatch.setenv("HOLA_CHECK_VALUES", "0")
    ops.delta_scan(**_far_keys(10.0), backend="reference")     # the caller took responsibility
