"""`hola emit`: write the generated source of one kernel for one backend and target."""

from __future__ import annotations

import argparse
import json
import os

from hola_dsl import backends
from hola_dsl.emit import EMITTERS, emit_source
from hola_dsl.testing import Shape

NAME = "emit"
HELP = "write the generated source (or IR) of a kernel for a backend and target"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", required=True, choices=backends.KERNELS)
    parser.add_argument("--backend", default="triton", choices=sorted(EMITTERS))
    parser.add_argument("--target", default="sm_90", help="sm_80, sm_90, sm_100, gfx942, interpreter (default sm_90)")
    parser.add_argument("--config", default=None, help='schedule as JSON, e.g. \'{"BV": 64, "num_warps": 8}\'')
    parser.add_argument("--shape", default="K=128,V=128,W=64,C=256",
                        help="static dims to specialise for: K, V, W (cache capacity), C (cache block)")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", default=None, help="directory to write into (default: print to stdout)")


def run(args: argparse.Namespace) -> int:
    try:
        config = json.loads(args.config) if args.config else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config: not valid JSON ({exc}): {args.config!r}") from None
    shape = Shape.parse(args.shape)
    dims = {"K": shape.K, "V": shape.V, "W": shape.W, "C": shape.C}
    if config is None:  # a tuned schedule for this arch from the tuning database, else the default
        from autotune.query import lookup_for_arch
        record = lookup_for_arch(args.kernel, args.backend, args.target, args.dtype, dims)
        config = dict(record["config"]) if record else None
    name, text, sched = emit_source(args.kernel, args.backend, args.target, config, dims, args.dtype)
    if args.out is None:
        print(text, end="")
        return 0
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, name)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path} ({len(text.splitlines())} lines; schedule {json.dumps(sched, sort_keys=True)})")
    return 0
