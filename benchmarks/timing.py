"""How the CPU benchmarks time things: medians over repeats, and variants interleaved so that a
load that comes and goes on the machine falls on all of them alike. Imported by the benchmark
scripts of this folder (run as scripts, the folder is on sys.path)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

# "wall": elapsed seconds; "cpu": this process's CPU seconds, all its threads (with one thread on a
# loaded machine, about what the wall time would be without the other processes).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    return interleaved_medians({"fn": fn}, repeats)["fn"]


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, clock: str = "wall") -> dict[str, float]:
    """{name: median seconds of fn()} over ``repeats`` rounds that each run every fn once, in
    turn, after one warm-up round; ``clock`` names one of CLOCKS."""
    now = CLOCKS[clock]
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
    return {name: statistics.median(t) for name, t in times.items()}
