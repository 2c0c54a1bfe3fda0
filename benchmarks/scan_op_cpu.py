"""The scan's forward + backward through ``hola_dsl.ops.delta_scan`` (the custom op and its
autograd, as a model calls it) on the CPU, per backend, interleaved (A, B, A, B, ...), medians.

    python3 benchmarks/scan_op_cpu.py [--shape 8,256,2,64,64] [--threads 2] [--reps 9]
                                      [--backends tilelang,reference] [--clock wall|cpu]

Inputs as the HOLA mixer makes them: q, k unit L2, v a strided slice of a wider tensor, g and
beta float32, chunk 64; the loss is sum(o * do). "none" times everything but the scan (the
inputs' own graph), to subtract. ``--clock cpu`` reads the calling thread's CPU time: with
``--threads 1`` it ignores other processes' load on a shared machine (with more threads it
misses the workers' time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository's packages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="8,256,2,64,64", help="B,T,H,K,V (default: the small preset's mixer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--backends", default="tilelang,reference,none")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from hola_dsl import ops

    B, T, H, K, V = (int(x) for x in a.shape.split(","))
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    gen = torch.Generator().manual_seed(0)
    qk0 = ops.l2norm(torch.randn(2, B, T, H, K, generator=gen))
    wide0 = torch.randn(B, T, H, V + 8, generator=gen)
    g0 = -torch.rand(B, T, H, generator=gen) * 0.1
    beta0 = torch.rand(B, T, H, generator=gen)
    do = torch.randn(B, T, H, V, generator=gen)

    def step(backend: str) -> None:
        q, k = qk0[0].clone().requires_grad_(), qk0[1].clone().requires_grad_()
        wide = wide0.clone().requires_grad_()
        v = wide[..., :V]
        g, beta = g0.clone().requires_grad_(), beta0.clone().requires_grad_()
        if backend == "none":
            o = v * (q[..., :1] + k[..., :1] + g[..., None] + beta[..., None])
        else:
            o, _, _ = ops.delta_scan(q, k, v, g, beta, chunk_size=64, backend=backend)
        o.backward(do)

    names = a.backends.split(",")
    for name in names:
        step(name)                                      # warm-up: compiles, caches
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(a.reps):
        for name in names:
            t0 = clock()
            step(name)
            times[name].append(clock() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"delta_scan forward + backward (ops), B,T,H,K,V = {a.shape}, float32, {a.threads} threads, "
          f"{a.clock} clock, median of {a.reps}, interleaved:")
    for n in names:
        print(f"  {n:10s} {med[n] * 1e3:8.1f} ms")
    if "none" in med and len(names) > 1:
        scan = {n: med[n] - med["none"] for n in names if n != "none"}
        print("  the scan alone (minus none): " + ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in scan.items()))
        if "reference" in scan and "tilelang" in scan and scan["tilelang"] > 0:
            print(f"  reference / tilelang: {scan['reference'] / scan['tilelang']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
