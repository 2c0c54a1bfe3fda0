"""The tile IR: what a traced kernel is, independent of any backend.

A :class:`Kernel` is a flat list of :class:`Param` (tensors, runtime sizes, runtime scalars), a
grid, and a body :class:`Block` of :class:`Op` nodes in SSA form. Every tile has a fully static
shape (a tuple of ints) and a dtype; scalars are tiles of shape ``()``. Runtime lengths (B, T, H,
entries in use) are scalar values, never tile shapes.

Node types
----------
``TileType(shape, dtype)``   shape: tuple[int, ...] (``()`` = scalar), dtype: one of DTYPES.
``TensorType(dims, dtype)``  a global tensor parameter: dims are names ("B", "T", ...); each is
                             either a runtime size (a SIZE param) or a compile-time constant.
``Value``                    an SSA value: id, type, and a readable name hint.
``Op``                       name, operands (``args``: Values), ``attrs`` (plain Python data),
                             ``results`` (Values), ``regions`` (Blocks, only for ``loop``) and
                             ``loc`` ("file.py:LINE" of the kernel source that made it).
``Block``                    ``args`` (Values bound on entry), ``ops``, ``yields`` (Values).
``Param``                    kind "in" / "out" (TensorType), "size" (int32 scalar), "scalar".

Contiguous row-major layout is implied for every tensor; strides follow from the dims.

The op list, with shape rules and eager meanings, lives in :mod:`hola_dsl.registry` (one entry
per op); backends lower ops by name (see ``hola_dsl/backends/``). ``format_kernel`` prints the IR
as text; its hash keys the generated-source cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

DTYPES = ("float16", "bfloat16", "float32", "float64", "int1", "int32", "int64")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int32", "int64")


@dataclass(frozen=True)
class TileType:
    """A tile of static ``shape`` (``()`` for a scalar) and element ``dtype``."""

    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class TensorType:
    """A global tensor: named ``dims`` (runtime sizes or constants) and element ``dtype``."""

    dims: tuple[str, ...]
    dtype: str

    def __str__(self) -> str:
        return f"tensor<{self.dtype}>[{', '.join(self.dims)}]"


Type = Union[TileType, TensorType]


@dataclass(eq=False)
class Value:
    """An SSA value. Identity is the object; ``id`` is unique within a kernel."""

    id: int
    type: Type
    hint: str = ""

    @property
    def name(self) -> str:
        return f"{self.hint or 'v'}{self.id}"

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Block:
    """A sequence of ops with entry arguments and yielded values (a loop body or the kernel)."""

    args: list[Value] = field(default_factory=list)
    ops: list["Op"] = field(default_factory=list)
    yields: list[Value] = field(default_factory=list)


@dataclass(eq=False)
class Op:
    """One operation: ``results = name(args; attrs) { regions }`` at kernel source ``loc``."""

    name: str
    args: list[Value]
    attrs: dict[str, Any]
    results: list[Value]
    loc: str = ""
    regions: list[Block] = field(default_factory=list)

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"op {self.name} has {len(self.results)} results, not one")
        return self.results[0]


@dataclass(eq=False)
class Param:
    """A kernel parameter: a tensor ("in"/"out"), a runtime size ("size") or a runtime scalar."""

    name: str
    kind: str                 # "in" | "out" | "size" | "scalar"
    value: Value


@dataclass(eq=False)
class Kernel:
    """A traced kernel: parameters, compile-time constants, grid extents and body.

    ``grid`` holds one scalar Value per grid axis; they are computed from size params and
    constants only, so a host can evaluate them with :func:`eval_scalar`. ``consts`` records the
    compile-time constants the kernel was specialised for (dims such as K, tile sizes, flags).
    """

    name: str
    params: list[Param]
    consts: dict[str, Any]
    grid: list[Value]
    body: Block
    source: str = ""          # path of the kernel's Python source

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"kernel {self.name}: no parameter {name!r}")

    def tensors(self) -> list[Param]:
        return [p for p in self.params if p.kind in ("in", "out")]

    def sizes(self) -> list[Param]:
        return [p for p in self.params if p.kind == "size"]

    def sizes_of(self, args: Mapping[str, Any]) -> dict[str, int]:
        """Runtime sizes read off the tensor arguments ({param: tensor}); checks the constant
        dims and that every size is the same wherever it occurs."""
        sizes: dict[str, int] = {}
        for p in self.tensors():
            x = args[p.name]
            dims = p.value.type.dims
            if x.dim() != len(dims):
                raise ValueError(f"{self.name}: argument {p.name} has rank {x.dim()}, expected {len(dims)} {dims}")
            for d, n in zip(dims, x.shape):
                expected = self.consts.get(d, sizes.get(d))
                if expected is not None and expected != n:
                    raise ValueError(f"{self.name}: argument {p.name} dim {d} is {n}, expected {expected}")
                if d not in self.consts:
                    sizes[d] = int(n)
        return sizes

    def grid_extents(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Evaluate the grid for runtime ``sizes`` ({"B": 2, "T": 300, ...})."""
        env = {p.value: int(sizes[p.name]) for p in self.sizes()}
        defs = {r: op for op in self.body.ops for r in op.results}
        return tuple(int(eval_scalar(v, env, defs)) for v in self.grid)

    def text(self) -> str:
        return format_kernel(self)

    def hash(self) -> str:
        """Stable hash of the IR text (names, types, ops, attrs, constants; not source lines)."""
        return hashlib.sha256(format_kernel(self, locs=False).encode()).hexdigest()[:16]


