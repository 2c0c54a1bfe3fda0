"""Evaluation of one candidate schedule: compile (with a time limit), the correctness gate, then
the measurement. Every failure becomes an ``Outcome`` with a status, never an exception, so a
bad config is a recorded failure and the search goes on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from autotune.measure import MeasureSettings, Timing, interleaved, measure
from autotune.runner import CompileTimeout, Runner, call_with_timeout

# Outcome.status values; "illegal" is decided by the tuner from the schedule space.
OK, FAILED, WRONG, ILLEGAL = "ok", "failed", "wrong", "illegal"


@dataclass
class Outcome:
    """What one candidate did: status (ok, failed, wrong, illegal), seconds per call when ok,
    the correctness check's worst relative error, and a one-line error when not ok."""

    status: str
    time_s: Optional[float] = None
    spread: Optional[float] = None
    check_error: Optional[float] = None
    error: str = ""


class Evaluator(Protocol):
    """What the tuner needs from whatever runs candidates (a real kernel, or recorded timings)."""

    device: str

    def evaluate(self, config: dict, seed: int) -> Outcome:
        ...

    def remeasure(self, configs: Sequence[dict], rounds: int) -> list[Timing]:
        ...


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class KernelEvaluator:
    """Evaluates schedules of a real kernel through a ``Runner``."""

    def __init__(self, runner: Runner, settings: MeasureSettings = MeasureSettings(),
                 compile_timeout: Optional[float] = 120.0):
        self.runner, self.settings, self.compile_timeout = runner, settings, compile_timeout
        self.device = "cuda" if runner.device.startswith("cuda") else "cpu"

    def evaluate(self, config: dict, seed: int) -> Outcome:
        try:
            result = call_with_timeout(lambda: self.runner.check(config, seed), self.compile_timeout)
        except CompileTimeout as exc:
            return Outcome(FAILED, error=f"timeout: {exc}")
        except Exception as exc:  # a config the backend rejects or cannot compile
            return Outcome(FAILED, error=f"compile/run: {_one_line(exc)}")
        if not result.ok:
            worst = max(result.errors, key=result.errors.get)
            return Outcome(WRONG, check_error=result.worst,
                           error=f"wrong result: {worst} relative error {result.worst:.3g} > tolerance {result.tolerance:g}")
        try:
            timing = measure(self.runner.timed(config), self.device, self.settings)
        except Exception as exc:
            return Outcome(FAILED, error=f"timing run: {_one_line(exc)}")
        return Outcome(OK, timing.median, timing.spread, result.worst)

    def remeasure(self, configs: Sequence[dict], rounds: int) -> list[Timing]:
        return interleaved([self.runner.timed(c) for c in configs], self.device, rounds, self.settings)
