"""`hola build`: ahead-of-time compile every kernel for GPU targets and print their resources."""

from __future__ import annotations

import argparse
import json

from hola_dsl import backends

NAME = "build"
HELP = "compile every kernel with its default schedule for GPU targets (no GPU needed); print registers, spills, shared memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="triton", choices=["triton"])
    parser.add_argument("--targets", default="sm_80,sm_90,sm_100,gfx942", help="comma-separated targets")
    parser.add_argument("--kernel", action="append", choices=backends.KERNELS, help="only this kernel (repeatable)")
    parser.add_argument("--config", default=None, help="schedule overrides as JSON (applied to every kernel)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    from hola_dsl import aot
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        aot.gpu_target(t)              # reject an unknown target before compiling anything
    config = json.loads(args.config) if args.config else None
    results = []
    for kernel in args.kernel or backends.KERNELS:
        for target in targets:
            r = aot.build(kernel, target, config)
            results.append(r)
            if args.json:
                print(json.dumps(r.__dict__, sort_keys=True), flush=True)
    if not args.json:
        print(f"AOT build, backend triton; static dims {aot.DEFAULT_DIMS}, bfloat16 inputs")
        print(aot.format_table(results))
    return 0 if all(r.ok for r in results) else 1