# Scalar integer arithmetic a host may evaluate (grid extents).
HOST_SCALAR = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b,
    "maximum": max, "minimum": min, "cdiv": lambda a, b: -(-a // b),
}


def eval_scalar(v: Value, env: dict, defs: dict) -> int:
    """Evaluate an integer scalar built from size params, constants and +-*//% cdiv max min."""
    if v in env:
        return env[v]
    op = defs.get(v)
    if op is None:
        raise ValueError(f"grid extent {v.name} depends on something a host cannot evaluate")
    if op.name == "const":
        return op.attrs["value"]
    if op.name in HOST_SCALAR:
        a, b = (eval_scalar(x, env, defs) for x in op.args)
        return HOST_SCALAR[op.name](a, b)
    raise ValueError(f"grid extent {v.name} uses op {op.name} ({op.loc}); only size arithmetic is allowed")


_HOST_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "floordiv": "//", "mod": "%"}


def scalar_text(v: Value, kernel: "Kernel") -> str:
    """A host-evaluable scalar (a grid extent) as an expression, e.g. ``cdiv(T, 64) * 2``."""
    sizes = {p.value: p.name for p in kernel.sizes()}
    defs = {r: op for op in kernel.body.ops for r in op.results}

    def text(x: Value) -> str:
        if x in sizes:
            return sizes[x]
        op = defs.get(x)
        if op is None:
            return f"%{x.name}"
        if op.name == "const":
            return repr(op.attrs["value"])
        a, b = (text(y) for y in op.args)
        if op.name in _HOST_SYMBOL:
            return f"({a} {_HOST_SYMBOL[op.name]} {b})"
        return f"{op.name}({a}, {b})"
    return text(v)


def _attrs_text(attrs: dict) -> str:
    return ", ".join(f"{k}={attrs[k]!r}" for k in sorted(attrs))


def _block_text(block: Block, indent: str, locs: bool, out: list[str]) -> None:
    for op in block.ops:
        res = ", ".join(f"%{r.name}: {r.type}" for r in op.results)
        head = f"{res} = " if res else ""
        args = ", ".join(f"%{a.name}" for a in op.args)
        attrs = _attrs_text(op.attrs)
        line = f"{indent}{head}{op.name}({args}{'; ' + attrs if attrs else ''})"
        if locs and op.loc:
            line += f"    # {op.loc}"
        out.append(line)
        for region in op.regions:
            out.append(f"{indent}  ^({', '.join(f'%{a.name}' for a in region.args)}):")
            _block_text(region, indent + "    ", locs, out)
            out.append(f"{indent}    yield({', '.join(f'%{y.name}' for y in region.yields)})")


def format_kernel(kernel: Kernel, locs: bool = True) -> str:
    """The IR as text, one op per line (the form ``hola emit --backend ir`` prints)."""
    out = [f"kernel {kernel.name}("]
    for p in kernel.params:
        out.append(f"    {p.kind} %{p.value.name}: {p.value.type},")
    out.append(f") consts {{{_attrs_text(kernel.consts)}}}")
    out.append(f"  grid({', '.join('%' + g.name for g in kernel.grid)})")
    _block_text(kernel.body, "  ", locs, out)
    return "\n".join(out) + "\n"


def walk(block: Block):
    """Every op of ``block`` and its nested regions, in program order."""
    for op in block.ops:
        yield op
        for region in op.regions:
            yield from walk(region)


def find_op(kernel: Kernel, name: str) -> Optional[Op]:
    return next((op for op in walk(kernel.body) if op.name == name), None)
