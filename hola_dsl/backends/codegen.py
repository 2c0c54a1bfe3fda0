"""Backend lowerings of the tile IR, one module per backend (op name -> lowering), and what they
share: source comments, and the one way a schedule value enters a generated source.

Generated sources are imported and run, so a schedule value (from a shared tuning record, a
``config=`` argument or a ``--config`` flag) must never become code. Every schedule has passed
``schedules.Space.check`` before it gets here; the helpers below check again, so that a value
that skipped that gate raises ``UncheckedValue`` instead of reaching a source: only ints,
finite floats and booleans pass, each as the type it is (True is not the int 1), plus the
lowercase identifiers that enum knobs such as ``dot_precision`` take (or several joined by "+",
as the scan's ``split`` names its phases).
"""

import linecache
import math
import os
import re
from typing import Any, Mapping

from schedules.space import shown

# An enum knob's value (such as "tf32", or "prepare+recur+output": identifiers joined by "+"),
# at most 32 characters: nothing in it can end a string or start a statement.
_SYMBOL = re.compile(r"(?=.{1,32}\Z)[a-z][a-z0-9_]*(?:\+[a-z][a-z0-9_]*)*")
# What a docstring may quote of a target name ("sm_90a", "cpu:AMD EPYC 9654 96-Core Processor"):
# no quote, backslash or line break, so the text cannot end the docstring.
_NOT_DOC_TEXT = re.compile(r"[^A-Za-z0-9 _.,:;@()+/=-]")


class UncheckedValue(ValueError):
    """A schedule value that is not a checked number, boolean or enum symbol reached a lowering."""


def source_comment(source: str, loc: str) -> str:
    """The comment a lowering writes above the code of kernel line ``loc`` ("file.py:LINE"):
    the location and, when it can be read, that line's text. ``loc`` names the kernel's
    ``source`` file or a helper module beside it (a function the kernel calls)."""
    name, _, line = loc.rpartition(":")
    path = os.path.join(os.path.dirname(source), name) if source else ""
    text = linecache.getline(path, int(line)).strip() if path else ""
    return f"# {loc}: {text}" if text else f"# {loc}"


def checked(value: Any, kinds: tuple = (int, float, bool), what: str = "schedule value") -> Any:
    """``value`` when its type is exactly one of ``kinds`` (a bool is not an int) and, for a
    float, it is finite; raises UncheckedValue naming ``what`` otherwise."""
    if type(value) in kinds and not (type(value) is float and not math.isfinite(value)):
        return value
    raise UncheckedValue(f"{what}: got {shown(value)} ({type(value).__name__}), expected "
                         f"{' or '.join(k.__name__ for k in kinds)} (schedules are checked before lowering)")


def literal(value: Any, kinds: tuple = (int, float, bool), what: str = "schedule value") -> str:
    """Python source for a checked number or boolean (``checked``)."""
    return repr(checked(value, kinds, what))


def symbol(value: Any, what: str = "schedule value") -> str:
    """An enum knob's value (a lowercase identifier such as "tf32", or identifiers joined by "+"
    such as "prepare+recur+output"), checked, as plain text."""
    if type(value) is str and _SYMBOL.fullmatch(value):
        return value
    raise UncheckedValue(f"{what}: got {shown(value)}, expected a lowercase identifier such as 'tf32'")


def doc_text(text: Any) -> str:
    """A target name as a generated docstring quotes it: characters that could end the docstring
    (or are not plain ASCII) become '?', and it is cut to 200 characters."""
    return _NOT_DOC_TEXT.sub("?", str(text))[:200]


def _items(schedule: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, value as source) of every entry, each name an identifier and each value checked."""
    out = []
    for name, value in schedule.items():
        if type(name) is not str or not name.isidentifier():
            raise UncheckedValue(f"schedule: knob name {shown(name)} is not an identifier")
        out.append((name, repr(symbol(value, name)) if type(value) is str else literal(value, what=name)))
    return out


def schedule_repr(schedule: Mapping[str, Any]) -> str:
    """What ``repr(schedule)`` gives for checked values: "{'BV': 64, 'dot_precision': 'tf32'}"."""
    return "{" + ", ".join(f"{name!r}: {text}" for name, text in _items(schedule)) + "}"


def schedule_kwargs(schedule: Mapping[str, Any]) -> str:
    """"BV=64, dot_precision='tf32'" (sorted by name) of checked values."""
    return ", ".join(f"{name}={text}" for name, text in sorted(_items(schedule)))
