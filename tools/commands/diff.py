"""`hola diff`: one kernel on one backend against the float64 oracle, error per output."""

from __future__ import annotations

import argparse
import os

import torch

from hola_dsl import backends
from hola_dsl.testing import SCAN_CASES, SELECTIONS, TOLERANCE, run_check
from schedules.kernels import WHOLE_SEQUENCE as KERNELS
from tools import arguments

NAME = "diff"
HELP = "run a kernel and the float64 oracle on fresh random inputs; print errors; fail outside tolerance"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", required=True, choices=KERNELS)
    parser.add_argument("--backend", default="eager", help=f"one of {backends.names()} (default eager)")
    parser.add_argument("--shape", default="B=2,T=300,H=2,K=32,V=48",
                        help="B,T,H,K,V and W (cache capacity), C (cache block), each >= 1, "
                             "e.g. B=1,T=300,H=2,K=32,V=48")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--case", default="random", choices=SCAN_CASES, help="delta_scan input family")
    parser.add_argument("--policy", default="hola", choices=["hola", "recency"], help="cache policy")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--config", default=None, help="schedule as a JSON object")
    parser.add_argument("--seed", type=int, default=None, help="input seed (default: a fresh one)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    if args.backend not in backends.names():
        raise ValueError(f"--backend: expected one of {backends.names()}, got {args.backend!r}")
    shape = arguments.shape(args.shape)
    config = arguments.json_object(args.config)
    device = arguments.device(args.device)
    if args.backend == "triton" and torch.device(device).type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        os.environ["TRITON_INTERPRET"] = "1"   # before any generated kernel is created
        print("hola diff: no GPU tensors; running Triton in its CPU interpreter (TRITON_INTERPRET=1)")
    seed = arguments.seed(args.seed)
    dtype = DTYPES[args.dtype]
    r = run_check(args.kernel, args.backend, shape, dtype, seed=seed, case=args.case,
                  policy=args.policy, chunk_size=args.chunk_size, config=config, device=device)
    tol = 0.0 if args.kernel in SELECTIONS else TOLERANCE[dtype]
    print(f"hola diff: {args.kernel} on {args.backend} ({device}), {shape}, {args.dtype}, seed {seed}, "
          f"{r.seconds * 1e3:.1f} ms")
    measure = "mismatched entries" if args.kernel in SELECTIONS else "relative error"
    print(f"{'output':<12} {'max abs':>12} {measure:>20} {'tolerance':>10}  result")
    for name in r.errors:
        ok = r.errors[name] <= tol
        print(f"{name:<12} {r.max_abs[name]:>12.3g} {r.errors[name]:>20.3g} {tol:>10.1g}  {'PASS' if ok else 'FAIL'}")
    return 0 if r.worst <= tol else 1
