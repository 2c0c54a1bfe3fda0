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
from schedules.kernels import KERNELS, PREFILL
from tools import arguments

NAME = "build"
HELP = ("compile every kernel with its default schedule for GPU targets (no GPU needed); print registers, "
        "spills, shared memory")

REPORT_SHAPES = ("2,16384,16", "8,2048,16")
REPORT_COLUMNS = ("op", "target", "split", "B,T,H", "kernel", "programs", "GFLOP", "dot GFLOP", "MB moved",
                  "sequential steps", "dots/step", "MFLOP/step")
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
    parser.add_argument("--report", action="store_true",
                        help="compile nothing: print each launch's cost read off its IR (programs, GFLOP, "
                             "memory traffic, the sequential loop's steps and dots per step) per kernel, "
                             "target and split of the scan, at the --shape sizes (the prefill kernels unless --kernel "
                             "names a decode kernel; cache_read_step's data-dependent loop is not costed)")
    parser.add_argument("--shape", action="append", metavar="B,T,H",
                        help=f"with --report: batch, tokens, heads (repeatable; default "
                             f"{' and '.join(REPORT_SHAPES)}; K=V=128, W=64, C=256)")


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


def _report_rows(backend: str, kernels, names: list[str], config: Optional[dict], shapes,
                 dtype: str = "bfloat16") -> list[dict]:
    """One row per launch of each (kernel, target, split, shape): ``hola_dsl.cost`` figures at
    ``dtype`` inputs, under the schedule the backend's launcher would complete (``hola emit``'s
    ``schedule_for``). The scan is reported under every value of its ``split`` knob unless
    ``config`` fixes one, so the pipelines can be set side by side."""
    import torch

    import schedules
    from hola_dsl import cost
    from hola_dsl.emit import schedule_for
    from hola_dsl.kernels import spec as kernel_spec

    rows = []
    for kernel in kernels:
        space = schedules.space(kernel, backend)
        knobs = {k.name: k for k in space.knobs}
        splits = list(knobs["split"].choices) if "split" in knobs and "split" not in (config or {}) else [None]
        for target in names:
            for split in splits:
                sched = schedule_for(kernel, backend, target, {**(config or {}), **({"split": split} if split else {})},
                                     dtype=dtype)
                for B, T, H in shapes:
                    for c in cost.report(kernel_spec(kernel), sched, {}, getattr(torch, dtype), B, T, H):
                        rows.append({"op": kernel, "target": target, "split": sched.get("split", "-"),
                                     "B,T,H": f"{B},{T},{H}", "kernel": c.kernel, "programs": c.programs,
                                     "GFLOP": round(c.flops / 1e9, 2), "dot GFLOP": round(c.dot_flops / 1e9, 2),
                                     "MB moved": round(c.bytes / 1e6, 1), "sequential steps": c.sequential,
                                     "dots/step": c.dots_per_step, "MFLOP/step": round(c.step_flops / 1e6, 3)})
    return rows


def _print_report(rows: list[dict], as_json: bool, dtype: str = "bfloat16") -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))
        return
    print(f"Cost per launch, read off the traced IR (hola_dsl/cost.py): {dtype} inputs, K=V=128, W=64, C=256, "
          "default schedule per target; sequential steps = iterations walked in order by every program "
          "(0: parallel over the grid)")
    print("| " + " | ".join(REPORT_COLUMNS) + " |")
    print("| " + " | ".join("---" if c in ("op", "target", "split", "B,T,H", "kernel") else "---:"
                            for c in REPORT_COLUMNS) + " |")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in REPORT_COLUMNS) + " |")


def _shapes(texts: Optional[list[str]]) -> list[tuple[int, int, int]]:
    out = []
    for text in texts or REPORT_SHAPES:
        values = arguments.int_list(text, "--shape")
        if len(values) != 3:
            raise ValueError(f"--shape: expected B,T,H (three positive integers such as 2,16384,16), got {text!r}")
        out.append(tuple(values))
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    config = arguments.json_object(args.config)
    names = (targets.parse_list(args.targets, args.backend, gpu_only=True) if args.targets is not None
             else list(targets.DEFAULT_BUILD[args.backend]))
    if args.shape and not args.report:
        raise ValueError("--shape: only --report uses it (a build compiles for every shape)")
    if args.report:
        # The report's shapes are prefill shapes: the decode kernels only when named.
        rows = _report_rows(args.backend, args.kernel or PREFILL, names, config, _shapes(args.shape), args.dtype)
        _print_report(rows, args.json, args.dtype)
        return 0
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
