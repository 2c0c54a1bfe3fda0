"""What a training run needs to continue exactly where it stopped (``hola train --resume``).

One file, train_state.pt, beside the checkpoint: the step, the weights, the optimizer's moments,
the batch generator's state, the history so far and the settings the run was started with. It
is written whole to a temporary name and then renamed, so a run killed while saving leaves the
previous state intact. It is read with ``torch.load(weights_only=True)`` (tensors and plain
containers only, no code) and checked field by field, since a file can come from anywhere.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "train_state.pt"
FORMAT = 1
# Settings a resumed run may change: where the kernels run does not change the curve beyond rounding.
FREE_SETTINGS = ("train.backend", "model.backend")


def save(directory: Path, state: dict) -> None:
    """Write ``state`` (step, model, optimizer, generator, history, settings) to directory/train_state.pt."""
    path = Path(directory) / STATE_FILE
    partial = path.with_name(path.name + ".partial")
    torch.save(dict(state, format=FORMAT), partial)
    os.replace(partial, path)


def load(directory: Path) -> dict:
    """The state saved in ``directory``, checked; raises ValueError naming what is wrong."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"resume: {path} does not exist; expected a folder written by `hola train` "
                         f"(its checkpoints hold train_state.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling a hostile or truncated file can raise nearly anything
        raise ValueError(f"resume: {path} is not a training state ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:100] if str(exc) else ''})") from None

    def bad(what: str) -> ValueError:
        return ValueError(f"resume: {path} is not a training state written by this version of `hola train` ({what})")

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise bad(f"format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
                  f"expected {FORMAT}")
    kinds = dict(step=int, model=dict, optimizer=dict, generator=torch.Tensor, history=dict, settings=dict)
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise bad(f"{key} missing or not a {kind.__name__}")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise bad("model weights that are not tensors")
    if not all(isinstance(v, dict) for v in state["settings"].values()):
        raise bad("settings that are not tables")
    history = state["history"]
    for curve in ("train", "validation"):
        points = history.get(curve)
        if not isinstance(points, list) or not all(_is_point(p) for p in points):
            raise bad(f"history.{curve} is not a list of [step, finite loss]")
    if not isinstance(history.get("seconds"), (int, float)) or not math.isfinite(history["seconds"]):
        raise bad("history.seconds is not a number")
    return state


def _is_point(point: Any) -> bool:
    return (isinstance(point, (list, tuple)) and len(point) == 2 and isinstance(point[0], int)
            and isinstance(point[1], (int, float)) and math.isfinite(point[1]))


def check_settings(saved: dict, current: dict, directory: Path) -> None:
    """Refuse to resume under settings other than the saved run's: the curve would not continue.
    Settings are {"train": {...}, "model": {...}, "data": {...}}."""
    for part in sorted(set(saved) | set(current)):
        old, new = saved.get(part, {}), current.get(part, {})
        for key in sorted(set(old) | set(new)):
            if f"{part}.{key}" in FREE_SETTINGS or old.get(key) == new.get(key):
                continue
            raise ValueError(f"resume: {directory} was trained with {part}.{key} = {old.get(key)!r}, this command "
                             f"gives {new.get(key)!r}; give the same settings to continue its curve")
