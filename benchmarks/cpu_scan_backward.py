"""CPU timing of the scan's forward + backward: torch autograd through the chunked reference
(hola_dsl/reference/chunked.py) against the TileLang CPU forward plus the DSL backward
(``delta_scan_backward``), with their gradients' agreement.

    python3 benchmarks/cpu_scan_backward.py [--B 1 --T 4096 --H 4 --K 128 --V 128 --threads 2 --reps 5]

Medians of wall-clock runs after one warm-up call (which compiles). float32 inputs, an initial
state, o's and the final state's gradients random.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _median_s(fn, reps: int) -> float:
    fn()                                                    # warm-up: compiles, caches
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("B", 1), ("T", 4096), ("H", 4), ("K", 128), ("V", 128), ("threads", 2), ("reps", 5),
                          ("chunk", 64)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from hola_dsl import backends
    from hola_dsl.reference.chunked import chunked_delta_scan
    from hola_dsl.testing import Shape, scan_inputs

    reason = backends.unavailable_reason("tilelang")
    if reason is not None:
        print(f"tilelang unavailable: {reason}")
        return 0
    x = scan_inputs(Shape(B=a.B, T=a.T, H=a.H, K=a.K, V=a.V), seed=0)
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(a.B, a.T, a.H, a.V, generator=gen)
    dS = torch.randn(a.B, a.H, a.K, a.V, generator=gen)
    scale = a.K ** -0.5
    names = ("q", "k", "v", "g", "beta", "initial_state")
    tl = backends.get("tilelang")

    def reference():
        xs = {n: x[n].clone().requires_grad_() for n in names}
        o, _, S = chunked_delta_scan(**xs, scale=scale, output_final_state=True, chunk_size=a.chunk)
        return torch.autograd.grad((o * do).sum() + (S * dS).sum(), [xs[n] for n in names])

    def dsl():
        tl.run("delta_scan", x["q"], x["k"], x["v"], x["g"], x["beta"], scale=scale, initial_state=x["initial_state"],
               output_final_state=True, chunk_size=a.chunk, config=None)
        return tl.run("delta_scan_backward", x["q"], x["k"], x["v"], x["g"], x["beta"], do, dS, scale=scale,
                      initial_state=x["initial_state"], chunk_size=a.chunk, config=None)

    ref, got = reference(), dsl()
    agree = max(((g.double() - r.double()).norm() / r.double().norm()).item() for g, r in zip(got, ref))
    t_ref, t_dsl = _median_s(reference, a.reps), _median_s(dsl, a.reps)
    print(f"scan forward+backward, B={a.B} T={a.T} H={a.H} K={a.K} V={a.V}, float32, {a.threads} threads, "
          f"median of {a.reps}:")
    print(f"  reference (torch autograd through chunked)     {t_ref * 1e3:9.1f} ms")
    print(f"  tilelang CPU forward + DSL backward            {t_dsl * 1e3:9.1f} ms   ({t_ref / t_dsl:.2f}x)")
    print(f"  worst relative gap between their gradients    {agree:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
