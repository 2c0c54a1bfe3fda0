"""Schedule spaces: the knobs a backend may choose for a kernel, their legal values, the
constraints per target, and the defaults. Algorithms never see these types; emitters and the
autotuner do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

# A constraint looks at a full config, the target name ("sm_90", "gfx942", "cpu", ...) and the
# static dims ({"K": 128, "V": 128, ...}); it returns None when legal, else a reason.
Constraint = Callable[[Mapping[str, Any], str, Mapping[str, int]], Optional[str]]


@dataclass(frozen=True)
class Knob:
    """One tunable choice with its legal values (powers of two, enum members, integers)."""

    name: str
    choices: tuple
    doc: str = ""

    def check(self, value: Any) -> Optional[str]:
        if value not in self.choices:
            return f"{self.name}: got {value!r}, expected one of {list(self.choices)}"
        return None


@dataclass(frozen=True)
class Space:
    """All knobs of (kernel, backend), with constraints and per-target defaults.

    ``defaults`` maps a target name, or a target family prefix such as "sm_" or "gfx", or "*"
    to a config; the most specific match wins. ``overlays`` are conditional defaults, in order:
    ``(when, table)`` lays ``table``'s match for the target (a partial config) over the default
    when every ``when`` entry holds, its keys being knobs (as the config given so far sets them)
    or "dtype" (the inputs' dtype name). A GPU default may need smaller tiles for float32 inputs
    (their operands take twice the registers), or other warps for another split. ``launch`` names settings a config may carry that
    are not knobs: the host applies them at launch, they change no generated code and are
    never tuned (a CPU thread count belongs to the machine, not to the shape).
    """

    kernel: str
    backend: str
    knobs: tuple[Knob, ...]
    defaults: Mapping[str, Mapping[str, Any]]
    constraints: tuple[Constraint, ...] = field(default=())
    launch: tuple[str, ...] = field(default=())
    overlays: tuple[tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], ...] = field(default=())

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(f"{self.kernel}/{self.backend}: no knob {name!r}; knobs are {[k.name for k in self.knobs]}")

    def default(self, target: str, dtype: Optional[str] = None) -> dict[str, Any]:
        """The default config for ``target`` (exact name, then longest matching prefix, then "*")
        and inputs of ``dtype``, overlays applied."""
        return self.complete(None, target, dtype)

    def violations(self, config: Mapping[str, Any], target: str, dims: Mapping[str, int]) -> list[str]:
        """Why ``config`` is illegal for ``target`` and ``dims`` (empty when legal)."""
        errors = [f"{name}: not a knob of {self.kernel}/{self.backend}" for name in config if
                  name not in {k.name for k in self.knobs} and name not in self.launch]
        for knob in self.knobs:
            if knob.name not in config:
                errors.append(f"{knob.name}: missing")
            else:
                reason = knob.check(config[knob.name])
                if reason:
                    errors.append(reason)
        if not errors:
            errors += [r for c in self.constraints if (r := c(config, target, dims))]
        return errors

    def complete(self, config: Optional[Mapping[str, Any]], target: str, dtype: Optional[str] = None) -> dict[str, Any]:
        """``config`` with missing knobs filled from the default for ``target`` and inputs of
        ``dtype`` (the overlays whose conditions ``config`` and the default meet)."""
        given = dict(config or {})
        out = _match(self.defaults, target)
        for when, table in self.overlays:
            facts = {**out, **given, "dtype": dtype}
            if all(facts.get(k) == v for k, v in when.items()):
                out.update(_match(table, target))
        out.update(given)
        return out

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


def float32_dot_precision(target: str) -> str:
    """The ``dot_precision`` float32 inputs need on ``target`` to meet SPEC's 1e-5 (plain TF32
    meets only the bf16 row): 3xTF32 tensor cores on NVIDIA; on AMD, Triton rejects tf32x3 on
    every target (and tf32 on gfx90a and gfx950), so FMA fp32 ("ieee"); "ieee" elsewhere."""
    return "tf32x3" if target.startswith("sm_") else "ieee"
