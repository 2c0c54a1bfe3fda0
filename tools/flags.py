"""Flag values of `hola train` and `hola eval` checked before any work starts, and errors from
the layers below said with the flag the user typed."""

from __future__ import annotations

from typing import Iterable, Optional


def at_least(values: Iterable[tuple[str, Optional[int], int]]) -> None:
    """Raise for the first (flag, value, least) whose value is given and below ``least``."""
    for flag, value, least in values:
        if value is not None and value < least:
            raise ValueError(f"{flag}: expected an integer >= {least}, got {value}")


def as_flag(exc: ValueError, names: Iterable[str]) -> ValueError:
    """``exc`` reworded from "batch_size: ..." to "--batch-size: ..." when it opens with one of
    ``names`` (the model layer names its parameters, the user knows the flags); else ``exc``."""
    field, sep, rest = str(exc).partition(": ")
    if sep and field in set(names):
        return ValueError(f"--{field.replace('_', '-')}: {rest}")
    return exc


def set_threads(value: int, flag: str = "--threads") -> None:
    """Give torch ``value`` CPU threads (0: leave its default). More than this process may use only
    slows a run down, and OpenMP segfaults on absurd counts, so those are refused."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not 0 <= value <= cpus:
        raise ValueError(f"{flag}: expected 0 (torch's default) to {cpus} (the CPUs this process may use), got {value}")
    if value:
        import torch

        torch.set_num_threads(value)
