"""Shared by tests, `hola check` and `hola diff`: fresh random inputs (including docs/tolerances.md's hard
cases), the float64 oracle's answer, and the relative-error measure with its tolerances."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch

from hola_dsl import backends, ops
from hola_dsl.reference import oracle
from schedules import kernels

# docs/tolerances.md: ||out - ref|| / ||ref|| per input dtype.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-3, torch.float16: 5e-3}

# Kernels whose output is a selection, compared exactly (mismatched entries, tolerance 0).
SELECTIONS = ("cache_select", "lola_select")

# Input families for the scan; each names a hard case of docs/tolerances.md.
SCAN_CASES = ("random", "repeated", "strong_decay", "beta0", "beta1_nodecay")
# Input families for the cache read's gradient: random caches (-1 padded in early blocks), every
# block's cache holding the same few keys (twice each: their dk, dv sum over many blocks and
# slots), no cache at all, and sinks that take most of the softmax (e^8, e^4). Not a sink far
# below the logits: a query whose one visible entry then takes all the softmax has gradients
# P (1 - P) (...) that float32's do . v - D cancels to noise (relative 1e-4 at T = 1, sink -8, in
# the PyTorch reference's autograd as in the kernels): no float32 formula meets 1e-5 there.
READ_CASES = ("random", "shared_keys", "empty_cache", "large_sink")

# The differentiable inputs of cache_read, in the order of cache_read_backward's results.
READ_GRAD_INPUTS = ("q", "k", "v", "gamma_q", "gamma_k", "sink")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; inf when out has NaN/inf (never pass on NaN)."""
    out = out.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    if not bool(torch.isfinite(out).all()):
        return math.inf
    denom = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / denom if denom > 0 else diff


