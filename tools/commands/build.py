"""`hola build`: ahead-of-time compile every kernel for GPU targets and print their resources, a
row per kernel the launcher runs (each phase of a split scan).

Each row is printed as soon as its build finishes (builds take seconds to tens of seconds); on a
terminal a progress bar on stderr says which build is running.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from hola_dsl import backends, targets
from tools import arguments

NAME = "build"
HELP = ("compile every kernel with its default schedule for GPU targets (no GPU needed); print registers, "
        "spills, shared memory")

COLUMNS = ("kernel", "backend", "target", "schedule", "registers", "spills", "shared (bytes)", "threads", "build (s)", "status")
NUMERIC = ("registers", "spills", "shared (bytes)", "threads", "build (s)")


def _targets_help() -> str:
    per_backend = "; ".join(f"{b}: {', '.join(targets.targets(b, gpu_only=True))}" for b in targets.DEFAULT_BUILD)
    defaults = "; ".join(f"{b}: {','.join(t)}" for b, t in targets.DEFAULT_BUILD.items())
    return f"comma-separated targets ({per_backend}); default {defaults}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="triton", choices=list(targets.DEFAULT_BUILD),
                        help="triton, or tilelang (its CUDA dialect through nvcc, shown next to Triton's numbers)")
    parser.add_argument("--targets", default=None, help=_targets_help())
    parser.add_argument("--kernel", action="append", choices=backends.KERNELS, help="only this kernel (repeatable)")
    parser.add_argument("--config", default=None, help="schedule overrides as a JSON object (applied to every kernel)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                        help="input dtype to specialise for (the defaults follow it, e.g. smaller scan tiles for "
                             "float32; default bfloat16)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _phases(backend: str, kernel: str, target: str, config: Optional[dict], dtype: str) -> list[Optional[str]]:
    """The ``phase`` of every kernel ``kernel`` runs under its ``backend`` schedule for ``target``
    (``aot.phases``: [None] for one kernel, the phases of a split scan); a config the space
    rejects raises ``schedules.ConfigError`` here, before any build."""
    from hola_dsl import aot
    if backend == "tilelang":
        from hola_dsl.tilelang_backend import schedule
        sched = schedule(kernel, config, target)
    else:
        sched = aot.default_schedule(kernel, target, config, dtype)
    return aot.phases(kernel, sched, None, dtype)


def _triton_part(kernel: str, config: Optional[dict]) -> Optional[dict]:
    """The entries of a TileLang ``config`` that are legal values of knobs of ``kernel``'s Triton
    space too (the split, tile sizes), so that the Triton row next to a TileLang one builds the
    same kernel; the rest (threads, the CPU dialect's knobs) does not apply to Triton."""
    import schedules
    space = schedules.space(kernel, "triton")
    knobs = {k.name: k for k in space.knobs}
    return {n: v for n, v in (config or {}).items() if n in knobs and knobs[n].check(v) is None} or None


def _plan(backend: str, kernels, names: list[str], config: Optional[dict],
          dtype: str) -> list[tuple[str, str, str, Optional[str], Optional[dict]]]:
    """(backend, kernel, target, phase, config) of every build: one per kernel the schedule runs
    (each phase of a split scan); a TileLang build is followed by Triton's of the same phase for
    the same GPU, for comparison (with ``_triton_part`` of the config)."""
    plan = []
    for kernel in kernels:
        for target in names:
            twin = targets.triton_twin(target) if backend == "tilelang" else None
            for phase in _phases(backend, kernel, target, config, dtype):
                plan.append((backend, kernel, target, phase, config))
                if twin:
                    plan.append(("triton", kernel, twin, phase, _triton_part(kernel, config)))
    return plan


def _build(backend: str, kernel: str, target: str, phase: Optional[str], config: Optional[dict], dtype: str):
    """One build's BuildResult (a failure is a row, not an exception)."""
    from hola_dsl import aot, nvcc

    if backend == "tilelang":
        r = nvcc.build(kernel, target, config, dtype=dtype, phase=phase)
    else:
        r = aot.build(kernel, target, config, dtype=dtype, phase=phase)
    r.extra["backend"] = backend
    return r


def _row(r) -> str:
    from hola_dsl import nvcc

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
    from hola_dsl import aot, nvcc

    dims = ", ".join(f"{k}={v}" for k, v in aot.DEFAULT_DIMS.items() if k != "chunk_size")
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
        from hola_dsl import nvcc
        if nvcc.find_nvcc() is None:
            print("hola build --backend tilelang: nvcc not found (set $NVCC or put nvcc on PATH); "
                  "skipping the TileLang CUDA builds")
            return 0
    plan = _plan(args.backend, args.kernel or backends.KERNELS, names, config, args.dtype)
    if not args.json:
        print("\n".join(_header(args.backend, args.dtype)), flush=True)
    failed = False
    # disable=None: a bar on a terminal only, so logs and pipes get the rows alone.
    with tqdm(total=len(plan), unit="build", disable=None, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        for backend, kernel, target, phase, build_config in plan:
            bar.set_description(f"{backend} {phase or kernel} {target}")
            r = _build(backend, kernel, target, phase, build_config, args.dtype)
            bar.write(json.dumps(r.__dict__, sort_keys=True, default=str) if args.json else _row(r), file=sys.stdout)
            sys.stdout.flush()
            bar.update()
            # The Triton rows next to TileLang's are for comparison; they decide nothing.
            failed |= backend == args.backend and (not r.ok or bool(r.extra.get("sync_problems")))
    return 1 if failed else 0
