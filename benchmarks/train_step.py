"""Training speed on the CPU: the reference backend against the DSL kernels (TileLang), one process.

1. One training step (forward, backward, AdamW) of the ``small`` preset (model/presets.py) per
   backend: medians and the ratio to reference. "auto" is what `hola train` uses: per op the first
   differentiable backend of AUTO_ORDER (TileLang where it has the op's backward kernel).
2. The kernels alone, forward + backward, at B=1, T=4096, H=4, K=V=128 (cache w = 64 every
   C = 256, docs/api.md's defaults): reference, torch.compile of the reference, and TileLang, for each
   op that TileLang differentiates (the others are skipped, saying so).

Usage: python benchmarks/train_step.py [--threads 2 --repeats 5 --T 4096 --skip-kernels]
Compile and TileLang build times are not in the medians (one warm-up run each).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from hola_dsl import backends, ops
from hola_dsl.reference import chunked
from hola_dsl.testing import Shape, read_grad_inputs, scan_inputs
from model import presets
from model.config import HOLAConfig
from model.lm import HOLALM

# Run as a script, this file's folder is on sys.path: one wall-clock median for the CPU benchmarks.
from reference_vs_oracle import median_seconds



def train_steps(backend_names: list[str], repeats: int) -> dict[str, float]:
    """{backend: median seconds of one step} of the small preset, same weights and batch."""
    preset = presets.get("small")
    cfg = HOLAConfig(**preset["model"])
    B, T = preset["train"]["batch_size"], preset["train"]["seq_len"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
    out = {}
    for name in backend_names:
        torch.manual_seed(0)
        model = HOLALM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            logits = model(x[:, :-1], backend=name)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[name] = median_seconds(step, repeats)
    return out


def _read_fwd_bwd(backend: str, x: dict, do: torch.Tensor, C: int):
    leaves = {n: x[n].detach().requires_grad_() for n in ("q", "k", "v", "gamma_q", "gamma_k", "sink")}
    o = ops.cache_read(**{**x, **leaves}, block_size=C, backend=backend)
    return torch.autograd.grad(o, list(leaves.values()), do)


def _scan_fwd_bwd(backend: str, x: dict, do: torch.Tensor):
    leaves = {n: x[n].detach().requires_grad_() for n in ("q", "k", "v", "g", "beta")}
    if backend == "reference":
        # The chunked reference itself, not through ops: torch.compile (2.13) fails inside
        # dynamo while tracing the tuned-schedule lookup of an ops call at this shape.
        K = leaves["q"].shape[-1]
        o, _, _ = chunked.chunked_delta_scan(**leaves, scale=K ** -0.5, chunk_size=64)
    else:
        o, _, _ = ops.delta_scan(**leaves, backend=backend)
    return torch.autograd.grad(o, list(leaves.values()), do)


def kernels(shape: Shape, repeats: int) -> dict[str, dict[str, float]]:
    """{op: {implementation: median seconds of forward + backward}}."""
    x, do = read_grad_inputs(shape, seed=0)
    s = scan_inputs(shape, seed=0, initial_state=False)
    dos = torch.randn(shape.B, shape.T, shape.H, shape.V, generator=torch.Generator().manual_seed(1))
    calls = {
        "cache_read": lambda b: _read_fwd_bwd(b, x, do, shape.C),
        "delta_scan": lambda b: _scan_fwd_bwd(b, s, dos),
    }
    out: dict[str, dict[str, float]] = {}
    tl = backends.unavailable_reason("tilelang")
    for op, call in calls.items():
        if tl is not None or backends.backward_kernel(backends.get("tilelang"), op) is None:
            print(f"  ({op} skipped: {tl or f'TileLang has no {op}_backward kernel'})")
            continue
        row = out.setdefault(op, {})
        row["reference"] = median_seconds(lambda: call("reference"), repeats)
        compiled = torch.compile(lambda: call("reference"))
        t0 = time.perf_counter()
        compiled()
        print(f"  ({op}: torch.compile of the reference took {time.perf_counter() - t0:.0f}s)")
        row["compiled reference"] = median_seconds(compiled, repeats)
        row["tilelang"] = median_seconds(lambda: call("tilelang"), repeats)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--W", type=int, default=64)
    p.add_argument("--C", type=int, default=256)
    p.add_argument("--skip-kernels", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    picks = {op: backends.resolve("auto", "cpu", "weights", op).name for op in ("delta_scan", "cache_read")}
    print(f"train step, small preset (auto picks {picks}):")
    steps = train_steps(["reference", "auto"], a.repeats)
    for name, sec in steps.items():
        print(f"  {name:<12} {sec * 1e3:9.1f} ms   x{steps['reference'] / sec:.2f} vs reference")
    if a.skip_kernels:
        return
    shape = Shape(B=1, T=a.T, H=4, K=128, V=128, W=a.W, C=a.C)
    print(f"forward + backward alone, {shape}:")
    for op, row in kernels(shape, a.repeats).items():
        for name, sec in row.items():
            print(f"  {op:<11} {name:<19} {sec * 1e3:9.1f} ms   x{row['reference'] / sec:.2f} vs reference")


if __name__ == "__main__":
    main()