def max_abs(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| (inf when out is not finite)."""
    out = out.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(out).all()):
        return math.inf
    return (out - ref.detach().to(torch.float64).cpu()).abs().max().item() if out.numel() else 0.0


@dataclass(frozen=True)
class Shape:
    """Problem size: B batch, T tokens, H heads, K key dim, V value dim, W cache capacity,
    C cache block. Every field is an integer >= 1 (a check of nothing would pass)."""

    B: int = 2
    T: int = 300
    H: int = 2
    K: int = 32
    V: int = 48
    W: int = 16
    C: int = 128

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an integer >= 1")

    @staticmethod
    def parse(text: str, flag: str = "--shape") -> "Shape":
        """Parse "B=1,T=300,H=2,K=32,V=48" (missing fields keep their defaults); errors start
        with ``flag``."""
        names = list(Shape.__dataclass_fields__)
        fields: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = (s.strip() for s in part.partition("="))
            try:
                number = int(value)
            except ValueError:
                number = None
            if name not in names or number is None:
                raise ValueError(f"{flag}: cannot read {part!r}; expected NAME=INT with NAME in {names}, "
                                 f"e.g. B=1,T=300,H=2,K=32,V=48")
            if name in fields:
                raise ValueError(f"{flag}: {name} given twice in {text!r}")
            fields[name] = number
        try:
            return Shape(**fields)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None

    def working_bytes(self) -> int:
        """About the memory a check of this shape needs: float32 inputs and outputs plus their
        float64 copies for the oracle, the states, and the cache indices (W per block)."""
        tokens = self.B * self.T * self.H * (2 * self.K + 2 * self.V + 4)
        states = 2 * self.B * self.H * self.K * self.V
        indices = self.B * self.H * -(-self.T // self.C) * self.W
        return 12 * (tokens + states + indices)


def scan_inputs(shape: Shape, dtype=torch.float32, *, case: str = "random", seed: int = 0,
                device="cpu", initial_state: bool = True) -> dict:
    """Random delta_scan inputs: q, k unit-L2 [B, T, H, K]; v [B, T, H, V]; g, beta [B, T, H];
    initial_state [B, H, K, V] or None. ``case`` picks one of SCAN_CASES."""
    if case not in SCAN_CASES:
        raise ValueError(f"case: expected one of {list(SCAN_CASES)}, got {case!r}")
    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = shape.B, shape.T, shape.H, shape.K, shape.V
    r = lambda *s: torch.randn(*s, generator=gen)
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
    g = -torch.rand(B, T, H, generator=gen) * 0.5
    beta = torch.rand(B, T, H, generator=gen)
    if case == "repeated":      # near-identical keys with beta = 1 and no decay: the hard solve
        k = k[:, :1].expand(B, T, H, K) + 1e-3 * r(B, T, H, K)
        beta, g = torch.ones(B, T, H), torch.zeros(B, T, H)
    elif case == "strong_decay":
        # g very negative, with weakly decaying tokens among them and at the end: the decays
        # between those are then small differences of large log-decay sums (|G| ~ 1000 per
        # chunk), where a float32 cumsum loses 1e-5 of the final state.
        g = -torch.rand(B, T, H, generator=gen) * 30.0
        weak = torch.rand(B, T, H, generator=gen) < 0.1
        weak[:, -4:] = True
        g = torch.where(weak, -0.05 * torch.rand(B, T, H, generator=gen), g)
    elif case == "beta0":
        beta = torch.zeros(B, T, H)
    elif case == "beta1_nodecay":
        beta, g = torch.ones(B, T, H), torch.zeros(B, T, H)
    q, k = ops.l2norm(q), ops.l2norm(k)
    out = dict(q=q, k=k, v=v, g=g, beta=beta,
               initial_state=r(B, H, K, V) if initial_state else None)
    return {n: (x.to(device=device, dtype=dtype) if x is not None and n in "qkv" else
                (x.to(device) if x is not None else None)) for n, x in out.items()}


def scan_grads(x: dict, do: torch.Tensor, dfinal: Optional[torch.Tensor], scale: float) -> tuple:
    """The float64 oracle's gradients of <o, do> + <final_state, dfinal> (torch.autograd through
    ``naive_delta_scan``) with respect to q, k, v, g, beta and initial_state (None when ``x`` has
    none): what ``delta_scan_backward`` returns, in float64."""
    x64 = {n: (t.detach().double().requires_grad_() if t is not None else None) for n, t in x.items()}
    o, _, S = oracle.naive_delta_scan(**x64, scale=scale, output_final_state=True)
    loss = (o * do.double()).sum() + ((S * dfinal.double()).sum() if dfinal is not None else 0.0)
    names = ("q", "k", "v", "g", "beta", "initial_state")
    wrt = [x64[n] for n in names if x64[n] is not None]
    grads = iter(torch.autograd.grad(loss, wrt))
    return tuple(next(grads) if x64[n] is not None else None for n in names)


def scan_backward_inputs(shape: Shape, dtype=torch.float32, *, case: str = "random", seed: int = 0,
                         device="cpu") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(scan inputs as :func:`scan_inputs`, do [B, T, H, V] in ``dtype``, dfinal [B, H, K, V]
    float32): a call of ``delta_scan_backward``."""
    x = scan_inputs(shape, dtype, case=case, seed=seed, device=device)
    gen = torch.Generator().manual_seed(seed + 1)
    do = torch.randn(shape.B, shape.T, shape.H, shape.V, generator=gen).to(device=device, dtype=dtype)
    dfinal = torch.randn(shape.B, shape.H, shape.K, shape.V, generator=gen).to(device)
    return x, do, dfinal


