"""`hola tune`: Optuna search of one kernel's schedule on one backend and shape; the best config
goes to the tuning database, where `hola_dsl.ops`, `hola emit` and the model find it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

from hola_dsl import backends
from hola_dsl.testing import Shape
from schedules.kernels import WHOLE_SEQUENCE as KERNELS
from tools import arguments

NAME = "tune"
HELP = "tune a kernel's schedule for a backend and shape with Optuna and record the best in the tuning database"
DTYPES = ("float32", "bfloat16", "float16")
# Numeric flags: (attribute, flag, smallest legal value, whether that value itself is allowed).
_POSITIVE = (("trials", "--trials", 1, True), ("timeout", "--timeout", 0, False), ("finalists", "--finalists", 1, True),
             ("rounds", "--rounds", 1, True), ("patience", "--patience", 1, True), ("check_T", "--check-T", 1, True),
             ("compile_timeout", "--compile-timeout", 0, False), ("measure_seconds", "--measure-seconds", 0, False),
             ("max_spread", "--max-spread", 0, False))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from autotune.measure import MAX_SPREAD, REMEASURES
    parser.add_argument("--kernel", required=True, choices=KERNELS)
    parser.add_argument("--backend", required=True, help=f"backend name, one of {backends.names()}")
    parser.add_argument("--shape", type=Shape.parse, default=Shape(),
                        help="problem size, e.g. B=1,T=4096,H=4,K=128,V=128 (missing fields keep their defaults)")
    parser.add_argument("--dtype", default="float32",
                        help=f"input dtype, one of {list(DTYPES)}, that the backend runs on the device (default float32)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if the backend runs there, else cpu)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials for the whole study, all workers together (default: the whole space if small, else 40)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds of search for this worker")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage shared by workers: postgresql://..., sqlite:///..., or journal:PATH")
    parser.add_argument("--db", default=None, help="tuning database folder or .json file (default: $HOLA_TUNING_DB, "
                                                   "else ~/.cache/hola-dsl/tuning)")
    parser.add_argument("--force", action="store_true", help="tune even if the database has this exact key")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--finalists", type=int, default=3, help="best configs re-measured interleaved with the default")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved re-measure")
    parser.add_argument("--patience", type=int, default=None, help="early stop after this many trials without a 1%% gain")
    parser.add_argument("--check-T", type=int, default=None, help="sequence length of the correctness check (default 200)")
    parser.add_argument("--compile-timeout", type=float, default=120.0,
                        help="seconds allowed per candidate (compile, check and timing); past it the worker is killed")
    parser.add_argument("--measure-seconds", type=float, default=0.5,
                        help="seconds of timed calls per candidate and for the final re-measure (default 0.5)")
    parser.add_argument("--max-spread", type=float, default=MAX_SPREAD,
                        help=f"largest timing spread (interquartile range / median) of the winner and the default "
                             f"that is recorded; noisier final timings are re-measured up to {REMEASURES} more times, "
                             f"then the winner is printed but not recorded (default {MAX_SPREAD:g}; inf: never refuse)")
    parser.add_argument("--target", default=None, help="record under this target name (DEVICE/ISA, e.g. "
                                                       "nvidia-h100/sm_90) instead of this machine's")
    parser.add_argument("--plot", default=None, help="save the tuning history (time per trial, best so far) to this "
                                                     "file (.png, .svg, .pdf, ...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-isolate", action="store_true",
                        help="evaluate candidates in this process (faster start; a crashing candidate ends the "
                             "search and a hung compile is abandoned, not killed)")


def _check_numbers(args: argparse.Namespace) -> None:
    for attr, flag, lo, inclusive in _POSITIVE:
        value = getattr(args, attr)
        if value is None:
            continue
        ok = (value >= lo if inclusive else value > lo) and not (isinstance(value, float) and math.isnan(value))
        if not ok:
            bound = f">= {lo}" if inclusive else f"> {lo}"
            raise ValueError(f"{flag}: expected a number {bound}, got {value}")


def _device_type(args: argparse.Namespace, backend: backends.Backend) -> str:
    """The device type the tuner will run on (as ``autotune.tuner.tune`` picks it), checked."""
    import torch
    if args.device is None:
        return "cuda" if torch.cuda.is_available() and "cuda" in backend.devices else "cpu"
    device = torch.device(arguments.device(args.device))
    problem = backends.runs_on(backend.name, device.type)
    if problem:
        raise ValueError(f"--device: backend {backend.name!r} cannot run {args.device!r} tensors here: {problem}")
    return device.type


def _check_plot(path: Optional[str]) -> None:
    if path is None:
        return
    from matplotlib.backend_bases import FigureCanvasBase
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise ValueError(f"--plot: expected a file name ending in one of {sorted('.' + f for f in formats)}, got {path!r}")
    if not Path(path).resolve().parent.is_dir():
        raise ValueError(f"--plot: {Path(path).parent} is not a folder")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before the first trial, what cannot be tuned here: one ValueError naming the flag,
    what was given and what was expected."""
    import torch
    from schedules.targets import Target
    _check_numbers(args)
    if args.backend not in backends.names():
        raise ValueError(f"--backend: expected one of {backends.names()}, got {args.backend!r}")
    reason = backends.unavailable_reason(args.backend)
    if reason is not None:
        raise ValueError(f"--backend: {args.backend!r} cannot run here: {reason}")
    backend = backends.get(args.backend)
    device_type = _device_type(args, backend)
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype: expected one of {list(DTYPES)}, got {args.dtype!r}")
    problem = backend.dtype_problem(device_type, getattr(torch, args.dtype))
    if problem:
        raise ValueError(f"--dtype: {args.dtype!r} cannot run on backend {args.backend!r} ({device_type} tensors): {problem}")
    if args.target is not None:
        Target.parse(args.target, what="--target")
    _check_plot(args.plot)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from autotune.measure import MeasureSettings
    from autotune.tuner import TuneRequest, tune  # Optuna is imported only when tuning

    settings = MeasureSettings(target_s=args.measure_seconds)
    result = tune(TuneRequest(
        args.kernel, args.backend, args.shape, args.dtype, device=args.device, trials=args.trials,
        timeout=args.timeout, storage=args.storage, db_path=args.db, seed=args.seed, force=args.force,
        finalists=args.finalists, rounds=args.rounds, patience=args.patience, check_T=args.check_T,
        compile_timeout=args.compile_timeout, target=args.target, settings=settings,
        isolate=not args.no_isolate, max_spread=args.max_spread, progress=False if args.no_progress else None))
    if args.plot:
        if result.trials:
            from autotune.plot import plot_history
            try:
                print(f"plot saved to {plot_history(result.trials, args.plot, title=result.key.id)}")
            except OSError as exc:
                print(f"hola tune: --plot: could not save {args.plot}: {exc}")
        else:
            print("hola tune: nothing was tuned (record reused), so there is no history to plot")
    return 0 if result.reused or result.written_to is not None else 1
