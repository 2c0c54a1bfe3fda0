"""What the two TileLang dialects share: turning IR values into TileLang expressions.

Both dialects keep every tile in a buffer the program owns (a C local array on the CPU, a
register fragment on the GPU) and compute element by element. Elementwise ops, broadcasts,
transposes, ``iota`` and ``full`` are *lazy*: they become an expression over index variables
that is inlined where it is consumed, so a chain like ``exp(where(c, a - b, -inf))`` costs one
pass instead of four. A lazy value is written to a buffer ("materialised") only when it is
worth it: it is used more than once, it is used inside a loop it was not defined in, or its
consumer needs memory (a dot operand, a loop-carried value).

Each lazy value knows which buffers its expression reads (``reads``), so a loop can tell
whether writing one carried buffer would change another carried value's expression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from hola_dsl import ir
from hola_dsl.backends.codegen import source_comment

# Bump when generated code changes meaning or speed; it is part of the source-cache key.
EMITTER_VERSION = "11"


class EmitError(ValueError):
    """The IR cannot be lowered to this TileLang dialect (names the op and its kernel line)."""


BUF_DTYPE = {"int1": "bool"}          # TileLang's name for an element type, where it differs


def buf_dtype(dtype: str) -> str:
    return BUF_DTYPE.get(dtype, dtype)


def literal(value, dtype: str) -> str:
    """A TileLang scalar literal of ``dtype``."""
    if dtype in ir.FLOAT_DTYPES:
        value = float(value)
        if math.isinf(value):
            return f'T.infinity("{dtype}")' if value > 0 else f'-T.infinity("{dtype}")'
        if math.isnan(value):
            return f'T.Cast("{dtype}", T.float32(float("nan")))'
        return f"T.{dtype}({value!r})"
    if dtype == "int1":
        return "T.bool(True)" if value else "T.bool(False)"
    return f"T.{dtype}({int(value)})"


def identity_of(reduce: str, dtype: str) -> str:
    """The neutral element of a sum/max/min reduction, as a literal."""
    if reduce == "sum":
        return literal(0, dtype)
    if dtype in ir.FLOAT_DTYPES:
        return literal(-math.inf if reduce == "max" else math.inf, dtype)
    bits = 31 if dtype == "int32" else 63
    return literal(-(2 ** bits) if reduce == "max" else 2 ** bits - 1, dtype)


# Elementwise ops as TileLang expression templates over their operands' expressions.
UNARY: dict[str, Callable[[str], str]] = {
    "neg": lambda a: f"(-{a})",
    "exp": lambda a: f"T.exp({a})",
    "exp2": lambda a: f"T.exp2({a})",
    "log": lambda a: f"T.log({a})",
    "sqrt": lambda a: f"T.sqrt({a})",
    "rsqrt": lambda a: f"T.rsqrt({a})",
    "sigmoid": lambda a: f"T.sigmoid({a})",
    "abs": lambda a: f"T.abs({a})",
    "not": lambda a: f"T.Not({a})",
}
BINARY: dict[str, Callable[[str, str], str]] = {
    "add": lambda a, b: f"({a} + {b})",
    "sub": lambda a, b: f"({a} - {b})",
    "mul": lambda a, b: f"({a} * {b})",
    "div": lambda a, b: f"({a} / {b})",
    # Integer arithmetic in the DSL is on non-negative values, where truncating and flooring
    # division agree; truncation keeps the generated C free of sign fix-ups.
    "floordiv": lambda a, b: f"T.truncdiv({a}, {b})",
    "mod": lambda a, b: f"T.truncmod({a}, {b})",
    "cdiv": lambda a, b: f"T.truncdiv({a} + {b} - 1, {b})",
    "maximum": lambda a, b: f"T.max({a}, {b})",
    "minimum": lambda a, b: f"T.min({a}, {b})",
    "lt": lambda a, b: f"({a} < {b})",
    "le": lambda a, b: f"({a} <= {b})",
    "gt": lambda a, b: f"({a} > {b})",
    "ge": lambda a, b: f"({a} >= {b})",
    "eq": lambda a, b: f"({a} == {b})",
    "ne": lambda a, b: f"({a} != {b})",
    "and": lambda a, b: f"T.And({a}, {b})",
    "or": lambda a, b: f"T.Or({a}, {b})",
}
# A value used twice by one elementwise op (``x * x``) is inlined twice when its expression has
# at most this many ops, rather than written to a buffer.
SQUARE_INLINE_COST = 2
# Ops whose expression costs nothing worth caching (index arithmetic, views, constants).
_FREE = {"expand_dims", "broadcast_to", "trans", "iota", "full", "const"}


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass
class Repr:
    """How a value is reached from generated code.

    ``at(idx)`` gives the expression of the element at index expressions ``idx`` (one per dim
    of the value; none for a scalar). ``buffer`` is set when the value lives in a buffer of its
    own shape, read as ``buffer[idx]``. ``cost`` counts non-free ops inlined in the expression;
    ``reads`` names the buffers it reads.
    """

    shape: tuple
    dtype: str
    at: Callable[[Sequence[str]], str]
    cost: int = 0
    reads: frozenset = field(default_factory=frozenset)
    buffer: Optional[str] = None


def buffer_repr(name: str, shape: tuple, dtype: str) -> Repr:
    if shape == ():
        return Repr((), dtype, lambda idx: f"{name}[0]", 0, frozenset({name}), name)
    return Repr(shape, dtype, lambda idx: f"{name}[{', '.join(idx)}]", 0, frozenset({name}), name)


def scalar_repr(text: str, dtype: str, reads=frozenset(), cost: int = 0) -> Repr:
    return Repr((), dtype, lambda idx: text, cost, frozenset(reads))


def broadcast_index(src_shape: tuple, out_shape: tuple, idx: Sequence[str]) -> list[str]:
    """Index into a value of ``src_shape`` broadcast to ``out_shape`` (numpy rules)."""
    lead = len(out_shape) - len(src_shape)
    return ["0" if s == 1 and out_shape[lead + d] != 1 else idx[lead + d] for d, s in enumerate(src_shape)]


def use_counts(kernel: ir.Kernel) -> tuple[dict, dict]:
    """(number of uses of each value, the innermost loop body that defines each value)."""
    uses: dict[ir.Value, int] = {}
    home: dict[ir.Value, int] = {}

    def visit(block: ir.Block, depth_id: int) -> None:
        for a in block.args:
            home[a] = depth_id
        for op in block.ops:
            for a in op.args:
                uses[a] = uses.get(a, 0) + 1
            for r in op.results:
                home[r] = depth_id
            for region in op.regions:
                visit(region, id(region))
        for y in block.yields:
            uses[y] = uses.get(y, 0) + 1
    visit(kernel.body, 0)
    return uses, home


def loop_reads_home(kernel: ir.Kernel) -> dict:
    """value -> set of loop-body ids in which the value is used (for hoisting decisions)."""
    where: dict[ir.Value, set] = {}

    def visit(block: ir.Block, bid: int) -> None:
        for op in block.ops:
            for a in op.args:
                where.setdefault(a, set()).add(bid)
            for region in op.regions:
                visit(region, id(region))
        for y in block.yields:
            where.setdefault(y, set()).add(bid)
    visit(kernel.body, 0)
    return where


class BaseEmitter:
    """The dialect-independent walk over a kernel; subclasses supply the statements."""

    DIALECT = ""        # "cpu" or "cuda"

    def __init__(self, kernel: ir.Kernel, schedule: dict, target: str):
        self.kernel = kernel
        self.schedule = dict(schedule)
        self.target = target
        self.reprs: dict[ir.Value, Repr] = {}
        self.lines: list[str] = []
        self.allocs: list[str] = []
        self.indent = " " * 12
        self.counter = 0
        self.last_loc = None
        self.uses, self.home = use_counts(kernel)
        self.used_in = loop_reads_home(kernel)
        self.block_id = 0
        self.size_var = {p.name: f"n_{p.name}" for p in kernel.sizes()}
        self.scratch_pool: dict = {}
        self.users: dict[ir.Value, list] = {}
        for op in ir.walk(kernel.body):
            for a in op.args:
                self.users.setdefault(a, []).append(op)

    # ------------------------------------------------------------ small helpers
    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def push(self) -> None:
        self.indent += "    "

    def pop(self) -> None:
        self.indent = self.indent[:-4]

    def fail(self, op: ir.Op, msg: str) -> EmitError:
        return EmitError(f"{op.loc}: cannot lower {op.name} to the TileLang {self.DIALECT} dialect: {msg}")

    def loc_comment(self, op: ir.Op) -> None:
        if not op.loc or op.loc == self.last_loc:
            return
        self.last_loc = op.loc
        self.line(source_comment(self.kernel.source, op.loc))

    def dim_expr(self, d: str) -> str:
        return str(self.kernel.consts[d]) if d in self.kernel.consts else self.size_var[d]

    def value_name(self, v: ir.Value) -> str:
        return self.fresh(v.hint or "v")

    def alloc(self, stem: str, shape: tuple, dtype: str) -> str:
        """A buffer for a whole tile, declared once at the top of the program."""
        name = self.fresh(stem)
        self.allocs.append(self.alloc_text(name, shape if shape else (1,), buf_dtype(dtype)))
        return name

    def alloc_text(self, name: str, shape: tuple, dtype: str) -> str:
        raise NotImplementedError

    def ex(self, v: ir.Value, idx: Sequence[str] = ()) -> str:
        """Expression of ``v`` at ``idx`` (``v`` may have broadcast dims of size 1)."""
        return self.reprs[v].at(list(idx))

    def ex_b(self, v: ir.Value, out_shape: tuple, idx: Sequence[str]) -> str:
        """Expression of ``v`` broadcast to ``out_shape`` at ``idx``."""
        r = self.reprs[v]
        return r.at(broadcast_index(r.shape, out_shape, idx))

    # ------------------------------------------------------------ lazy values
    def set_lazy(self, op: ir.Op, at, cost: int, reads) -> None:
        res = op.result
        r = Repr(res.type.shape, res.type.dtype, at, cost, frozenset(reads))
        self.reprs[res] = r
        if res.type.shape == ():
            if cost > 0 and self.uses.get(res, 0) > 1:
                name = self.value_name(res)
                self.line(f"{name} = {r.at([])}")
                self.reprs[res] = scalar_repr(name, res.type.dtype, r.reads)
            return
        if self.stays_lazy(r):
            return
        if cost > 0 and ((self.uses.get(res, 0) > 1 and not self.squared_only(res, cost))
                         or self.used_elsewhere(res)):
            self.materialize(res)

    def squared_only(self, v: ir.Value, cost: int) -> bool:
        """Whether ``v`` is a cheap expression whose every use is one elementwise op (``x * x``
        of a scaled row): recomputing it there costs less than a store and a load per element."""
        users = {id(op): op for op in self.users.get(v, [])}
        if cost > SQUARE_INLINE_COST or len(users) != 1:
            return False
        op = next(iter(users.values()))
        return op.name in BINARY and not op.regions

    def stays_lazy(self, r: Repr) -> bool:
        """Whether a tile is always recomputed where it is used, never written to a buffer.
        Masks are: recomputing a comparison is cheaper than a bool tile, and CUDA has no vector
        bool type for TileLang to store one with."""
        return r.dtype == "int1"

    def used_elsewhere(self, v: ir.Value) -> bool:
        """Used in a loop body other than the block defining it (recomputed every trip)."""
        return any(b != self.home.get(v) for b in self.used_in.get(v, ()))

    def scratch(self, role: str, shape: tuple, dtype: str) -> str:
        """A buffer shared by every short-lived tile of this ``role``, shape and dtype (an operand
        copy that dies at its consumer); reusing it keeps the program's footprint small."""
        key = (role, tuple(shape), dtype)
        if key not in self.scratch_pool:
            self.scratch_pool[key] = self.alloc(f"{role}_tmp", shape, dtype)
        return self.scratch_pool[key]

    def materialize(self, v: ir.Value, stem: Optional[str] = None, role: Optional[str] = None) -> Repr:
        """Make ``v`` live in a buffer of its own (no-op when it already does). With ``role``,
        a value used only once goes to the role's scratch buffer instead."""
        r = self.reprs[v]
        if r.buffer is not None and r.shape == v.type.shape:
            return r
        if role is not None and self.uses.get(v, 0) == 1:
            name = self.scratch(role, v.type.shape, v.type.dtype)
        else:
            name = self.alloc(stem or (v.hint or "t"), v.type.shape, v.type.dtype)
        self.write_tile(name, v.type.shape, r.at)
        self.reprs[v] = buffer_repr(name, v.type.shape, v.type.dtype)
        return self.reprs[v]

    def write_tile(self, name: str, shape: tuple, at, reads_from=None) -> None:
        """``name[idx] = at(idx)`` over the whole tile."""
        raise NotImplementedError

    # ------------------------------------------------------------ the walk
    def block(self, block: ir.Block) -> None:
        for op in block.ops:
            if op.name != "const":
                self.loc_comment(op)
            handler = getattr(self, f"op_{op.name}", None)
            if handler is None:
                if op.name in UNARY or op.name in BINARY or op.name in ("where", "cast"):
                    self.elementwise(op)
                    continue
                raise self.fail(op, "no lowering registered for this op")
            handler(op)

    def elementwise(self, op: ir.Op) -> None:
        out = op.result.type.shape
        args = op.args
        numel = _numel(out)
        for a in args:
            # A computed operand broadcast into a bigger tile would be recomputed per element
            # (an rsqrt per row becomes one per element): compute it once at its own size.
            r = self.reprs[a]
            if r.cost > 0 and not self.stays_lazy(r) and 0 < _numel(r.shape) < numel:
                self.materialize(a)
        if op.name in UNARY:
            fn = self.unary_template(op)
            at = lambda idx, a=args[0]: fn(self.ex_b(a, out, idx))
        elif op.name in BINARY:
            fn = self.binary_template(op)
            at = lambda idx, a=args[0], b=args[1]: fn(self.ex_b(a, out, idx), self.ex_b(b, out, idx))
        elif op.name == "where":
            at = lambda idx, c=args[0], a=args[1], b=args[2]: (
                f"T.if_then_else({self.ex_b(c, out, idx)}, {self.ex_b(a, out, idx)}, {self.ex_b(b, out, idx)})")
        else:
            dtype = op.attrs["dtype"]
            if dtype == self.reprs[args[0]].dtype:          # includes a load that converted already
                self.reprs[op.result] = self.reprs[args[0]]
                return
            else:
                at = lambda idx, a=args[0]: f'T.Cast("{buf_dtype(dtype)}", {self.ex_b(a, out, idx)})'
        cost = 1 + sum(self.reprs[a].cost for a in args)
        reads = frozenset().union(*(self.reprs[a].reads for a in args))
        self.set_lazy(op, at, cost, reads)

    def unary_template(self, op: ir.Op) -> Callable[[str], str]:
        """The expression template of a unary elementwise op (a dialect may use its own)."""
        return UNARY[op.name]

    def binary_template(self, op: ir.Op) -> Callable[[str, str], str]:
        """The expression template of a binary elementwise op (a dialect may use its own)."""
        return BINARY[op.name]

    def load_dtype(self, op: ir.Op) -> str:
        """The dtype a load should store: its sole consumer's float dtype when that consumer is
        a cast (``x[...].to("float32")``), so the tile is converted once, in the load."""
        res = op.result
        users = self.users.get(res, [])
        if (len(users) == 1 and self.uses.get(res, 0) == 1 and users[0].name == "cast"
                and users[0].attrs["dtype"] in ir.FLOAT_DTYPES and res.type.dtype in ir.FLOAT_DTYPES):
            return users[0].attrs["dtype"]
        return res.type.dtype

    def op_const(self, op: ir.Op) -> None:
        self.reprs[op.result] = scalar_repr(literal(op.attrs["value"], op.attrs["dtype"]), op.attrs["dtype"])

    def op_full(self, op: ir.Op) -> None:
        text = literal(op.attrs["value"], op.attrs["dtype"])
        self.reprs[op.result] = Repr(op.result.type.shape, op.attrs["dtype"], lambda idx: text)

    def op_iota(self, op: ir.Op) -> None:
        self.reprs[op.result] = Repr(op.result.type.shape, "int32", lambda idx: idx[0])

    def op_expand_dims(self, op: ir.Op) -> None:
        a = op.args[0]
        src = self.reprs[a]
        axis = op.attrs["axis"]
        self.reprs[op.result] = Repr(op.result.type.shape, src.dtype,
                                     lambda idx: self.reprs[a].at(list(idx[:axis]) + list(idx[axis + 1:])),
                                     src.cost, src.reads)

    def op_broadcast_to(self, op: ir.Op) -> None:
        a = op.args[0]
        out = op.result.type.shape
        src = self.reprs[a]
        self.reprs[op.result] = Repr(out, src.dtype, lambda idx: self.ex_b(a, out, idx), src.cost, src.reads)

    def op_trans(self, op: ir.Op) -> None:
        a = op.args[0]
        src = self.reprs[a]
        self.reprs[op.result] = Repr(op.result.type.shape, src.dtype,
                                     lambda idx: self.reprs[a].at([idx[1], idx[0]]), src.cost, src.reads)
