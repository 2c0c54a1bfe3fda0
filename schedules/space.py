"""Schedule spaces: the knobs a backend may choose for a kernel, their legal values, the
constraints per target, and the defaults. Algorithms never see these types; emitters and the
autotuner do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

from schedules import targets

# A constraint looks at a full config, the target name ("sm_90", "gfx942", "cpu", ...) and the
# static dims ({"K": 128, "V": 128, ...}, possibly empty when the caller does not know them); it
# returns None when legal, else a reason that starts with the knob's name.
Constraint = Callable[[Mapping[str, Any], str, Mapping[str, int]], Optional[str]]


class ConfigError(ValueError):
    """A config its schedule space rejects. The message names the argument the config came in
    (``config``, ``--config``, a record), the knob, what was given and what was expected;
    ``knob`` is the first offending knob name (None when the config is not a dict at all)."""

    def __init__(self, message: str, knob: Optional[str] = None):
        super().__init__(message)
        self.knob = knob


def shown(value: Any, limit: int = 60) -> str:
    """repr(value) cut to ``limit`` characters: a hostile config must not flood a message (nor
    break it: an int too long to print, a value whose repr raises)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _type_note(value: Any, kinds: set) -> str:
    """" (bool)" when ``value`` has none of the expected types (True is not the int 1)."""
    return "" if type(value) in kinds else f" ({type(value).__name__})"


@dataclass(frozen=True)
class Knob:
    """One tunable choice with its legal values (powers of two, enum members, integers).

    A value is legal when it equals a choice *and* has that choice's type: JSON and Python
    both let True pass for 1, 64.0 for 64 and "64" reads like 64, and none of them is the
    int a generator expects."""

    name: str
    choices: tuple
    doc: str = ""

    def check(self, value: Any) -> Optional[str]:
        """None when ``value`` is legal, else "NAME: got VALUE, expected one of [...]"."""
        if any(type(value) is type(c) and value == c for c in self.choices):
            return None
        kinds = {type(c) for c in self.choices}
        note = _type_note(value, kinds)
        expected = f"one of {list(self.choices)}" + (f" ({'/'.join(sorted(k.__name__ for k in kinds))})" if note else "")
        return f"{self.name}: got {shown(value)}{note}, expected {expected}"


@dataclass(frozen=True)
class Setting:
    """A launch setting a config may carry beside the knobs: an int in [lo, hi] that the host
    applies when it launches a kernel. It changes no generated code and is never tuned."""

    name: str
    lo: int
    hi: int
    doc: str = ""

    def check(self, value: Any) -> Optional[str]:
        """None when ``value`` is an int (not a bool) in [lo, hi], else why not."""
        if type(value) is int and self.lo <= value <= self.hi:
            return None
        return (f"{self.name}: expected a positive int ({self.doc}, {self.lo} to {self.hi}), "
                f"got {shown(value)}{_type_note(value, {int})}")


def _label(name: Any) -> str:
    return name if isinstance(name, str) and name.isidentifier() else shown(name)


