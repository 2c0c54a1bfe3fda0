"""The one adapter of every DSL backend (eager, Triton, TileLang) to the registry's ``Backend``.

A DSL backend says two things: how it completes a schedule for a kernel, a config and the
tensors' device and dtype (its space, its target, its own adjustments), and how it runs a
traced kernel under that schedule on that device (a ``hola_dsl.spec.Runner``). Everything
else is the same for every backend and every kernel: the kernel's spec plans the call and
the generic launcher runs it (``hola_dsl.spec.launch``).

A spec's ``caller_knobs`` (the scan's ``chunk_size``) are call options a schedule may also set:
where ``caller_wins(device)``, the caller's value stands unless a config sets the knob (the
schedule's default for it is dropped); elsewhere the completed schedule's value wins.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch

from hola_dsl import kernels, spec
from hola_dsl.backends import Backend

# (kernel, config, device, dtype of the first input) -> the completed schedule.
Scheduler = Callable[[str, Optional[Mapping[str, Any]], torch.device, torch.dtype], dict]
# (completed schedule, device) -> the runner of the traced kernels of one call.
RunnerFor = Callable[[Mapping[str, Any], torch.device], spec.Runner]


def _first_tensor(inputs) -> torch.Tensor:
    return next(x for x in inputs if isinstance(x, torch.Tensor))


def backend(name: str, description: str, *, schedule: Scheduler, runner: RunnerFor,
            caller_wins: Callable[[torch.device], bool] = lambda device: True,
            fast_runner: Optional[RunnerFor] = None, **properties: Any) -> Backend:
    """The ``Backend`` that runs every kernel spec with ``schedule`` and ``runner``;
    ``fast_runner``, when given, is what ``prepare`` hands out: a runner for callers that checked
    their arguments and launch many times (no per-call checks). ``properties`` are the other
    ``Backend`` fields (devices, unavailable, ...)."""

    def completed(kernel: str, config: Optional[Mapping[str, Any]], device: torch.device,
                  dtype: torch.dtype) -> dict:
        sched = schedule(kernel, config, device, dtype)
        if caller_wins(device):
            for knob in kernels.spec(kernel).caller_knobs:
                if not (config and knob in config):
                    sched.pop(knob, None)
        return sched

    def prepare(kernel: str, config: Optional[Mapping[str, Any]], device: torch.device,
                dtype: torch.dtype) -> tuple[dict, spec.Runner]:
        sched = completed(kernel, config, device, dtype)
        return sched, (fast_runner or runner)(sched, device)

    def run(kernel: str, *inputs: Any, config: Optional[Mapping[str, Any]] = None, **options: Any) -> Any:
        first = _first_tensor(inputs)
        kspec = kernels.spec(kernel)
        # A packed call (``offsets``) is scheduled as the form its plan runs (``packed_knobs``).
        sched = completed(kernel, spec.packed_config(kspec, config, options.get("offsets")), first.device, first.dtype)
        return spec.launch(kspec, runner(sched, first.device), sched, inputs, options)

    return Backend(name=name, description=description, run=run, prepare=prepare, dsl=True, **properties)
