"""`hola emit`: write the generated source of one kernel for one backend and target (one source
per DSL kernel the kernel launches)."""

from __future__ import annotations

import argparse
import json

from hola_dsl.emit import EMITTERS, emit_sources
from hola_dsl.testing import Shape
from schedules import targets
from schedules.kernels import KERNELS
from tools import arguments

NAME = "emit"
HELP = "write the generated source (or IR) of a kernel for a backend and target"


def _target_help() -> str:
    per_backend = "; ".join(f"{b}: {', '.join(targets.for_backend(b))}" for b in sorted(EMITTERS))
    return f"code-generation target of the backend ({per_backend}; default sm_90)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", required=True, choices=KERNELS)
    parser.add_argument("--backend", default="triton", choices=sorted(EMITTERS))
    parser.add_argument("--target", default="sm_90", help=_target_help())
    parser.add_argument("--config", default=None, help='schedule as a JSON object, e.g. \'{"BV": 64, "num_warps": 8}\'')
    parser.add_argument("--shape", default="K=128,V=128,W=64,C=256",
                        help="static dims to specialise for: K, V, W (cache capacity), C (cache block), each >= 1")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", default=None, help="directory to write into (default: print to stdout)")


def run(args: argparse.Namespace) -> int:
    targets.check(args.backend, args.target, "--target")
    config = arguments.json_object(args.config)
    shape = Shape.parse(args.shape)
    out = arguments.output_dir(args.out, "--out")
    dims = {"K": shape.K, "V": shape.V, "W": shape.W, "C": shape.C}
    if config is None:  # a tuned schedule for this arch from the tuning database, else the default
        from schedules.lookup import lookup_for_arch
        record = lookup_for_arch(args.kernel, args.backend, args.target, args.dtype, dims)
        config = dict(record["config"]) if record else None
    sources, sched = emit_sources(args.kernel, args.backend, args.target, config, dims, args.dtype)
    for name, text in sources:
        if out is None:
            print(text, end="")
            continue
        path = out / name
        path.write_text(text)
        print(f"wrote {path} ({len(text.splitlines())} lines; schedule {json.dumps(sched, sort_keys=True)})")
    return 0
