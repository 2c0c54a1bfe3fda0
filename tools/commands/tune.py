"""`hola tune`: Optuna search of one kernel's schedule on one backend and shape; the best config
goes to the tuning database, where `hola_dsl.ops`, `hola emit` and the model find it."""

from __future__ import annotations

import argparse

from hola_dsl import backends
from hola_dsl.testing import Shape

NAME = "tune"
HELP = "tune a kernel's schedule for a backend and shape with Optuna and record the best in the tuning database"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from autotune.measure import MAX_SPREAD, REMEASURES
    parser.add_argument("--kernel", required=True, choices=backends.KERNELS)
    parser.add_argument("--backend", required=True, help="backend name, e.g. tilelang, triton, reference")
    parser.add_argument("--shape", type=Shape.parse, default=Shape(),
                        help="problem size, e.g. B=1,T=4096,H=4,K=128,V=128 (missing fields keep their defaults)")
    parser.add_argument("--dtype", default="float32", help="input dtype (float32, bfloat16, float16)")
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
    parser.add_argument("--target", default=None, help="record under this target name instead of this machine's")
    parser.add_argument("--plot", default=None, help="save the tuning history (time per trial, best so far) to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-isolate", action="store_true",
                        help="evaluate candidates in this process (faster start; a crashing candidate ends the "
                             "search and a hung compile is abandoned, not killed)")


def run(args: argparse.Namespace) -> int:
    from autotune.tuner import tune  # Optuna is imported only when tuning

    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials: expected a positive int, got {args.trials}")
    if not args.max_spread > 0:
        raise ValueError(f"--max-spread: expected a number > 0, got {args.max_spread}")
    from autotune.measure import MeasureSettings

    settings = MeasureSettings(target_s=args.measure_seconds)
    result = tune(args.kernel, args.backend, args.shape, args.dtype, device=args.device, trials=args.trials,
                  timeout=args.timeout, storage=args.storage, db_path=args.db, seed=args.seed, force=args.force,
                  finalists=args.finalists, rounds=args.rounds, patience=args.patience, check_T=args.check_T,
                  compile_timeout=args.compile_timeout, target=args.target, settings=settings,
                  isolate=not args.no_isolate, max_spread=args.max_spread,
                  progress=False if args.no_progress else None)
    if args.plot:
        if result.trials:
            from autotune.plot import plot_history
            print(f"plot saved to {plot_history(result.trials, args.plot, title=result.key.id)}")
        else:
            print("hola tune: nothing was tuned (record reused), so there is no history to plot")
    return 0 if result.reused or result.written_to is not None else 1
