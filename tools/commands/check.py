"""`hola check`: every kernel on every backend available here against the float64 oracle.

Which backends run, and on which device, is decided in one place (``plan``) whether they were
named with --backend or not: a named backend that cannot run here is refused with the reason a
plain `hola check` gives for skipping it.
"""

from __future__ import annotations

import argparse
from typing import Optional

import torch

from hola_dsl import backends
from hola_dsl.testing import READ_CASES, SCAN_CASES, SELECTIONS, TOLERANCE, Shape, run_check
from schedules import has_space, targets
from schedules.kernels import KERNELS, WHOLE_SEQUENCE
from tools import arguments

NAME = "check"
HELP = "run every kernel on every available backend against the float64 oracle and print a table"

# Inputs per kernel: several shapes (T not a multiple of the chunk or block, K != V) and the
# hard cases of docs/tolerances.md.
SHAPES = (Shape(B=2, T=1, H=2, K=32, V=48, W=8, C=64), Shape(B=2, T=300, H=2, K=32, V=48, W=16, C=128))
# CPU first: the oracle is there, and every backend but Triton without its interpreter runs there.
DEVICE_ORDER = ("cpu", "cuda")


def _cases(kernel: str):
    for shape in SHAPES:
        if kernel in ("delta_scan", "delta_scan_backward"):
            for case in SCAN_CASES:
                yield shape, dict(case=case)
        elif kernel == "cache_read_backward":
            for case in READ_CASES:
                yield shape, dict(case=case)
        elif kernel == "lola_select":   # integer inputs with ties (testing.lola_inputs)
            yield shape, {}
        else:
            for policy in ("hola", "recency"):
                yield shape, dict(policy=policy)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", action="append",
                        help=f"check only this backend (repeatable; one of {backends.names()}); "
                             f"default: all that run here")
    parser.add_argument("--kernel", action="append", choices=WHOLE_SEQUENCE, help="check only this kernel (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="input seed (default: a fresh one each run)")
    parser.add_argument("--dtype", default="float32", choices=[str(d).removeprefix("torch.") for d in TOLERANCE],
                        help="input dtype (default float32, tolerance 1e-5; bfloat16 and float16: 5e-3); a "
                             "backend that does not compute it on its device is skipped, saying why")
    parser.add_argument("--device", default=None, choices=DEVICE_ORDER,
                        help="check every backend on this device type only (default: each on the first of "
                             f"{', '.join(DEVICE_ORDER)} it runs on here)")
    parser.add_argument("--no-nvcc", action="store_true",
                        help=f"skip the TileLang CUDA-dialect nvcc build ({targets.CHECK_NVCC_ARCH})")


def device_for(name: str, dtype: torch.dtype = torch.float32,
               devices: tuple[str, ...] = DEVICE_ORDER) -> tuple[Optional[str], Optional[str]]:
    """(device type to check backend ``name`` on here for inputs of ``dtype``, None), or (None,
    why it cannot run here), trying ``devices`` in order."""
    reasons = {}
    for device_type in devices:
        reasons[device_type] = backends.runs_on(name, device_type) or backends.get(name).dtype_problem(device_type, dtype)
        if reasons[device_type] is None:
            return device_type, None
    return None, reasons[devices[0]]


def plan(requested: Optional[list[str]], dtype: torch.dtype = torch.float32,
         devices: tuple[str, ...] = DEVICE_ORDER) -> tuple[dict[str, str], dict[str, str]]:
    """({backend: device type} to check, {backend: why not} skipped) for inputs of ``dtype`` on
    ``devices``. Named backends that are unknown or cannot run here are errors naming --backend."""
    checked, skipped = {}, {}
    for name in requested or backends.names():
        if name not in backends.names():
            raise ValueError(f"--backend: unknown backend {name!r}; expected one of {backends.names()}")
        device, reason = device_for(name, dtype, devices)
        if device is None and requested:
            raise ValueError(f"--backend: {name} cannot run here: {reason}")
        if device is None:
            skipped[name] = reason
        else:
            checked[name] = device
    return checked, skipped


def run(args: argparse.Namespace) -> int:
    seed = arguments.seed(args.seed)
    dtype = getattr(torch, args.dtype)
    checked, skipped = plan(args.backend, dtype, (args.device,) if args.device else DEVICE_ORDER)
    print(f"hola check: {args.dtype} inputs, seed {seed}; tolerance: relative error <= {TOLERANCE[dtype]:g}, "
          f"selection exact")
    header = f"{'kernel':<13} {'backend':<10} {'worst error':>12} {'result':>6} {'time':>10}"
    print(header)
    print("-" * len(header))
    failed = 0
    for kernel in args.kernel or WHOLE_SEQUENCE:
        for name, device in checked.items():
            if not has_space(kernel, name):     # e.g. the reference's backward is torch autograd
                continue
            worst, seconds, ok, note = 0.0, 0.0, True, ""
            try:
                for i, (shape, kw) in enumerate(_cases(kernel)):
                    r = run_check(kernel, name, shape, dtype, seed=seed + i, device=device, **kw)
                    worst, seconds, ok = max(worst, r.worst), seconds + r.seconds, ok and r.ok
            except Exception as exc:  # a crashing backend is a failed row, not a crashed check
                ok, note = False, f"  {type(exc).__name__}: {exc}"
            failed += not ok
            unit = "mismatches" if kernel in SELECTIONS else ""
            where = "" if device == "cpu" else f" ({device})"
            print(f"{kernel:<13} {name + where:<10} {worst:>12.3g} {'PASS' if ok else 'FAIL':>6} "
                  f"{seconds * 1e3:>8.1f}ms {unit}{note}")
    if "tilelang" in checked and not args.no_nvcc:
        from hola_dsl.backends.tilelang import nvcc
        failed += nvcc.check_rows(targets.CHECK_NVCC_ARCH, args.kernel or KERNELS)
    for name, reason in skipped.items():
        print(f"(backend {name} not checked: {reason})")
    if not checked:
        print(f"nothing checked: no backend runs {args.dtype} inputs on {args.device or 'any device'} here")
        return 1
    print(f"{'all passed' if not failed else f'{failed} FAILED'}")
    return 1 if failed else 0
