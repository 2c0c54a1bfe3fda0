"""What the two TileLang dialects share: the walk over a kernel's IR, and IR values as TileLang
expressions. ``lower_cpu`` and ``lower_cuda`` are siblings over this base; each supplies its
storage (``alloc_text``), its loops (``loops``), its dots, reductions, prefix sums and triangular
inverse, and its module; hooks (``grid_position``, ``checked_load``, ``checked_store``,
``unary_template``, ``binary_template``, ``loop_header``) let a dialect refine a step of the walk.

Both dialects keep every tile in a buffer the program owns (a C local array on the CPU, shared
memory on the GPU) and compute element by element. Elementwise ops, broadcasts,
transposes, ``iota`` and ``full`` are *lazy*: they become an expression over index variables
that is inlined where it is consumed, so a chain like ``exp(where(c, a - b, -inf))`` costs one
pass instead of four. A lazy value is written to a buffer ("materialised") only when it is
worth it: it is used more than once, it is used inside a loop it was not defined in, or its
consumer needs memory (a dot operand, a loop-carried value).

Each lazy value knows which buffers its expression reads (``reads``), so a loop can tell
whether writing one carried buffer would change another carried value's expression.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from hola_dsl import ir
from hola_dsl.backends.codegen import doc_text, schedule_repr, source_comment


class EmitError(ValueError):
    """The IR cannot be lowered to this TileLang dialect (names the op and its kernel line)."""


BUF_DTYPE = {"int1": "bool"}          # TileLang's name for an element type, where it differs


# Parameter names that would shadow a name of the generated module; such a parameter gets a "_".
_RESERVED = {"T", "tilelang", "build", "pid", "pid_lo", "pid_hi"}


def and_all(conds: Sequence[str]) -> str:
    """The TileLang conjunction of ``conds`` (at least one)."""
    out = conds[0]
    for c in conds[1:]:
        out = f"T.And({out}, {c})"
    return out


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
# Ops lowered by ``BaseEmitter.elementwise``: one expression per element, fused where consumed.
ELEMENTWISE = frozenset(UNARY) | frozenset(BINARY) | {"where", "cast"}
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


class BaseEmitter(abc.ABC):
    """The dialect-independent walk over a kernel; a dialect supplies the abstract methods and
    the lowerings of the ops with no dialect-independent form (``op_dot``, ``op_cumsum``,
    ``op_unit_lower_inverse``)."""

    DIALECT = ""        # "cpu" or "cuda", for messages

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
        self.const_value: dict[ir.Value, object] = {}
        self.tensor_name: dict[ir.Value, str] = {}
        # Copies a loop body makes (the C dialect's row-major copies of transposed dot
        # operands) die with the body: the walk restores this memo after each loop.
        self.trans_memo: dict[ir.Value, str] = {}
        # Inside a loop body: the value each carry is yielded from -> (carried buffer, body arg).
        self.carry_homes: dict[ir.Value, tuple[str, ir.Value]] = {}

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

    @abc.abstractmethod
    def alloc_text(self, name: str, shape: tuple, dtype: str) -> str:
        """The declaration of a tile buffer in this dialect's storage."""

    @abc.abstractmethod
    def loops(self, shape: Sequence[int], stem: str = "i") -> list[str]:
        """Open a loop nest over ``shape`` in this dialect (the caller pops one level); return
        the index names."""

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
        if shape == ():
            self.line(f"{name}[0] = {at([])}")
            return
        idx = self.loops(shape)
        self.line(f"{name}[{', '.join(idx)}] = {at(idx)}")
        self.pop()

    # ------------------------------------------------------------ the walk
    @classmethod
    def lowers(cls, op_name: str) -> bool:
        """Whether this dialect has a lowering for IR op ``op_name`` (an ``op_<name>`` method, or
        the shared elementwise lowering)."""
        return callable(getattr(cls, f"op_{op_name}", None)) or op_name in ELEMENTWISE

    def block(self, block: ir.Block) -> None:
        for op in block.ops:
            if op.name != "const":
                self.loc_comment(op)
            handler = getattr(self, f"op_{op.name}", None)
            if handler is None:
                if op.name in ELEMENTWISE:
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
        self.const_value[op.result] = op.attrs["value"]

    def is_const(self, v: ir.Value, value) -> bool:
        return v in self.const_value and self.const_value[v] == value

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

    # ------------------------------------------------------------ params, grid
    def op_program_id(self, op: ir.Op) -> None:
        self.reprs[op.result] = scalar_repr(self.grid_position(op.attrs["axis"]), "int32")

    @abc.abstractmethod
    def grid_position(self, axis: int) -> str:
        """The expression of the program's position along grid ``axis``."""

    # ------------------------------------------------------------ memory
    def address(self, op: ir.Op, idx: Sequence[str]):
        """(element expression, bounds conditions, whole-tile-in-range conditions or None)."""
        tensor = op.args[0]
        kinds = op.attrs["index"]
        index_args = op.args[1:1 + len(kinds)]
        subs, conds, tile_ok, pos = [], [], [], 0
        for dim, kind, val in zip(tensor.type.dims, kinds, index_args):
            extent = self.dim_expr(dim)
            if kind[0] == "scalar":
                subs.append(self.ex(val))
                continue
            i = idx[pos]
            pos += 1
            if kind[0] == "slice":
                size = kind[1]
                zero = self.is_const(val, 0)
                e = i if zero else f"{self.ex(val)} + {i}"
                subs.append(e)
                if zero and dim in self.kernel.consts and size <= self.kernel.consts[dim]:
                    continue
                conds.append(f"{e} < {extent}")
                if tile_ok is not None:
                    tile_ok.append(f"{size} <= {extent}" if zero else f"{self.ex(val)} + {size} <= {extent}")
            else:                                               # gather
                g = self.ex(val, [i])
                subs.append(g)
                conds += [f"{g} >= 0", f"{g} < {extent}"]
                tile_ok = None
        return f"{self.tensor_name[tensor]}[{', '.join(subs)}]", conds, tile_ok

    def op_load(self, op: ir.Op) -> None:
        res = op.result
        shape, dtype = res.type.shape, self.load_dtype(op)
        name = self.alloc(res.hint or "ld", shape, dtype)
        other = literal(op.attrs.get("other", 0), dtype)
        user_mask = op.args[-1] if op.attrs.get("has_mask") else None
        convert = dtype != res.type.dtype

        def body(idx, checked):
            elem, conds, _ = self.address(op, idx)
            if convert:
                elem = f'T.Cast("{dtype}", {elem})'
            if user_mask is not None:
                conds = conds + [self.ex_b(user_mask, shape, idx)]
            if checked and conds:
                return f"T.if_then_else({and_all(conds)}, {elem}, {other})"
            return elem
        self._fast_path(op, shape, name, body, user_mask)
        self.reprs[res] = buffer_repr(name, shape, dtype)

    def _fast_path(self, op: ir.Op, shape: tuple, name: str, body, user_mask) -> None:
        """Emit ``name[idx] = body(idx, checked)``; unchecked when the tile is all in range."""
        probe = [f"_{d}" for d in range(len(shape))]
        _, conds, tile_ok = self.address(op, probe)
        write = (lambda idx, checked: f"{name}[0] = {body(idx, checked)}") if shape == () else \
            (lambda idx, checked: f"{name}[{', '.join(idx)}] = {body(idx, checked)}")
        if not conds and user_mask is None:
            self._nest(shape, lambda idx: write(idx, False))
            return
        checked = lambda: self.checked_load(op, shape, name, write, user_mask)
        if tile_ok and user_mask is None:
            self.line(f"if {and_all(tile_ok)}:")
            self.push()
            self._nest(shape, lambda idx: write(idx, False))
            self.pop()
            self.line("else:")
            self.push()
            checked()
            self.pop()
            return
        checked()

    def checked_load(self, op: ir.Op, shape: tuple, name: str, write, user_mask) -> None:
        """A load that may leave its tensor or its mask: ``write(idx, True)`` (a condition per
        element) over the tile. A dialect may test what it can once per row."""
        self._nest(shape, lambda idx: write(idx, True))

    def _nest(self, shape: tuple, stmt) -> None:
        if shape == ():
            self.line(stmt([]))
            return
        idx = self.loops(shape)
        self.line(stmt(idx))
        self.pop()

    def op_store(self, op: ir.Op) -> None:
        n = len(op.attrs["index"])
        value = op.args[1 + n]
        shape = value.type.shape
        user_mask = op.args[-1] if op.attrs.get("has_mask") else None
        probe = [f"_{d}" for d in range(len(shape))]
        _, conds, tile_ok = self.address(op, probe)

        def nest(checked):
            if shape == ():
                self.store_element(op, value, user_mask, [], checked)
            elif checked:
                self.checked_store(op, value, user_mask)
            else:
                idx = self.loops(shape)
                self.store_element(op, value, user_mask, idx, False)
                self.pop()
        if not conds and user_mask is None:
            nest(False)
        elif tile_ok and user_mask is None:
            self.line(f"if {and_all(tile_ok)}:")
            self.push()
            nest(False)
            self.pop()
            self.line("else:")
            self.push()
            nest(True)
            self.pop()
        else:
            nest(True)

    def store_element(self, op: ir.Op, value: ir.Value, user_mask, idx: Sequence[str], checked: bool,
                      skip: Sequence[str] = ()) -> None:
        """The statement storing element ``idx`` of ``value``; when ``checked``, under the access's
        conditions (those in ``skip`` already hold)."""
        elem, conds, _ = self.address(op, idx)
        if user_mask is not None:
            conds = conds + [self.ex_b(user_mask, value.type.shape, idx)]
        conds = [c for c in conds if c not in skip]
        stmt = f"{elem} = {self.ex(value, idx)}"
        if checked and conds:
            self.line(f"if {and_all(conds)}:")
            self.push()
            self.line(stmt)
            self.pop()
        else:
            self.line(stmt)

    def checked_store(self, op: ir.Op, value: ir.Value, user_mask) -> None:
        """A store that may leave its tensor or its mask: a condition per element. A dialect may
        test what it can once per row."""
        idx = self.loops(value.type.shape)
        self.store_element(op, value, user_mask, idx, True)
        self.pop()

    # ------------------------------------------------------------ reductions
    def op_sum(self, op: ir.Op) -> None:
        self._reduce(op, "sum")

    def op_max(self, op: ir.Op) -> None:
        self._reduce(op, "max")

    def op_min(self, op: ir.Op) -> None:
        self._reduce(op, "min")

    @abc.abstractmethod
    def _reduce(self, op: ir.Op, kind: str) -> None:
        """A sum/max/min reduction along ``op.attrs["axis"]`` in this dialect."""

    # ------------------------------------------------------------ control flow
    def op_loop(self, op: ir.Op) -> None:
        body = op.regions[0]
        start, stop, step = (self.ex(a) for a in op.args[:3])
        carried = []
        for arg, init in zip(body.args[1:], op.args[3:]):
            ri = self.reprs[init]
            if (ri.buffer is not None and self.uses.get(init, 0) == 1 and ri.shape == arg.type.shape
                    and ri.buffer not in carried and ri.dtype == arg.type.dtype
                    and ri.buffer not in self.scratch_pool.values() and self.can_carry(ri.buffer)):
                name = ri.buffer                  # the loop is the init's only use: carry in place
            else:
                name = self.alloc(arg.hint or "carry", arg.type.shape, arg.type.dtype)
                self.write_tile(name, arg.type.shape, lambda idx, v=init: self.ex(v, idx))
            carried.append(name)
            self.reprs[arg] = buffer_repr(name, arg.type.shape, arg.type.dtype)
        iv = self.fresh("it")
        self.reprs[body.args[0]] = scalar_repr(iv, "int32")
        self.line(self.loop_header(op, iv, start, stop, step))
        self.push()
        self.last_loc = None
        outer_memo = dict(self.trans_memo)
        outer_homes = self.carry_homes
        self.carry_homes = {**outer_homes, **{y: (name, arg) for name, arg, y in zip(carried, body.args[1:], body.yields)}}
        self.block(body)
        self.carry_homes = outer_homes
        written = set(carried)
        hazards, direct = [], []
        for name, arg, y in zip(carried, body.args[1:], body.yields):
            r = self.reprs[y]
            if r.buffer == name:
                continue                      # carried through unchanged
            (hazards if r.reads & written and not self.update_in_place(name, r, written) else direct).append((name, arg, y))
        temps = []
        for name, arg, y in hazards:          # values that read the old carried state
            tmp = self.alloc(f"{arg.hint or 'carry'}_next", arg.type.shape, arg.type.dtype)
            self.write_tile(tmp, arg.type.shape, lambda idx, v=y: self.ex(v, idx))
            temps.append((name, tmp, arg))
        for name, arg, y in direct:
            self.write_tile(name, arg.type.shape, lambda idx, v=y: self.ex(v, idx))
        for name, tmp, arg in temps:
            self.write_tile(name, arg.type.shape, lambda idx, t=tmp: f"{t}[{', '.join(idx)}]" if idx else f"{t}[0]")
        if not body.ops and not carried:
            self.line("pass")
        self.trans_memo = outer_memo              # copies made in the body die with it
        self.pop()
        self.last_loc = None
        for r, name in zip(op.results, carried):
            self.reprs[r] = buffer_repr(name, r.type.shape, r.type.dtype)

    def update_in_place(self, name: str, r: Repr, written: set) -> bool:
        """Whether carried buffer ``name`` may be overwritten with the yielded value ``r`` although
        ``r`` reads carried state (which the loop otherwise stages through a temporary)."""
        return False

    def can_carry(self, buffer: str) -> bool:
        """Whether a loop may carry its state in ``buffer`` itself (a dialect may keep some
        storage, e.g. register fragments, out of carries)."""
        return True

    def loop_header(self, op: ir.Op, iv: str, start: str, stop: str, step: str) -> str:
        rng = f"{start}, {stop}" if self.is_const(op.args[2], 1) else f"{start}, {stop}, {step}"
        return f"for {iv} in T.serial({rng}):"

    # ------------------------------------------------------------ the module
    def bind_params(self) -> tuple[list[str], list[str], list[str]]:
        """(prim_func signature entries, IR param names in call order, dynamic-dim lines)."""
        k = self.kernel
        sig, order = [], []
        dyn = [f'{self.size_var[p.name]} = T.dynamic("{p.name}")' for p in k.sizes()]
        for p in k.params:
            pname = f"{p.name}_" if p.name in _RESERVED else p.name
            if p.kind in ("in", "out"):
                t: ir.TensorType = p.value.type
                shape = ", ".join(self.dim_expr(d) for d in t.dims)
                sig.append(f'{pname}: T.Tensor(({shape},), "{buf_dtype(t.dtype)}")')
                self.tensor_name[p.value] = pname
                order.append(p.name)
            elif p.kind == "size":
                self.reprs[p.value] = scalar_repr(self.size_var[p.name], "int32")
            else:
                sig.append(f"{pname}: T.{p.value.type.dtype}")
                self.reprs[p.value] = scalar_repr(pname, p.value.type.dtype)
                order.append(p.name)
        return sig, order, dyn

    def module_text(self, order: list[str], sig: list[str], dyn: list[str], how_to_run: str, language: str,
                    settings: list[str], kernel_open: str) -> str:
        """The generated module around the walked body: a docstring naming the generator
        (``type(self).__module__``), kernel, IR hash, schedule and target and ``how_to_run``;
        ``import language as T``; PARAMS, GRID_RANK and the dialect's ``settings`` lines; and
        ``build()``, which returns the ``T.prim_func`` whose body opens with ``kernel_open``."""
        k = self.kernel
        fname = self.function_name()
        head = [
            f'"""Generated by {type(self).__module__} from kernel {k.name!r}.',
            "",
            f"IR hash {k.hash()}; schedule {schedule_repr(self.schedule)}; target {doc_text(self.target)}.",
            how_to_run,
            '"""',
            f"import {language} as T",
            "",
            f"PARAMS = {order!r}    # prim_func parameters before the grid extents",
            f"GRID_RANK = {len(k.grid)}",
            *settings,
            "",
            "def build():",
            *[f"    {d}" for d in dyn],
            "",
            "    @T.prim_func",
            f"    def {fname}(",
            *[f"        {s}," for s in sig],
            "    ):",
            f"        {kernel_open}",
            *[f"            {a}" for a in self.allocs],
        ]
        return "\n".join(head + self.lines + ["", f"    return {fname}", ""])

    def function_name(self) -> str:
        """The generated prim_func's name: the kernel's, with the dialect."""
        return f"{self.kernel.name}_{self.DIALECT}"
