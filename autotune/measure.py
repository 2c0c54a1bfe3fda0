"""Timing of one kernel call: warm-up, then repeats, the median kept.

GPU: CUDA events around each call (device time, no host overhead in the number); CPU: the
monotonic ``time.perf_counter_ns`` around each call. Finalists are re-measured interleaved
(round-robin, rotated each round) so that slow drift of the machine, other processes, clocks
or thermals, hits every candidate alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

# A timing is trusted for a record when the middle half of its samples lies within this fraction
# of the median (``Timing.spread``): a quiet machine gives a few percent, a busy one 18-33%
# (medians quantised to scheduler ticks). ``hola tune`` re-measures noisier final timings up to
# REMEASURES more times, then does not write the record (`hola tune --max-spread`).
MAX_SPREAD = 0.10
REMEASURES = 2


@dataclass
class Timing:
    """Seconds per call: ``median`` over ``samples``; ``spread`` is the interquartile range
    divided by the median (0.05 = the middle half of the samples lies within 5%)."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("inf")

    @property
    def spread(self) -> float:
        if len(self.samples) < 4:
            return (max(self.samples) - min(self.samples)) / self.median if len(self.samples) > 1 else 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return (q3 - q1) / self.median

    def to_json(self) -> dict:
        return {"median_s": self.median, "spread": self.spread, "min_s": min(self.samples),
                "max_s": max(self.samples), "n": len(self.samples)}


@dataclass(frozen=True)
class MeasureSettings:
    """warmup_calls and at least warmup_s of calls before timing; then repeats sized so that the
    timed calls take about target_s, clamped to [min_repeats, max_repeats]."""

    warmup_calls: int = 2
    warmup_s: float = 0.05
    target_s: float = 0.5
    min_repeats: int = 5
    max_repeats: int = 200
    flush_l2_bytes: int = 256 << 20   # GPU: overwritten before each timed call (0: keep the cache warm)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


_flush_buffers: dict[int, torch.Tensor] = {}


def time_calls(fn: Callable[[], Any], n: int, device: str, flush_l2_bytes: int = 0) -> list[float]:
    """Seconds of each of ``n`` calls of ``fn``. On a GPU, a buffer of ``flush_l2_bytes`` is
    overwritten before each call (outside the timed events) so that no call finds its inputs
    left in L2 by the previous one, as a real model step would not."""
    out = []
    if device == "cuda":
        flush = None
        if flush_l2_bytes:
            flush = _flush_buffers.get(flush_l2_bytes)
            if flush is None:
                flush = _flush_buffers[flush_l2_bytes] = torch.empty(flush_l2_bytes // 4, dtype=torch.int32, device="cuda")
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        torch.cuda.synchronize()
        for s, e in zip(starts, ends):
            if flush is not None:
                flush.zero_()
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) * 1e-9)
    return out


def warm_up(fn: Callable[[], Any], device: str, settings: MeasureSettings) -> float:
    """Run ``fn`` until warm; return the last call's seconds (an estimate for sizing repeats)."""
    t_end = time.perf_counter() + settings.warmup_s
    calls, last = 0, 0.0
    while calls < settings.warmup_calls or time.perf_counter() < t_end:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        last = time.perf_counter() - t0
        calls += 1
        if calls >= settings.warmup_calls and last > settings.warmup_s:
            break
    return last


def measure(fn: Callable[[], Any], device: str, settings: MeasureSettings = MeasureSettings()) -> Timing:
    """Warm up, then time enough repeats of ``fn`` (see MeasureSettings)."""
    estimate = max(warm_up(fn, device, settings), 1e-7)
    n = int(min(settings.max_repeats, max(settings.min_repeats, settings.target_s / estimate)))
    return Timing(time_calls(fn, n, device, settings.flush_l2_bytes))


def interleaved(fns: Sequence[Callable[[], Any]], device: str, rounds: int = 5,
                settings: MeasureSettings = MeasureSettings()) -> list[Timing]:
    """Re-measure several candidates round-robin: each round times every candidate for about
    target_s / rounds, the order rotating each round; returns one Timing per candidate with the
    samples of all rounds."""
    if not fns:
        return []
    estimates = [max(warm_up(fn, device, settings), 1e-7) for fn in fns]
    per_round = [int(min(settings.max_repeats, max(2, settings.target_s / rounds / est))) for est in estimates]
    timings = [Timing() for _ in fns]
    for r in range(rounds):
        order = list(range(len(fns)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            timings[i].samples += time_calls(fns[i], per_round[i], device, settings.flush_l2_bytes)
    return timings
