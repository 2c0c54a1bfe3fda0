"""Runs one kernel of one backend with a given schedule: the correctness gate on fresh inputs
against the float64 oracle, and a callable to time on fixed inputs of the tuning shape.

The check goes through the public API (``hola_dsl.testing.run_check`` -> ``hola_dsl.ops``).
The timed call goes to the registered backend that ``ops`` dispatches to, with the same
normalised arguments (``hola_dsl.testing.backend_call``), so input validation (host syncs on a
GPU) is not part of the number.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Optional

import torch

from hola_dsl import backends
from hola_dsl.testing import Result, Shape, backend_call, run_check
from schedules import kernels

# The float64 oracle runs token by token; a check at the full tuning length would cost more than
# the tuning. A check at this length keeps every static dim and dtype, a partial last chunk and
# several cache blocks. ``check_T`` overrides it.
DEFAULT_CHECK_T = 200


class CompileTimeout(RuntimeError):
    """A candidate whose first call (compilation included) ran past the limit."""


def call_with_timeout(fn: Callable[[], Any], seconds: Optional[float]) -> Any:
    """``fn()``, or CompileTimeout after ``seconds``. The call runs in a daemon thread that cannot
    be killed: a timed-out compile keeps a core busy until it ends, which is reported, not hidden."""
    if not seconds:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="hola-tune-candidate")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CompileTimeout(f"first call (compile + correctness check) took longer than {seconds:g}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _dtype(name: Any) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype: expected a torch dtype name such as float32 or bfloat16, got {name!r}")
    return dtype


class Runner:
    """(kernel, backend, shape, dtype, device) with any config: ``check(config, seed)`` and
    ``timed(config)``."""

    def __init__(self, kernel: str, backend: str, shape: Shape, dtype: Any = torch.float32,
                 device: str = "cpu", check_T: Optional[int] = None, policy: str = "hola"):
        self.kernel, self.backend, self.shape = kernels.check(kernel), backend, shape
        self.dtype, self.device, self.policy = _dtype(dtype), str(device), policy
        self.check_shape = dataclasses.replace(shape, T=min(shape.T, check_T or DEFAULT_CHECK_T))
        self.impl = backends.resolve(backend, torch.device(device).type)
        self._call: Optional[tuple[tuple, dict]] = None

    def check(self, config: dict, seed: int) -> Result:
        """The kernel with ``config`` against the float64 oracle on fresh inputs drawn from ``seed``."""
        return run_check(self.kernel, self.backend, self.check_shape, self.dtype, seed=seed,
                         policy=self.policy, config=dict(config), device=self.device)

    def timed(self, config: dict) -> Callable[[], Any]:
        """A no-argument call of the backend on fixed inputs of the tuning shape with ``config``."""
        if self._call is None:
            self._call = backend_call(self.kernel, self.shape, self.dtype, seed=12345, policy=self.policy,
                                      device=self.device)
        (inputs, options), run, config = self._call, self.impl.run, dict(config)
        return lambda: run(self.kernel, *inputs, config=config, **options)