def select_inputs(shape: Shape, *, seed: int = 0, ties: bool = True, device="cpu") -> torch.Tensor:
    """Random non-negative scores [B, T, H]; with ``ties`` many exact duplicates."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(shape.B, shape.T, shape.H, generator=gen)
    if ties:
        s = (s * 8).floor() / 8
    return s.to(device)


def lola_inputs(shape: Shape, dtype=torch.float32, *, seed: int = 0, device="cpu") -> dict:
    """lola_select inputs with exact arithmetic and adversarial ties: k in {-1, 0, 1}
    [B, T, H, K], v in {-2..2} [B, T, H, V], float32 states in {-1, 0, 1} [B, H, NB, K, V].
    Every third token has a one-hot key whose value the next block-start state recalls exactly
    (sre = 0), and the second half of the sequence repeats the first (equal sre, later
    positions). Every sre is then exact in float32 on any backend, so selection is compared
    exactly (ties decided by position, as docs/math.md section 2 says)."""
    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = shape.B, shape.T, shape.H, shape.K, shape.V
    nb = -(-T // shape.C)
    k = torch.randint(-1, 2, (B, T, H, K), generator=gen).float()
    v = torch.randint(-2, 3, (B, T, H, V), generator=gen).float()
    states = torch.randint(-1, 2, (B, nb, H, K, V), generator=gen).float()
    for j in range(0, T, 3):
        n = j // shape.C + 1
        if n < nb:
            k[:, j] = 0.0
            k[:, j, :, j % K] = 1.0
            v[:, j] = states[:, n, :, j % K]
    half = torch.arange(T // 2, T)
    k[:, half], v[:, half] = k[:, half - T // 2], v[:, half - T // 2]
    return dict(k=k.to(device=device, dtype=dtype), v=v.to(device=device, dtype=dtype),
                states=states.transpose(1, 2).contiguous().to(device))


def read_inputs(shape: Shape, dtype=torch.float32, *, seed: int = 0, policy: str = "hola",
                device="cpu") -> dict:
    """Random cache_read inputs with idx from the oracle's selection over random scores."""
    gen = torch.Generator().manual_seed(seed)
    B, T, H, K, V = shape.B, shape.T, shape.H, shape.K, shape.V
    r = lambda *s: torch.randn(*s, generator=gen)
    scores = torch.rand(B, T, H, generator=gen)
    idx = oracle.naive_cache_select(scores, capacity=shape.W, block_size=shape.C, policy=policy)
    out = dict(q=r(B, T, H, K), k=r(B, T, H, K), v=r(B, T, H, V), idx=idx,
               gamma_q=1 + 0.1 * r(K), gamma_k=1 + 0.1 * r(K), sink=r(H))
    return {n: (x.to(device=device, dtype=dtype) if n in "qkv" else x.to(device)) for n, x in out.items()}


