"""Each op once per GPU backend on small shapes (T not a multiple of the chunk or block, K != V),
checked against the float64 oracle: the program `benchmarks/gpu_acceptance.sh` runs under
compute-sanitizer's racecheck and synccheck. Exits 1 when a result misses its tolerance (docs/tolerances.md),
0 without a GPU (saying so)."""

from __future__ import annotations

import sys

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_small_calls: no CUDA GPU on this machine; nothing to run.")
        return 0
    from hola_dsl import backends
    from hola_dsl.testing import Shape, run_check

    failed = 0
    shape = Shape(B=1, T=200, H=2, K=64, V=48, W=8, C=64)
    for name in ("triton", "tilelang"):
        if (why := backends.runs_on(name, "cuda")) is not None:
            print(f"{name}: not run ({why})")
            continue
        for dtype in (torch.bfloat16, torch.float32):
            for kernel in ("delta_scan", "cache_select", "cache_read"):
                r = run_check(kernel, name, shape, dtype, seed=1, device="cuda")
                failed += not r.ok
                print(f"{name:<9} {kernel:<13} {str(dtype):<15} worst {r.worst:.3g} {'PASS' if r.ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
