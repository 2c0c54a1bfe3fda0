"""Replay of recorded timings instead of running kernels (as Kernel Tuner's simulation mode
does): tests the tuner's search, bookkeeping and selection without hardware, deterministically."""

from __future__ import annotations

import json
import random
from typing import Mapping, Optional, Sequence, Union

from autotune.evaluate import FAILED, OK, WRONG, Outcome
from autotune.measure import Timing


def config_id(config: Mapping) -> str:
    """A canonical string for a config (sorted JSON)."""
    return json.dumps(dict(config), sort_keys=True)


class ReplayEvaluator:
    """``table`` maps config_id(config) -> seconds per call, or "fail" / "wrong". Each measurement
    returns the recorded time times (1 + noise * u) with u uniform in [-1, 1] from a seeded
    generator. ``calls`` counts evaluations, so tests can see what was (not) re-run."""

    device = "replay"

    def __init__(self, table: Mapping[str, Union[float, str]], noise: float = 0.0, seed: int = 0):
        self.table, self.noise, self.rng = dict(table), noise, random.Random(seed)
        self.calls: list[dict] = []

    def _time(self, config: Mapping) -> Optional[Union[float, str]]:
        return self.table.get(config_id(config))

    def _sample(self, t: float) -> float:
        return t * (1 + self.noise * self.rng.uniform(-1, 1))

    def evaluate(self, config: dict, seed: int) -> Outcome:
        self.calls.append(dict(config))
        t = self._time(config)
        if t is None or t == "fail":
            return Outcome(FAILED, error="compile/run: replayed failure" if t else "compile/run: no recorded timing")
        if t == "wrong":
            return Outcome(WRONG, check_error=1.0, error="wrong result: replayed")
        return Outcome(OK, self._sample(float(t)), 0.0, 0.0)

    def remeasure(self, configs: Sequence[dict], rounds: int) -> list[Timing]:
        return [Timing([self._sample(float(self._time(c))) for _ in range(max(rounds, 1))]) for c in configs]
