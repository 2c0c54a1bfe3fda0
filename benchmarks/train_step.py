"""Training speed on the CPU: the reference backend against the DSL kernels (TileLang), one process.

1. The LM head + loss alone, forward + backward, at the ``small`` preset's shape (B*T = 2048
   rows, d_model 128, vocab 8192): logits + F.cross_entropy (what a step did before
   model/loss.py), the fused chunked loss training uses (model.loss.linear_cross_entropy, its
   gradients computed in the forward) at each ``--chunk-rows``, and the same loop recomputing
   the logits in the backward instead.
2. One training step (forward, backward, AdamW) of the small preset (model/presets.py) per
   backend, through the loss `hola train` uses (model.train.rows_loss) and through logits +
   F.cross_entropy: medians and ratios. "auto" is what `hola train` uses: per op the first
   differentiable backend of AUTO_ORDER (TileLang where it has the op's backward kernel).
3. What kernels can change in that step: the three ops of one mixer (delta_scan and cache_read
   forward + backward, cache_select forward) at the small preset's own shape, reference vs
   TileLang through hola_dsl.ops as the model calls them, times the layers. The rest of the
   reference step is the same work whatever the backend (projections, convolution, norms, MLP,
   head + loss, optimizer), so step / rest is the most any kernel backend could give.
4. The kernels alone, forward + backward, at B=1, T=4096, H=4, K=V=128 (cache w = 64 every
   C = 256, docs/api.md's defaults): reference, torch.compile of the reference, and TileLang, for each
   op that TileLang differentiates (the others are skipped, saying so).

Usage: python benchmarks/train_step.py [--threads 2 --repeats 7 --clock wall --T 4096 --skip-kernels --loss-only]
Variants compared with each other run interleaved (A, B, A, B, ...) in one process, so that a
load that comes and goes on the machine falls on all of them; medians of --repeats. Compile and
TileLang build times are not in the medians (one warm-up run each).
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
from model.loss import chunked_loss, default_chunk_rows, linear_cross_entropy
from model.train import rows_loss

# Run as a script, this file's folder is on sys.path: the CPU benchmarks' timing.
from timing import CLOCKS, interleaved_medians, median_seconds


class _RecomputedLoss(torch.autograd.Function):
    """The other design of model/loss.py: the forward keeps no gradients, the backward
    recomputes each chunk's logits (four matmuls per chunk in all instead of three)."""

    @staticmethod
    def forward(ctx, h, weight, targets, scale, chunk_rows):
        ctx.save_for_backward(h, weight, targets, scale)
        ctx.chunk_rows = chunk_rows
        return chunked_loss(h, weight, targets, scale, chunk_rows, False, False)[0]

    @staticmethod
    def backward(ctx, grad):
        h, weight, targets, scale = ctx.saved_tensors
        _, dh, dw = chunked_loss(h, weight, targets, scale * grad, ctx.chunk_rows, True, True)
        return dh, dw, None, None, None


def head_and_loss(chunk_rows: list[int], repeats: int, clock: str = "wall") -> dict[str, float]:
    """{variant: median seconds} of the small preset's head + cross entropy, forward + backward."""
    preset = presets.get("small")
    cfg = HOLAConfig(**preset["model"])
    N = preset["train"]["batch_size"] * preset["train"]["seq_len"]
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(N, cfg.d_model, generator=gen).requires_grad_()
    W = (torch.randn(cfg.vocab_size, cfg.d_model, generator=gen) * cfg.init_std).requires_grad_()
    y = torch.randint(0, cfg.vocab_size, (N,), generator=gen)
    scale = torch.full((N,), 1.0 / N)

    def run(loss_fn):
        def fn():
            h.grad = W.grad = None
            loss_fn().backward()
        return fn
    fns = {"logits + F.cross_entropy": run(lambda: F.cross_entropy(h @ W.t(), y))}
    for n in chunk_rows:
        fns[f"fused, chunks of {n}"] = run(lambda n=n: linear_cross_entropy(h, W, y, chunk_rows=n))
    fns[f"recompute, chunks of {chunk_rows[0]}"] = run(lambda: _RecomputedLoss.apply(h, W, y, scale, chunk_rows[0]))
    return interleaved_medians(fns, repeats, clock)


