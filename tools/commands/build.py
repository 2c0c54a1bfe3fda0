"""`hola build`: ahead-of-time compile every kernel for GPU targets and print their resources."""

from __future__ import annotations

import argparse
import json

from hola_dsl import backends

NAME = "build"
HELP = "compile every kernel with its default schedule for GPU targets (no GPU needed); print registers, spills, shared memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="triton", choices=["triton", "tilelang"],
                        help="triton, or tilelang (its CUDA dialect through nvcc, shown next to Triton's numbers)")
    parser.add_argument("--targets", default=None,
                        help="comma-separated targets (default sm_80,sm_90,sm_100,gfx942; tilelang: sm_80,sm_90a,sm_100a)")
    parser.add_argument("--kernel", action="append", choices=backends.KERNELS, help="only this kernel (repeatable)")
    parser.add_argument("--config", default=None, help="schedule overrides as JSON (applied to every kernel)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                        help="input dtype to specialise for (triton; default bfloat16)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    from hola_dsl import aot
    if args.backend == "tilelang":
        from hola_dsl import nvcc
        archs = [t.strip() for t in (args.targets or ",".join(nvcc.CROSS_ARCHS)).split(",") if t.strip()]
        return nvcc.report(args.kernel or backends.KERNELS, archs, json.loads(args.config) if args.config else None,
                           json_lines=args.json)
    targets = [t.strip() for t in (args.targets or "sm_80,sm_90,sm_100,gfx942").split(",") if t.strip()]
    for t in targets:
        aot.gpu_target(t)              # reject an unknown target before compiling anything
    config = json.loads(args.config) if args.config else None
    results = []
    for kernel in args.kernel or backends.KERNELS:
        for target in targets:
            for r in aot.build_pipeline(kernel, target, config, dtype=args.dtype):  # every phase of a split
                results.append(r)
                if args.json:
                    print(json.dumps(r.__dict__, sort_keys=True), flush=True)
    if not args.json:
        dims = ", ".join(f"{k}={v}" for k, v in aot.DEFAULT_DIMS.items() if k != "chunk_size")
        print(f"AOT build, backend triton, default schedule per target; static dims {dims}; {args.dtype} inputs")
        print(aot.format_table(results))
    return 0 if all(r.ok for r in results) else 1
