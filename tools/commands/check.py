"""`hola check`: every kernel on every backend available here against the float64 oracle."""

from __future__ import annotations

import argparse
import sys

import torch

from hola_dsl import backends
from hola_dsl.testing import SCAN_CASES, Shape, run_check

NAME = "check"
HELP = "run every kernel on every available backend against the float64 oracle and print a table"

# Inputs per kernel: several shapes (T not a multiple of the chunk or block, K != V) and the
# hard cases of SPEC.md section 6.
SHAPES = (Shape(B=2, T=1, H=2, K=32, V=48, W=8, C=64), Shape(B=2, T=300, H=2, K=32, V=48, W=16, C=128))


def _cases(kernel: str):
    for shape in SHAPES:
        if kernel == "delta_scan":
            for case in SCAN_CASES:
                yield shape, dict(case=case)
        else:
            for policy in ("hola", "recency"):
                yield shape, dict(policy=policy)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", action="append", help="check only this backend (repeatable); default: all available")
    parser.add_argument("--kernel", action="append", choices=backends.KERNELS, help="check only this kernel (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="input seed (default: a fresh one each run)")
    parser.add_argument("--no-nvcc", action="store_true", help="skip the TileLang CUDA-dialect nvcc build (sm_90a)")


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    names = args.backend or [b.name for b in backends.available("cpu")]
    skipped = {n: backends.unavailable_reason(n) for n in backends.names() if n not in names}
    print(f"hola check: float32 inputs, seed {seed}; tolerance: relative error <= 1e-5, selection exact")
    header = f"{'kernel':<13} {'backend':<10} {'worst error':>12} {'result':>6} {'time':>10}"
    print(header)
    print("-" * len(header))
    failed = 0
    for kernel in args.kernel or backends.KERNELS:
        for name in names:
            worst, seconds, ok, note = 0.0, 0.0, True, ""
            try:
                for i, (shape, kw) in enumerate(_cases(kernel)):
                    r = run_check(kernel, name, shape, seed=seed + i, **kw)
                    worst, seconds, ok = max(worst, r.worst), seconds + r.seconds, ok and r.ok
            except Exception as exc:  # a crashing backend is a failed row, not a crashed check
                ok, note = False, f"  {type(exc).__name__}: {exc}"
            failed += not ok
            unit = "mismatches" if kernel == "cache_select" else ""
            print(f"{kernel:<13} {name:<10} {worst:>12.3g} {'PASS' if ok else 'FAIL':>6} {seconds * 1e3:>8.1f}ms {unit}{note}")
    if "tilelang" in names and not args.no_nvcc:
        from hola_dsl import nvcc
        failed += nvcc.check_rows("sm_90a", args.kernel or backends.KERNELS)
    for name, reason in skipped.items():
        if reason:
            print(f"(backend {name} not checked: {reason})")
    print(f"{'all passed' if not failed else f'{failed} FAILED'}")
    return 1 if failed else 0