def train_steps(backend_names: list[str], repeats: int, clock: str = "wall") -> dict[str, float]:
    """{"backend, loss": median seconds of one step} of the small preset, same weights and
    batch, the step through model.train.rows_loss (fused) and through logits + F.cross_entropy."""
    preset = presets.get("small")
    cfg = HOLAConfig(**preset["model"])
    B, T = preset["train"]["batch_size"], preset["train"]["seq_len"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
    fns = {}
    for name in backend_names:
        for fused in (False, True):
            torch.manual_seed(0)
            model = HOLALM(cfg)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def step(model=model, opt=opt, name=name, fused=fused):
                if fused:
                    loss = rows_loss(model, x[:, :-1], x[:, 1:], None, B * T, 1, name)
                else:
                    logits = model(x[:, :-1], backend=name)
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            fns[f"{name}, {'fused loss' if fused else 'logits + F.cross_entropy'}"] = step
    return interleaved_medians(fns, repeats, clock)


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


def mixer_ops(backend_names: list[str], repeats: int, clock: str = "wall") -> tuple[Shape, dict[str, float]]:
    """(the small preset's mixer shape, {backend: median seconds of its three ops, forward +
    backward, for one layer}), the ops called as model/mixer.py calls them."""
    m = presets.get("small")["model"]
    t = presets.get("small")["train"]
    shape = Shape(B=t["batch_size"], T=t["seq_len"], H=m["n_heads"], K=m["head_k_dim"], V=m["head_v_dim"],
                  W=m["cache_capacity"], C=m["cache_block"])
    s = scan_inputs(shape, seed=0, initial_state=False)
    x, do_read = read_grad_inputs(shape, seed=0)
    do_scan = torch.randn(shape.B, shape.T, shape.H, shape.V, generator=torch.Generator().manual_seed(1))

    def ops_of(backend: str):
        def fn():
            leaves = {n: s[n].detach().requires_grad_() for n in ("q", "k", "v", "g", "beta")}
            o, mscore, _ = ops.delta_scan(**leaves, chunk_size=m["chunk_size"], backend=backend)
            idx = ops.cache_select(mscore.detach(), capacity=shape.W, block_size=shape.C, policy="hola",
                                   backend=backend)
            rl = {n: x[n].detach().requires_grad_() for n in ("gamma_q", "gamma_k", "sink")}
            oc = ops.cache_read(leaves["q"], leaves["k"], leaves["v"], idx, **rl, block_size=shape.C,
                                backend=backend)
            torch.autograd.backward([o, oc], [do_scan, do_read])
        return fn
    return shape, interleaved_medians({b: ops_of(b) for b in backend_names}, repeats, clock)


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
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--W", type=int, default=64)
    p.add_argument("--C", type=int, default=256)
    p.add_argument("--chunk-rows", default=None, help="rows per chunk of the fused loss, comma-separated "
                   "(default: model.loss's for the small preset's vocab)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="parts 1 and 2: wall seconds, or this process's CPU seconds (a loaded machine, --threads 1)")
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--loss-only", action="store_true", help="only part 1, the head + loss")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.clock} clock, medians of {a.repeats}, "
          f"interleaved")
    vocab = presets.get("small")["model"]["vocab_size"]
    chunks = [int(c) for c in a.chunk_rows.split(",")] if a.chunk_rows else [default_chunk_rows(vocab)]
    print("LM head + cross entropy, forward + backward, small preset (2048 x 128 -> 8192):")
    head = head_and_loss(chunks, a.repeats, a.clock)
    base = head["logits + F.cross_entropy"]
    for name, sec in head.items():
        print(f"  {name:<28} {sec * 1e3:9.1f} ms   x{base / sec:.2f} vs logits + F.cross_entropy")
    if a.loss_only:
        return
    picks = {op: backends.resolve("auto", "cpu", "weights", op).name for op in ("delta_scan", "cache_read")}
    print(f"train step, small preset (auto picks {picks}):")
    steps = train_steps(["reference", "auto"], a.repeats, a.clock)
    base = steps["reference, logits + F.cross_entropy"]
    for name, sec in steps.items():
        old = steps[name.split(",")[0] + ", logits + F.cross_entropy"]
        print(f"  {name:<38} {sec * 1e3:9.1f} ms   x{base / sec:.2f} vs reference, x{old / sec:.2f} vs its logits step")
    layers = presets.get("small")["model"]["n_layers"]
    shape, mix = mixer_ops(["reference", "tilelang"] if backends.unavailable_reason("tilelang") is None
                           else ["reference"], a.repeats, a.clock)
    step_ref = steps["reference, fused loss"]
    rest = step_ref - layers * mix["reference"]
    print(f"the mixer's three ops, forward + backward, {shape}, x{layers} layers:")
    for name, sec in mix.items():
        print(f"  {name:<12} {layers * sec * 1e3:9.1f} ms per step   x{mix['reference'] / sec:.2f} vs reference")
    if rest <= 0:
        print("  (the ops took longer alone than the whole step: the machine's load changed between the "
              "parts; rerun on a quiet machine)")
    else:
        print(f"  the rest of the reference step (fused loss): {rest * 1e3:.1f} ms of {step_ref * 1e3:.1f} ms; "
              f"with kernels that cost nothing a step would be at most x{step_ref / rest:.2f} faster")
    if a.skip_kernels:
        return
    shape = Shape(B=1, T=a.T, H=4, K=128, V=128, W=a.W, C=a.C)
    print(f"forward + backward alone, {shape}:")
    for op, row in kernels(shape, a.repeats).items():
        for name, sec in row.items():
            print(f"  {op:<11} {name:<19} {sec * 1e3:9.1f} ms   x{row['reference'] / sec:.2f} vs reference")


if __name__ == "__main__":
    main()
