"""Packed variable-length batches (cu_seqlens, docs/api.md): on every backend that runs
here, a packed batch gives exactly what each sequence gives alone (outputs, m, states, idx),
and agrees with the float64 oracle; hostile cu_seqlens are clear errors."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hola_dsl import backends, kernels, ops, varlen  # noqa: E402
from hola_dsl.reference import oracle  # noqa: E402
from hola_dsl.testing import TOLERANCE, rel_err  # noqa: E402

LENGTHS = (1, 63, 64, 300, 1000)
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(backends.unavailable_reason(b) is not None,
                                                     reason=f"{b} unavailable"))
            for b in ("reference", "eager", "triton", "tilelang")]


def _packed(lengths, H: int, K: int, V: int, seed: int = 0, case: str = "random"):
    gen = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    r = lambda *s: torch.randn(*s, generator=gen)
    k = r(1, T, H, K)
    if case == "repeated":      # near-identical keys, beta = 1, no decay: the hard solve
        k = k[:, :1].expand(1, T, H, K) + 1e-3 * r(1, T, H, K)
        g, beta = torch.zeros(1, T, H), torch.ones(1, T, H)
    else:
        g, beta = -torch.rand(1, T, H, generator=gen) * 0.5, torch.rand(1, T, H, generator=gen)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    return dict(q=ops.l2norm(r(1, T, H, K)), k=ops.l2norm(k), v=r(1, T, H, V), g=g, beta=beta,
                h0=r(len(lengths), H, K, V), scores=(torch.rand(1, T, H, generator=gen) * 8).floor(),
                gamma_q=1 + 0.1 * r(K), gamma_k=1 + 0.1 * r(K), sink=r(H)), cu


def _check_packed_equals_alone(backend: str, lengths, H: int, K: int, V: int, C: int, W: int,
                               oracle_check: bool = True):
    x, cu = _packed(lengths, H, K, V)
    offsets = cu.tolist()
    o, m, ht = ops.delta_scan(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"],
                              output_final_state=True, cu_seqlens=cu, backend=backend)
    idx = ops.cache_select(x["scores"], capacity=W, block_size=C, cu_seqlens=cu.long(), backend=backend)
    oc = ops.cache_read(x["q"], x["k"], x["v"], idx, x["gamma_q"], x["gamma_k"], x["sink"], block_size=C,
                        cu_seqlens=cu, backend=backend)
    rows = varlen.block_offsets(offsets, C)
    assert idx.shape == (1, H, rows[-1], W)
    for i, (s, e) in enumerate(varlen.bounds(offsets)):
        part = lambda t: t[:, s:e]
        oi, mi, hi = ops.delta_scan(*map(part, (x["q"], x["k"], x["v"], x["g"], x["beta"])),
                                    initial_state=x["h0"][i:i + 1], output_final_state=True, backend=backend)
        idx_i = ops.cache_select(part(x["scores"]), capacity=W, block_size=C, backend=backend)
        oc_i = ops.cache_read(*map(part, (x["q"], x["k"], x["v"])), idx_i, x["gamma_q"], x["gamma_k"], x["sink"],
                              block_size=C, backend=backend)
        assert torch.equal(part(o), oi) and torch.equal(part(m), mi) and torch.equal(ht[i:i + 1], hi), i
        assert torch.equal(idx[:, :, rows[i]:rows[i + 1]], torch.where(idx_i >= 0, idx_i + s, idx_i)), i
        assert torch.equal(part(oc), oc_i), i
    if oracle_check:
        ro, rm, rh = oracle.naive_delta_scan(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"],
                                             output_final_state=True, cu_seqlens=cu)
        assert max(rel_err(o, ro), rel_err(m, rm), rel_err(ht, rh)) <= TOLERANCE[torch.float32]
        assert torch.equal(idx, oracle.naive_cache_select(x["scores"], capacity=W, block_size=C, cu_seqlens=cu))
        roc = oracle.naive_cache_read(x["q"], x["k"], x["v"], idx, x["gamma_q"], x["gamma_k"], x["sink"],
                                      block_size=C, cu_seqlens=cu)
        assert rel_err(oc, roc) <= TOLERANCE[torch.float32]


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_equals_each_alone(backend):
    # Triton's interpreter runs programs one at a time: in the fast subset it gets shorter
    # sequences (the lengths run in the slow twin below).
    lengths = (1, 63, 64, 130) if backend == "triton" else LENGTHS
    _check_packed_equals_alone(backend, lengths, H=1 if backend == "triton" else 2, K=16, V=32, C=64, W=8,
                               oracle_check=backend == "eager")


@pytest.mark.slow
def test_packed_equals_each_alone_triton_full_lengths():
    if backends.unavailable_reason("triton") is not None:
        pytest.skip("triton unavailable")
    _check_packed_equals_alone("triton", LENGTHS, H=1, K=16, V=32, C=64, W=8, oracle_check=False)


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] in ("reference", "tilelang")])
def test_packed_equals_each_alone_default_sizes(backend):
    # The interpreters (eager, Triton) are covered at small sizes above; the default sizes take
    # minutes in them and test the same code.
    _check_packed_equals_alone(backend, LENGTHS, H=1, K=128, V=128, C=256, W=64, oracle_check=False)


def test_empty_sequences_keep_their_state():
    """Length-0 sequences (first, middle, last): no output rows, no idx rows, final state =
    initial state."""
    lengths = (0, 5, 0, 70, 0)
    x, cu = _packed(lengths, 1, 16, 16)
    for backend in ("reference", "eager"):
        _, _, ht = ops.delta_scan(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"],
                                  output_final_state=True, cu_seqlens=cu, backend=backend)
        for i in (0, 2, 4):
            assert torch.equal(ht[i], x["h0"][i])
        idx = ops.cache_select(x["scores"], capacity=4, block_size=64, cu_seqlens=cu, backend=backend)
        assert idx.shape[2] == 1 + 2
        oc = ops.cache_read(x["q"], x["k"], x["v"], idx, x["gamma_q"], x["gamma_k"], x["sink"], block_size=64,
                            cu_seqlens=cu, backend=backend)
        roc = oracle.naive_cache_read(x["q"], x["k"], x["v"], idx, x["gamma_q"], x["gamma_k"], x["sink"],
                                      block_size=64, cu_seqlens=cu)
        assert rel_err(oc, roc) <= TOLERANCE[torch.float32]


def test_packed_reference_gradients_match_each_alone():
    lengths = (3, 0, 20)
    x, cu = _packed(lengths, 1, 16, 16)
    names = ("q", "k", "v", "g", "beta")
    leaves = {n: x[n].clone().requires_grad_() for n in names + ("h0",)}
    o, _, ht = ops.delta_scan(*(leaves[n] for n in names), initial_state=leaves["h0"], output_final_state=True,
                              cu_seqlens=cu, backend="reference")
    (o.square().sum() + ht.square().sum()).backward()
    for i, (s, e) in enumerate(varlen.bounds(cu.tolist())):
        alone = {n: x[n][:, s:e].clone().requires_grad_() for n in names}
        h0 = x["h0"][i:i + 1].clone().requires_grad_()
        if e > s:
            oi, _, hi = ops.delta_scan(*(alone[n] for n in names), initial_state=h0, output_final_state=True,
                                       backend="reference")
            (oi.square().sum() + hi.square().sum()).backward()
            for n in names:
                torch.testing.assert_close(leaves[n].grad[:, s:e], alone[n].grad, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(leaves["h0"].grad[i:i + 1], h0.grad, rtol=1e-5, atol=1e-6)
        else:       # an empty sequence passes its state through: d(||h||^2)/dh0 = 2 h0
            torch.testing.assert_close(leaves["h0"].grad[i], 2 * x["h0"][i])


def test_hostile_cu_seqlens_are_clear_errors():
    x, cu = _packed((3, 5), 1, 16, 16)
    args = (x["q"], x["k"], x["v"], x["g"], x["beta"])
    cases = [
        (cu.float(), TypeError, "cu_seqlens: expected dtype int32 or int64"),
        ([0, 3, 8], TypeError, "cu_seqlens: expected a torch.Tensor"),
        (torch.tensor([1, 3, 8]), ValueError, "start at 0"),
        (torch.tensor([0, 5, 3, 8]), ValueError, "nondecreasing"),
        (torch.tensor([0, 3, 7]), ValueError, "end at T = 8"),
        (torch.tensor([0]), ValueError, "shape [N + 1]"),
        (torch.tensor([[0, 3, 8]]), ValueError, "shape [N + 1]"),
    ]
    for bad, exc, needle in cases:
        with pytest.raises(exc, match=needle.replace("[", r"\[").replace("+", r"\+")):
            ops.delta_scan(*args, cu_seqlens=bad, backend="eager")
        with pytest.raises(exc, match=needle.replace("[", r"\[").replace("+", r"\+")):
            ops.cache_select(x["scores"], capacity=4, block_size=4, cu_seqlens=bad, backend="eager")
    two = [torch.cat([t, t]) for t in args]
    with pytest.raises(ValueError, match="B = 1, got B = 2"):
        ops.delta_scan(*two, cu_seqlens=cu, backend="eager")
    with pytest.raises(ValueError, match="initial_state: dim N is 1, expected one per sequence"):
        ops.delta_scan(*args, initial_state=x["h0"][:1], cu_seqlens=cu, backend="eager")
    idx = ops.cache_select(x["scores"], capacity=4, block_size=4, cu_seqlens=cu, backend="eager")
    read = lambda i, c=cu: ops.cache_read(x["q"], x["k"], x["v"], i, x["gamma_q"], x["gamma_k"], x["sink"],
                                          block_size=4, cu_seqlens=c, backend="eager")
    with pytest.raises(ValueError, match="sum_i ceil"):
        read(idx[:, :, 1:])
    leak = idx.clone()
    leak[0, 0, 2, 0] = 0            # sequence 0's position in sequence 1's second block
    with pytest.raises(ValueError, match=r"row 2 \(a block of the sequence starting at 3\)"):
        read(leak)


PACKED_BUILD = [0, 1, 3]     # two sequences: the kernels' packed forms (no data needed)
BUILD_DIMS = {"K": 32, "V": 32, "W": 16, "C": 64}


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["delta_scan", "cache_select", "cache_read"])
def test_packed_kernels_build_for_gpus(kernel):
    """The packed kernels compile ahead of time: Triton for sm_90 and TileLang's CUDA dialect with
    nvcc for sm_90a (where those are here), under the schedule a packed call completes: the
    scan's packed form is its fused split, with the fused split's GPU defaults (16-token chunks),
    not the dense phases' 64 (which spilled in Triton and is over TileLang's shared-memory
    budget at K = V = 128). No spills."""
    built = 0
    packed_scan = {"split": "fused", "chunk_size": 16}

    def check(rows):
        assert rows and all(r.ok and r.spills == 0 for r in rows), [(r.kernel, r.spills, r.error) for r in rows]
        if kernel == "delta_scan":
            assert all({k: r.schedule[k] for k in packed_scan} == packed_scan for r in rows), rows[0].schedule
    if backends.unavailable_reason("triton") is None:
        from hola_dsl.backends.triton import aot
        check(aot.build(kernel, "sm_90", dims=BUILD_DIMS, offsets=PACKED_BUILD))
        built += 1
    from hola_dsl.backends.tilelang import nvcc
    if backends.unavailable_reason("tilelang") is None and nvcc.find_nvcc() is not None:
        check(nvcc.build(kernel, "sm_90a", dims=BUILD_DIMS, offsets=PACKED_BUILD))
        built += 1
    if not built:
        pytest.skip("neither Triton's AOT compiler nor TileLang with nvcc is here")


def test_a_packed_scan_completes_the_fused_splits_schedule(monkeypatch):
    """A packed scan on a kernel backend is scheduled as the scan's packed form (its fused
    split, whatever the config says of the split), a dense one as its config says."""
    from hola_dsl import spec
    splits = []
    real = spec.launch
    monkeypatch.setattr(spec, "launch", lambda kspec, runner, sched, *a: splits.append(sched["split"])
                        or real(kspec, runner, sched, *a))
    x, cu = _packed((3, 5), H=1, K=16, V=16)
    args = (x["q"], x["k"], x["v"], x["g"], x["beta"])
    phases = {"split": "prepare+recur+output"}
    ops.delta_scan(*args, cu_seqlens=cu, backend="eager", config=phases)
    ops.delta_scan(*args, cu_seqlens=cu, backend="eager")
    ops.delta_scan(*args, backend="eager", config=phases)
    assert splits == ["fused", "fused", "prepare+recur+output"]
    assert spec.fits_packed(kernels.spec("delta_scan"), {"split": "fused", "BV": 16})
    assert not spec.fits_packed(kernels.spec("delta_scan"), phases)
