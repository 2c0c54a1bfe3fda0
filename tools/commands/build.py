"""`hola build`: ahead-of-time compile every kernel for GPU targets and print their resources, a
row per DSL kernel the launcher runs (each phase of a split scan, with its own warps).

Each row is printed as soon as its build finishes (builds take seconds to tens of seconds); on a
terminal a progress bar on stderr says which build is running.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import schedules
from schedules import targets
from schedules.kernels import KERNELS
from tools import arguments

NAME = "build"
HELP = ("compile every kernel with its default schedule for GPU targets (no GPU needed); print registers, "
        "spills, shared memory")

COLUMNS = ("kernel", "backend", "target", "schedule", "registers", "spills", "shared (bytes)", "threads", "build (s)", "status")
NUMERIC = ("registers", "spills", "shared (bytes)", "threads", "build (s)")


def _targets_help() -> str:
    per_backend = "; ".join(f"{b}: {', '.join(targets.for_backend(b, gpu_only=True))}" for b in targets.DEFAULT_BUILD)
    defaults = "; ".join(f"{b}: {','.join(t)}" for b, t in targets.DEFAULT_BUILD.items())
    return f"comma-separated targets ({per_backend}); default {defaults}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="triton", choices=list(targets.DEFAULT_BUILD),
                        help="triton, or tilelang (its CUDA dialect through nvcc, shown next to Triton's numbers)")
    parser.add_argument("--targets", default=None, help=_targets_help())
    parser.add_argument("--kernel", action="append", choices=KERNELS, help="only this kernel (repeatable)")
    parser.add_argument("--config", default=None, help="schedule overrides as a JSON object (applied to every kernel)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                        help="input dtype to specialise for (the defaults follow it, e.g. smaller scan tiles for "
                             "float32; default bfloat16)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _triton_part(kernel: str, config: Optional[dict]) -> Optional[dict]:
    """The entries of a TileLang ``config`` that are legal values of knobs of ``kernel``'s Triton
    space too (the split, tile sizes), so that the Triton rows next to TileLang's build the same
    kernels; the rest (threads, the CPU dialect's knobs) does not apply to Triton."""
    knobs = {k.name: k for k in schedules.space(kernel, "triton").knobs}
    return {n: v for n, v in (config or {}).items() if n in knobs and knobs[n].check(v) is None} or None


def _plan(backend: str, kernels, names: list[str],
          config: Optional[dict]) -> list[tuple[str, str, str, Optional[dict]]]:
    """(backend, kernel, target, config) of every build; a TileLang build is followed by Triton's
    for the same GPU, for comparison (with ``_triton_part`` of the config)."""
    plan = []
    for kernel in kernels:
        for target in names:
            plan.append((backend, kernel, target, config))
            twin = targets.triton_twin(target) if backend == "tilelang" else None
            if twin:
                plan.append(("triton", kernel, twin, _triton_part(kernel, config)))
    return plan


def _build(backend: str, kernel: str, target: str, config: Optional[dict], dtype: str) -> list:
    """One build's rows, a BuildResult per DSL kernel (a failure is a row, not an exception)."""
    from hola_dsl.backends.tilelang import nvcc
    from hola_dsl.backends.triton import aot

    build = nvcc.build if backend == "tilelang" else aot.build
    rows = build(kernel, target, config, dtype=dtype)
    for r in rows:
        r.extra["backend"] = backend
    return rows


def _row(r) -> str:
    from hola_dsl.backends.tilelang import nvcc

    fmt = lambda x: "-" if x is None else str(x)
    warp = 64 if r.target.startswith("gfx") else 32
    threads = r.extra.get("threads") or (warp * r.schedule["num_warps"] if "num_warps" in r.schedule else None)
    status = ("ok (cached)" if r.extra.get("cached") else "ok") if r.ok else f"FAILED: {r.error}"
    if r.ok and r.extra.get("sync_problems"):
        status = f"SYNC: {nvcc.sync_summary(r.extra['sync_problems'])}"
    schedule = " ".join(f"{k}={v}" for k, v in sorted(r.schedule.items()))
    cells = (r.kernel, r.extra["backend"], r.target, schedule, fmt(r.registers), fmt(r.spills), fmt(r.shared), fmt(threads),
             f"{r.seconds:.1f}", status)
    return "| " + " | ".join(cells) + " |"


def _header(backend: str, dtype: str) -> list[str]:
    from hola_dsl.backends.tilelang import nvcc
    from hola_dsl.spec import DEFAULT_DIMS

    dims = ", ".join(f"{k}={v}" for k, v in DEFAULT_DIMS.items() if k != "chunk_size")
    what = ("AOT build, backend triton" if backend == "triton" else
            f"Cross build, TileLang CUDA dialect (nvcc {nvcc.nvcc_version()}) next to Triton AOT")
    return [f"{what}, default schedule per target and dtype; static dims {dims}; {dtype} inputs; shared = static + dynamic bytes",
            "| " + " | ".join(COLUMNS) + " |",
            "| " + " | ".join("---:" if c in NUMERIC else "---" for c in COLUMNS) + " |"]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    config = arguments.json_object(args.config)
    names = (targets.parse_list(args.targets, args.backend, gpu_only=True) if args.targets is not None
             else list(targets.DEFAULT_BUILD[args.backend]))
    if args.backend == "tilelang":
        from hola_dsl.backends.tilelang import nvcc
        if nvcc.find_nvcc() is None:
            print("hola build --backend tilelang: nvcc not found (set $NVCC or put nvcc on PATH); "
                  "skipping the TileLang CUDA builds")
            return 0
    plan = _plan(args.backend, args.kernel or KERNELS, names, config)
    if not args.json:
        print("\n".join(_header(args.backend, args.dtype)), flush=True)
    failed = False
    # disable=None: a bar on a terminal only, so logs and pipes get the rows alone.
    with tqdm(total=len(plan), unit="build", disable=None, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        for backend, kernel, target, build_config in plan:
            bar.set_description(f"{backend} {kernel} {target}")
            for r in _build(backend, kernel, target, build_config, args.dtype):
                bar.write(json.dumps(r.__dict__, sort_keys=True, default=str) if args.json else _row(r), file=sys.stdout)
                sys.stdout.flush()
                # The Triton rows next to TileLang's are for comparison; they decide nothing.
                failed |= backend == args.backend and (not r.ok or bool(r.extra.get("sync_problems")))
            bar.update()
    return 1 if failed else 0
