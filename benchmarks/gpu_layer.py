"""GPU timing of a HOLA layer's three ops (delta_scan, cache_select, cache_read) per backend, the
cache ops' time as a share of the scan's, and each op's rate from the FLOPs its kernels perform
(``hola_dsl.cost``, the figures of `hola build --report`).

Run on a machine with a CUDA GPU:

    python3 benchmarks/gpu_layer.py [--B 2 --T 16384 --H 16 --dtype bfloat16 --backend triton]

Without a GPU it says so and exits 0. Timings are medians of CUDA-event timed calls of the
public API (``hola_dsl.ops``, input checks included) after warm-up (the first call compiles);
the spread is max - min.
"""

from __future__ import annotations

import argparse
import sys

import torch

# Run as a script, this file's folder is on sys.path: one CUDA-event timer for both GPU benchmarks.
from gpu_scan_vs_fla import _time_ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("B", 2), ("T", 16384), ("H", 16), ("K", 128), ("V", 128), ("W", 64), ("C", 256)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--backend", action="append", choices=["triton", "tilelang"],
                   help="backend to time (repeatable; default: those that run on this GPU)")
    args = p.parse_args(argv)
    if min(args.B, args.T, args.H, args.K, args.V, args.W, args.C) < 1:
        p.error("every size must be a positive integer")
    if not torch.cuda.is_available():
        print("gpu_layer: no CUDA GPU on this machine; nothing to time (run it where a GPU exists).")
        return 0

    import schedules
    from hola_dsl import backends, cost, ops
    from hola_dsl.kernels import spec as kernel_spec
    from schedules import targets

    dtype, dev = getattr(torch, args.dtype), torch.device("cuda")
    names = args.backend or [n for n in ("triton", "tilelang") if backends.runs_on(n, "cuda") is None]
    gen = torch.Generator(device=dev).manual_seed(0)
    B, T, H, K, V = args.B, args.T, args.H, args.K, args.V
    rnd = lambda *s: torch.randn(*s, device=dev, generator=gen)
    q, k, v = rnd(B, T, H, K).to(dtype), torch.nn.functional.normalize(rnd(B, T, H, K), dim=-1).to(dtype), rnd(B, T, H, V).to(dtype)
    g = -torch.rand(B, T, H, device=dev, generator=gen) * 0.1
    beta = torch.rand(B, T, H, device=dev, generator=gen).to(dtype)
    scores = torch.rand(B, T, H, device=dev, generator=gen)
    gamma_q, gamma_k, sink = 1 + 0.1 * rnd(K), 1 + 0.1 * rnd(K), rnd(H)
    target = targets.arch_of(dev)
    print(f"HOLA layer on {torch.cuda.get_device_name()} ({target}): B={B} T={T} H={H} K={K} V={V} "
          f"W={args.W} C={args.C} {args.dtype}; default schedules")
    print(f"{'backend':<9} {'op':<13} {'median ms':>10} {'spread':>8} {'GFLOP':>8} {'TFLOP/s':>8} {'share of scan':>14}")
    for name in names:
        idx = ops.cache_select(scores, capacity=args.W, block_size=args.C, backend=name)
        calls = {
            "delta_scan": lambda: ops.delta_scan(q, k, v, g, beta, scale=K ** -0.5, backend=name),
            "cache_select": lambda: ops.cache_select(scores, capacity=args.W, block_size=args.C, backend=name),
            "cache_read": lambda: ops.cache_read(q, k, v, idx, gamma_q, gamma_k, sink, block_size=args.C,
                                                 backend=name),
        }
        scan_ms = None
        for op, fn in calls.items():
            ms, spread = _time_ms(fn)
            scan_ms = scan_ms or ms
            sched = schedules.space(op, name).check(None, target)
            dims = {"K": K, "V": V, "W": args.W, "C": args.C}
            flops = sum(c.flops for c in cost.report(kernel_spec(op), sched, dims, dtype, B, T, H))
            share = "-" if op == "delta_scan" else f"{ms / scan_ms:.2f}"
            print(f"{name:<9} {op:<13} {ms:>10.3f} {spread:>8.3f} {flops / 1e9:>8.2f} {flops / ms / 1e9:>8.1f} "
                  f"{share:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