def read_grad_inputs(shape: Shape, dtype=torch.float32, *, case: str = "random", seed: int = 0,
                     device="cpu") -> tuple[dict, torch.Tensor]:
    """(cache_read inputs of ``read_inputs``, reshaped to the hard ``case`` of READ_CASES, and
    an upstream gradient do [B, T, H, V] of ``dtype``)."""
    if case not in READ_CASES:
        raise ValueError(f"case: expected one of {list(READ_CASES)}, got {case!r}")
    x = read_inputs(shape, dtype, seed=seed, device=device)
    idx = x["idx"]
    if case == "shared_keys":
        n = torch.arange(idx.shape[2], device=idx.device).view(1, 1, -1, 1)
        keys = (torch.arange(idx.shape[3], device=idx.device) // 2).view(1, 1, 1, -1) % (n * shape.C).clamp(min=1)
        x["idx"] = torch.where(n > 0, keys, -1).expand_as(idx).contiguous()
    elif case == "empty_cache":
        x["idx"] = torch.full_like(idx, -1)
    elif case == "large_sink":
        x["sink"] = torch.tensor([8.0, 4.0] * shape.H, device=device)[:shape.H]
    gen = torch.Generator().manual_seed(seed + 1)
    do = torch.randn(shape.B, shape.T, shape.H, shape.V, generator=gen).to(device=device, dtype=dtype)
    return x, do


def cache_read_grads(backend: str, x: dict, do: torch.Tensor, block_size: int,
                     config: Optional[dict] = None) -> tuple[torch.Tensor, ...]:
    """The gradients of cache_read at ``x`` (``READ_GRAD_INPUTS``) for upstream ``do`` on
    ``backend``: its backward kernel when it has one, else autograd through its forward."""
    impl = backends.get(backend)
    kernel = backends.backward_kernel(impl, "cache_read")
    if kernel is not None:
        return impl.run(kernel, *(x[n] for n in ("q", "k", "v", "idx", "gamma_q", "gamma_k", "sink")), do,
                        block_size=block_size, eps=1e-6, config=config)
    leaves = {n: x[n].detach().requires_grad_() for n in READ_GRAD_INPUTS}
    with torch.enable_grad():
        o = ops.cache_read(**{**x, **leaves}, block_size=block_size, backend=backend, config=config)
        return torch.autograd.grad(o, list(leaves.values()), do)


def oracle_read_grads(x: dict, do: torch.Tensor, block_size: int) -> tuple[torch.Tensor, ...]:
    """The float64 oracle's gradients of cache_read (autograd of ``oracle.naive_cache_read``)."""
    leaves = {n: x[n].detach().double().requires_grad_() for n in READ_GRAD_INPUTS}
    with torch.enable_grad():
        o = oracle.naive_cache_read(**{**x, **leaves}, block_size=block_size)
        return torch.autograd.grad(o, list(leaves.values()), do.double())


def backend_call(kernel: str, shape: Shape, dtype=torch.float32, *, seed: int = 0, policy: str = "hola",
                 device="cpu") -> tuple[tuple, dict]:
    """(inputs, options) of one call of ``kernel`` on fresh inputs of ``shape``, normalised as
    ``hola_dsl.ops`` hands them to a backend: ``Backend.run(kernel, *inputs, **options)``."""
    if kernel == "delta_scan":
        x = scan_inputs(shape, dtype, seed=seed, device=device)
        return ((x["q"], x["k"], x["v"], x["g"], x["beta"]),
                dict(scale=shape.K ** -0.5, initial_state=x["initial_state"], output_final_state=True, chunk_size=64))
    if kernel == "delta_scan_backward":
        x, do, dfinal = scan_backward_inputs(shape, dtype, seed=seed, device=device)
        return ((x["q"], x["k"], x["v"], x["g"], x["beta"], do, dfinal),
                dict(scale=shape.K ** -0.5, initial_state=x["initial_state"], chunk_size=64))
    if kernel == "cache_select":
        return (select_inputs(shape, seed=seed, device=device),), dict(capacity=shape.W, block_size=shape.C,
                                                                        policy=policy)
    if kernel == "cache_read_backward":
        x, do = read_grad_inputs(shape, dtype, seed=seed, device=device)
        return ((x["q"], x["k"], x["v"], x["idx"], x["gamma_q"], x["gamma_k"], x["sink"], do),
                dict(block_size=shape.C, eps=1e-6))
    if kernel == "lola_select":
        x = lola_inputs(shape, dtype, seed=seed, device=device)
        return (x["k"], x["v"], x["states"]), dict(capacity=shape.W, block_size=shape.C)
    x = read_inputs(shape, dtype, seed=seed, policy=policy, device=device)
    return ((x["q"], x["k"], x["v"], x["idx"], x["gamma_q"], x["gamma_k"], x["sink"]),
            dict(block_size=shape.C, eps=1e-6))


@dataclass
class Result:
    """One kernel run compared with the oracle: relative and max-abs error per output."""

    kernel: str
    backend: str
    errors: dict
    max_abs: dict
    tolerance: float
    seconds: float

    @property
    def worst(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance


def run_check(kernel: str, backend: str, shape: Shape, dtype=torch.float32, *, seed: int = 0,
              case: str = "random", policy: str = "hola", chunk_size: int = 64,
              config: Optional[dict] = None, device="cpu") -> Result:
    """Run ``kernel`` on ``backend`` and the float64 oracle on the same fresh inputs."""
    kernels.check(kernel)
    tol = TOLERANCE[dtype]
    if kernel == "delta_scan":
        x = scan_inputs(shape, dtype, case=case, seed=seed, device=device)
        t0 = time.perf_counter()
        o, m, s = ops.delta_scan(**x, output_final_state=True, chunk_size=chunk_size, backend=backend, config=config)
        sec = time.perf_counter() - t0
        ro, rm, rs = oracle.naive_delta_scan(**x, output_final_state=True)
        outs = {"o": (o, ro), "m": (m, rm), "final_state": (s, rs)}
    elif kernel == "delta_scan_backward":
        # run by the backend itself: the public API reaches it only through autograd
        x, do, dfinal = scan_backward_inputs(shape, dtype, case=case, seed=seed, device=device)
        scale = shape.K ** -0.5
        t0 = time.perf_counter()
        got = backends.get(backend).run("delta_scan_backward", x["q"], x["k"], x["v"], x["g"], x["beta"], do, dfinal,
                                        scale=scale, initial_state=x["initial_state"], chunk_size=chunk_size,
                                        config=config)
        sec = time.perf_counter() - t0
        names = ("dq", "dk", "dv", "dg", "dbeta", "dinitial_state")
        outs = dict(zip(names, zip(got, scan_grads(x, do, dfinal, scale))))
    elif kernel == "cache_select":
        scores = select_inputs(shape, seed=seed, device=device)
        t0 = time.perf_counter()
        idx = ops.cache_select(scores, capacity=shape.W, block_size=shape.C, policy=policy,
                               backend=backend, config=config)
        sec = time.perf_counter() - t0
        ref = oracle.naive_cache_select(scores, capacity=shape.W, block_size=shape.C, policy=policy)
        mismatch = float((idx.cpu() != ref.cpu()).sum()) if idx.shape == ref.shape else math.inf
        return Result(kernel, backend, {"idx": mismatch}, {"idx": mismatch}, 0.0, sec)
    elif kernel == "cache_read_backward":
        x, do = read_grad_inputs(shape, dtype, case=case if case in READ_CASES else "random", seed=seed,
                                 device=device)
        t0 = time.perf_counter()
        grads = cache_read_grads(backend, x, do, shape.C, config)
        sec = time.perf_counter() - t0
        outs = {f"d{n}": pair for n, pair in zip(READ_GRAD_INPUTS, zip(grads, oracle_read_grads(x, do, shape.C)))}
    elif kernel == "lola_select":
        x = lola_inputs(shape, dtype, seed=seed, device=device)
        t0 = time.perf_counter()
        idx = ops.lola_select(**x, capacity=shape.W, block_size=shape.C, backend=backend, config=config)
        sec = time.perf_counter() - t0
        ref = oracle.naive_lola_select(**x, capacity=shape.W, block_size=shape.C)
        mismatch = float((idx.cpu() != ref.cpu()).sum()) if idx.shape == ref.shape else math.inf
        return Result(kernel, backend, {"idx": mismatch}, {"idx": mismatch}, 0.0, sec)
    else:
        x = read_inputs(shape, dtype, seed=seed, policy=policy, device=device)
        t0 = time.perf_counter()
        o = ops.cache_read(**x, block_size=shape.C, backend=backend, config=config)
        sec = time.perf_counter() - t0
        outs = {"o": (o, oracle.naive_cache_read(**x, block_size=shape.C))}
    return Result(kernel, backend, {n: rel_err(a, b) for n, (a, b) in outs.items()},
                  {n: max_abs(a, b) for n, (a, b) in outs.items()}, tol, sec)


def read_lse(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor, gamma_q: torch.Tensor, gamma_k: torch.Tensor,
             sink: torch.Tensor, *, block_size: int, eps: float = 1e-6, **_) -> torch.Tensor:
    """float64 [B, T, H]: log(exp(sink_h) + sum_j exp(l_tj)) over the visible set of each query
    (docs/math.md section 3), the log-denominator of the oracle's softmax; what cache_read's optional
    lse output holds. Takes ``read_inputs``'s dict (v is ignored)."""
    rms = lambda x: x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    q, k = (x.to(torch.float64) for x in (q, k))
    B, T, H, K = q.shape
    qc, kc = rms(q) * gamma_q.double(), rms(k) * gamma_k.double()
    out = torch.empty(B, T, H, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                n = t // block_size
                seen = [j for j in idx[b, h, n].tolist() if j >= 0] + list(range(n * block_size, t + 1))
                logits = kc[b, seen, h] @ qc[b, t, h] / math.sqrt(K)
                out[b, t, h] = torch.logsumexp(torch.cat([sink[h].double().view(1), logits]), 0)
    return out
