"""Command-line values several `hola` commands take, parsed and checked in one place.

Each function raises ValueError whose message starts with the flag, says what was given and
what was expected; `hola` prints it as one line. They run before any long work starts, so a
typo in an output path costs nothing. Heavy modules (torch) are imported only when needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


def json_object(text: Optional[str], flag: str = "--config") -> Optional[dict[str, Any]]:
    """The JSON object in ``text`` (None when not given)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: not valid JSON ({exc}): {text!r}; expected an object such as "
                         f"'{{\"BV\": 64}}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object such as '{{\"BV\": 64}}', got {type(value).__name__} {text!r}")
    return value


def at_least(values) -> None:
    """Raise for the first (flag, value, least) whose value is given and below ``least``."""
    for flag, value, least in values:
        if value is not None and value < least:
            raise ValueError(f"{flag}: expected an integer >= {least}, got {value}")


def as_flag(exc: ValueError, names) -> ValueError:
    """``exc`` reworded from "batch_size: ..." to "--batch-size: ..." when it opens with one of
    ``names`` (the model layer names its parameters, the user knows the flags); else ``exc``."""
    field, sep, rest = str(exc).partition(": ")
    if sep and field in set(names):
        return ValueError(f"--{field.replace('_', '-')}: {rest}")
    return exc


def positive(value: int, flag: str) -> int:
    """``value`` when it is >= 1."""
    if value < 1:
        raise ValueError(f"{flag}: expected a positive count, got {value}")
    return value


# torch.Generator.manual_seed takes 64-bit seeds; commands add small offsets per case.
MAX_SEED = 2**62


def seed(value: Optional[int], flag: str = "--seed") -> int:
    """``value`` if given (0 <= seed < 2**62), else a fresh random seed to print and reuse."""
    if value is None:
        import torch

        return int(torch.randint(0, 2**31 - 1, ()).item())
    if not 0 <= value < MAX_SEED:
        raise ValueError(f"{flag}: expected an integer from 0 to 2**62 - 1, got {value}")
    return value


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def set_threads(value: Optional[int], flag: str = "--threads") -> None:
    """Set torch's intra-op threads to ``value`` (None or 0: leave torch's default). More threads
    than CPUs only slow a run down, and OpenMP crashes on absurd counts, so those are refused."""
    if value is None or value == 0:
        return
    cpus = usable_cpus()
    if not 1 <= value <= cpus:
        raise ValueError(f"{flag}: expected 0 (torch's default) to {cpus} (the CPUs this process may use), "
                         f"got {value}")
    import torch

    torch.set_num_threads(value)


def device(text: Optional[str], flag: str = "--device") -> str:
    """A torch device string that exists here: ``text``, or (None) cuda when a GPU is present,
    else cpu."""
    import torch

    if text is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{flag}: {text!r} is not a torch device; expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{flag}: expected cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
                   else "no GPU is visible")
            raise ValueError(f"{flag}: {text!r} asked for, but {why}; expected cpu here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag}: {text!r} asked for, but there are {torch.cuda.device_count()} GPUs "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return str(dev)


def output_file(path: Optional[str], flag: str) -> Optional[Path]:
    """``path`` as a file this process can write (checked now by opening it for appending; a file
    that did not exist is removed again). None when not given."""
    if path is None:
        return None
    p = Path(path)
    if not path.strip():
        raise ValueError(f"{flag}: expected a file path, got an empty string")
    if p.is_dir():
        raise ValueError(f"{flag}: cannot write {path}: it is a directory; expected a file path")
    if not p.parent.is_dir():
        raise ValueError(f"{flag}: cannot write {path}: {p.parent} is not an existing directory")
    existed = p.exists()
    try:
        with open(p, "a"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write {path} ({exc.strerror})") from None
    if not existed:
        p.unlink()
    return p


def output_dir(path: Optional[str], flag: str) -> Optional[Path]:
    """``path`` as a directory this process can write into (created if missing). None when not
    given."""
    if path is None:
        return None
    p = Path(path)
    if not path.strip():
        raise ValueError(f"{flag}: expected a directory, got an empty string")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag}: {path} is a file; expected a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".hola-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write into {path} ({exc.strerror})") from None
    return p


def int_list(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers ("128,256")."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated positive integers such as 128,256, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag}: expected comma-separated positive integers such as 128,256, got {text!r}")
    return values


def physical_memory() -> Optional[int]:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def shape(text: str, flag: str = "--shape"):
    """The ``hola_dsl.testing.Shape`` in ``text``, refused when its inputs alone would not fit in
    this machine's memory (torch would fail deep inside an allocation)."""
    from hola_dsl.testing import Shape

    s = Shape.parse(text, flag)
    need, have = s.working_bytes(), physical_memory()
    if have is not None and need > have:
        raise ValueError(f"{flag}: {text} needs about {need / 2**30:.3g} GiB for its inputs, outputs and "
                         f"the float64 oracle; this machine has {have / 2**30:.3g} GiB")
    return s
