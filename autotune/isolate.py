"""Candidates evaluated in a worker process, so that a compile that hangs is killed at its time
limit and a kernel that takes the process down (a segfault in generated C, a lost CUDA context)
is one failed trial instead of the end of the search. The worker is restarted after a loss.

The worker builds its evaluator from a factory named "module:function" (importable in a fresh
interpreter: multiprocessing's spawn start method hands it the parent's sys.path).
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
from typing import Any, Optional, Sequence

from autotune.evaluate import FAILED, KernelEvaluator, Outcome
from autotune.measure import MeasureSettings, Timing
from autotune.runner import Runner
from hola_dsl.testing import Shape

START_TIMEOUT = 300.0     # seconds for a fresh worker to import torch and build its evaluator


class WorkerLost(RuntimeError):
    """The worker died or ran past its time limit (it has been killed)."""


def _serve(conn, factory: str, args: tuple, kwargs: dict) -> None:
    module, _, name = factory.partition(":")
    evaluator = getattr(importlib.import_module(module), name)(*args, **kwargs)
    conn.send(("ready", evaluator.device))
    while True:
        op, *payload = conn.recv()
        if op == "stop":
            return
        try:
            conn.send(("ok", getattr(evaluator, op)(*payload)))
        except Exception as exc:  # reported to the parent, the worker stays up
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def kernel_evaluator(kernel: str, backend: str, shape: dict, dtype: str, device: str, check_T: Optional[int],
                     settings: dict):
    """Factory for the worker: a ``KernelEvaluator`` of a real kernel (no thread timeout inside:
    the parent's kill is the timeout)."""
    return KernelEvaluator(Runner(kernel, backend, Shape(**shape), dtype, device, check_T),
                           MeasureSettings(**settings), compile_timeout=None)


class IsolatedEvaluator:
    """An ``Evaluator`` whose ``evaluate`` runs in a worker process with ``timeout`` seconds per
    candidate (compile, check and timing together)."""

    def __init__(self, factory: str, *args: Any, timeout: Optional[float] = 120.0,
                 remeasure_timeout: float = 1800.0, device: str = "cpu", **kwargs: Any):
        self.factory, self.args, self.kwargs = factory, args, kwargs
        self.timeout, self.remeasure_timeout, self.device = timeout, remeasure_timeout, device
        self._ctx = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.factory, self.args, self.kwargs),
                                       daemon=True, name="hola-tune-worker")
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(START_TIMEOUT):
            self._kill()
            raise RuntimeError(f"tuning worker did not start within {START_TIMEOUT:g}s")
        try:
            tag, device = parent.recv()
        except EOFError:
            code = self._proc.exitcode if self._proc.join(5) is None else None
            raise RuntimeError(f"tuning worker failed to start (exit code {code}); run with --no-isolate to see why")
        self.device = device

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)
        self._proc = self._conn = None

    def _call(self, timeout: Optional[float], op: str, *payload: Any) -> Any:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((op, *payload))
        if not self._conn.poll(timeout):
            self._kill()
            self.restarts += 1
            raise WorkerLost(f"timeout: no result within {timeout:g}s (compile, check and timing); worker killed")
        try:
            tag, value = self._conn.recv()
        except (EOFError, ConnectionError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._proc = self._conn = None
            self.restarts += 1
            raise WorkerLost(f"crash: the worker process died (exit code {code}) running this config")
        if tag == "error":
            raise RuntimeError(value)
        return value

    def evaluate(self, config: dict, seed: int) -> Outcome:
        try:
            return self._call(self.timeout, "evaluate", dict(config), seed)
        except (WorkerLost, RuntimeError) as exc:
            return Outcome(FAILED, error=str(exc))

    def remeasure(self, configs: Sequence[dict], rounds: int) -> list[Timing]:
        return self._call(self.remeasure_timeout, "remeasure", [dict(c) for c in configs], rounds)

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("stop",))
                self._proc.join(10)
            except (OSError, ValueError):
                pass
        self._kill()


def for_kernel(kernel: str, backend: str, shape: Any, dtype: str, device: str, check_T: Optional[int],
               settings: MeasureSettings, timeout: Optional[float]) -> IsolatedEvaluator:
    """An isolated evaluator of a real kernel (``shape`` a hola_dsl.testing.Shape)."""
    return IsolatedEvaluator("autotune.isolate:kernel_evaluator", kernel, backend, dataclasses.asdict(shape),
                             str(dtype).removeprefix("torch."), device, check_T, dataclasses.asdict(settings),
                             timeout=timeout, device="cuda" if str(device).startswith("cuda") else "cpu")