@dataclass(frozen=True)
class Space:
    """All knobs of (kernel, backend), with constraints and per-target defaults.

    ``defaults`` maps a target name, or a target family prefix such as "sm_" or "gfx", or "*"
    to a config; the most specific match wins. ``overlays`` are conditional defaults, in order:
    ``(when, table)`` lays ``table``'s match for the target (a partial config) over the default
    when every ``when`` entry holds, its keys being knobs (as the config given so far sets them)
    or "dtype" (the inputs' dtype name). A GPU default may need smaller tiles for float32 inputs
    (their operands take twice the registers), or other warps for another split. A config's own
    entries always win over defaults and overlays, and the completed config passes ``check``.
    ``launch`` lists the launch settings a config may carry that are not knobs (``Setting``):
    the host applies them at launch, they change no generated code and are never tuned (a CPU
    thread count belongs to the machine, not to the shape).
    """

    kernel: str
    backend: str
    knobs: tuple[Knob, ...]
    defaults: Mapping[str, Mapping[str, Any]]
    constraints: tuple[Constraint, ...] = field(default=())
    launch: tuple[Setting, ...] = field(default=())
    overlays: tuple[tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], ...] = field(default=())

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(f"{self.kernel}/{self.backend}: no knob {name!r}; knobs are {[k.name for k in self.knobs]}")

    def default(self, target: str, dtype: Optional[str] = None) -> dict[str, Any]:
        """The default config for ``target`` (exact name, then longest matching prefix, then "*")
        and inputs of ``dtype``, overlays applied."""
        return self._complete(None, target, dtype)

    def _problems(self, config: Mapping[str, Any], target: str, dims: Mapping[str, int]) -> list[tuple[Any, str]]:
        """(offending name or None, reason) for everything wrong with ``config``."""
        if not isinstance(config, Mapping):
            return [(None, f"expected a dict of knob values, got {shown(config)} ({type(config).__name__})")]
        rules = {k.name: k for k in self.knobs} | {s.name: s for s in self.launch}
        problems = []
        for name, value in config.items():
            rule = rules.get(name) if isinstance(name, str) else None
            if rule is None:
                extra = f"; launch settings: {[s.name for s in self.launch]}" if self.launch else ""
                problems.append((name, f"{_label(name)}: not a knob of {self.kernel}/{self.backend} "
                                       f"(knobs: {[k.name for k in self.knobs]}{extra})"))
            elif (reason := rule.check(value)) is not None:
                problems.append((name, reason))
        problems += [(k.name, f"{k.name}: missing") for k in self.knobs if k.name not in config]
        if not problems:
            for constraint in self.constraints:
                reason = constraint(config, target, dims)
                if reason:
                    problems.append((reason.split(":", 1)[0], reason))
        return problems

    def violations(self, config: Mapping[str, Any], target: str, dims: Mapping[str, int]) -> list[str]:
        """Why ``config`` (a complete one) is illegal for ``target`` and ``dims`` (empty when legal)."""
        return [reason for _, reason in self._problems(config, target, dims)]

    def _complete(self, config: Optional[Mapping[str, Any]], target: str, dtype: Optional[str]) -> dict[str, Any]:
        """``config`` with missing knobs filled from the default for ``target`` and inputs of
        ``dtype`` (the overlays whose conditions ``config`` and the default meet; a condition
        holds for a value of the same type only, as ``Knob.check`` asks). Unchecked: ``check``
        is the public way in."""
        given = dict(config or {})
        out = _match(self.defaults, target)
        for when, table in self.overlays:
            facts = {**out, **given, "dtype": dtype}
            if all(type(facts.get(k)) is type(v) and facts.get(k) == v for k, v in when.items()):
                out.update(_match(table, target))
        out.update(given)
        return out

    def check(self, config: Optional[Mapping[str, Any]], target: str, dims: Optional[Mapping[str, int]] = None,
              label: str = "config", dtype: Optional[str] = None) -> dict[str, Any]:
        """The one gate every config passes before anything uses it (docs/design.md): every
        name a knob or launch setting, every value of the right type and legal, the knobs
        missing from ``config`` filled from ``target``'s default for inputs of ``dtype`` (a
        dtype name such as "float32": the overlays that ask for it; None: none of them), then the
        constraints for ``target`` and ``dims``. Returns the completed config; raises ConfigError
        starting with ``label`` (the argument the config came in) and naming the knob otherwise."""
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"{label}: expected a dict of knob values or None, got {shown(config)} "
                              f"({type(config).__name__}) for {self.kernel} on {self.backend}")
        complete = self._complete(config, target, dtype)
        problems = self._problems(complete, target, dims or {})
        if problems:
            raise ConfigError(f"{label}: {'; '.join(r for _, r in problems)} "
                              f"({self.kernel} on {self.backend}, target {target})", knob=problems[0][0])
        return complete

    def legal(self, target: str, dims: Mapping[str, int]) -> Iterator[dict[str, Any]]:
        """Every legal config, in knob order (for exhaustive search of small spaces)."""
        names = [k.name for k in self.knobs]
        for values in itertools.product(*(k.choices for k in self.knobs)):
            config = dict(zip(names, values))
            if not self.violations(config, target, dims):
                yield config

    def size(self) -> int:
        n = 1
        for k in self.knobs:
            n *= len(k.choices)
        return n


def _match(table: Mapping[str, Mapping[str, Any]], target: str) -> dict[str, Any]:
    """``table``'s entry for ``target``: the exact name, else the longest matching prefix, else
    "*", else empty."""
    if target in table:
        return dict(table[target])
    prefixes = [p for p in table if p != "*" and target.startswith(p)]
    if prefixes:
        return dict(table[max(prefixes, key=len)])
    return dict(table.get("*", {}))


# Shared by the kernels whose Triton lowering has float32 dots.
DOT_PRECISION = Knob("dot_precision", ("ieee", "tf32x3", "tf32"),
                     "float32 dots: FMA fp32 (exact; slow, register-hungry on GPUs), 3xTF32 tensor cores "
                     "(near fp32), or plain TF32")


def dot_precision_accepted(config: Mapping[str, Any], target: str, dims: Mapping[str, int]) -> Optional[str]:
    """The constraint of every space with ``DOT_PRECISION``: a precision the target's compiler
    accepts (``schedules.targets.dot_precision_problem``)."""
    return targets.dot_precision_problem(target, config.get("dot_precision"))


def float32_dot_precision(target: str) -> str:
    """The ``dot_precision`` float32 inputs need on ``target`` to meet docs/tolerances.md's 1e-5 (plain TF32
    meets only the bf16 row): 3xTF32 tensor cores on NVIDIA; on AMD, Triton rejects tf32x3 on
    every target (and tf32 on gfx90a and gfx950), so FMA fp32 ("ieee"); "ieee" elsewhere."""
    return "tf32x3" if target.startswith("sm_") else "ieee"
