"""The chunked PyTorch scan (backend "reference") against the float64 token-loop oracle.

Both run side by side in one process on the same inputs; prints medians and the ratio.
Usage: python benchmarks/reference_vs_oracle.py [--B 1 --T 2048 --H 4 --K 128 --V 128 --repeats 5]
"""

from __future__ import annotations

import argparse

import torch

from hola_dsl import ops
from hola_dsl.testing import Shape, rel_err, scan_inputs
from hola_dsl.reference.oracle import naive_delta_scan

# Run as a script, this file's folder is on sys.path.
from timing import median_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("B", 1), ("T", 2048), ("H", 4), ("K", 128), ("V", 128), ("repeats", 5)):
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()
    x = scan_inputs(Shape(B=a.B, T=a.T, H=a.H, K=a.K, V=a.V), seed=0)
    with torch.no_grad():
        chunked = median_seconds(lambda: ops.delta_scan(**x, output_final_state=True, backend="reference"), a.repeats)
        oracle = median_seconds(lambda: naive_delta_scan(**x, output_final_state=True), a.repeats)
        err = rel_err(ops.delta_scan(**x, backend="reference")[0], naive_delta_scan(**x)[0])
    print(f"delta_scan B={a.B} T={a.T} H={a.H} K={a.K} V={a.V} float32, {torch.get_num_threads()} threads, "
          f"median of {a.repeats}")
    print(f"  float64 oracle (token loop)   {oracle * 1e3:9.1f} ms")
    print(f"  chunked reference (fp32)      {chunked * 1e3:9.1f} ms")
    print(f"  speed-up                      {oracle / chunked:9.1f}x   (relative error of o: {err:.2e})")


if __name__ == "__main__":
    main()
