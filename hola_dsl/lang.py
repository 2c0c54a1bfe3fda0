"""The DSL front end: write a kernel as a Python function, trace it into the tile IR.

Kernels import this module as ``hl``::

    @hl.kernel
    def axpy(x: hl.In("N"), y: hl.Out("N"), a: hl.Scalar("float32"), *, BN: int):
        (i,) = hl.grid(hl.cdiv(hl.dim("N"), BN))
        rows = hl.tile(i * BN, BN)               # BN rows from i * BN, masked at N
        y[rows] = a * x[rows].to("float32")

Positional parameters are tensors (``In``/``Out`` with named dims) or runtime scalars
(``Scalar``); keyword-only parameters are compile-time constants. A dim named like a constant
(e.g. "K") is that constant; every other dim name is a runtime int32 size (``hl.dim("T")``).
Tiles (:class:`Tile`) support + - * / // % ** (integer only for //, %), comparisons, & | ~,
``@`` (dot), ``.T``, ``[:, None]``, ``.to(dtype)``. Python numbers adopt the other operand's
dtype. Shape or dtype mistakes raise :class:`DSLError` naming the kernel line.
"""

from __future__ import annotations

import inspect
import linecache
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from hola_dsl import ir, registry


class DSLError(TypeError):
    """A kernel does not type-check; the message starts with the kernel's file:line."""


_THIS_FILE = os.path.abspath(__file__)
_INTERNAL = {_THIS_FILE, os.path.abspath(registry.__file__)}


def _caller_loc() -> tuple[str, str]:
    """(short "file.py:LINE", source line) of the innermost frame outside the DSL machinery."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in _INTERNAL:
        frame = frame.f_back
    if frame is None:
        return "", ""
    path, line = frame.f_code.co_filename, frame.f_lineno
    try:
        text = inspect.getframeinfo(frame, context=1).code_context[0].strip()
    except Exception:
        text = ""
    return f"{os.path.basename(path)}:{line}", f"{path}:{line}: {text}"


# ---------------------------------------------------------------- tracing state

class _Trace:
    def __init__(self, name: str):
        self.name = name
        self.next_id = 0
        self.blocks: list[ir.Block] = [ir.Block()]
        self.grid: Optional[list[ir.Value]] = None
        self.sizes: dict[str, ir.Value] = {}

    def value(self, type_: ir.Type, hint: str = "") -> ir.Value:
        self.next_id += 1
        return ir.Value(self.next_id, type_, hint)


_STACK: list[_Trace] = []


def _trace() -> _Trace:
    if not _STACK:
        raise DSLError("DSL operations can only be used inside a kernel being traced (@hl.kernel)")
    return _STACK[-1]


def emit(name: str, args: Sequence[ir.Value], attrs: Optional[dict] = None, hint: str = "") -> list[ir.Value]:
    """Append op ``name`` to the current block after checking it with its shape rule."""
    tr = _trace()
    attrs = dict(attrs or {})
    loc, where = _caller_loc()
    try:
        types = registry.get(name).infer([a.type for a in args], attrs)
    except (TypeError, KeyError) as exc:
        raise DSLError(f"{where}\n    {name}: {exc}") from None
    results = [tr.value(t, hint) for t in types]
    op = ir.Op(name, list(args), attrs, results, loc)
    op.loc_path = where.split(": ", 1)[0]      # full "path:line", for naming values after the source
    tr.blocks[-1].ops.append(op)
    return results


def _error(msg: str) -> DSLError:
    _, where = _caller_loc()
    return DSLError(f"{where}\n    {msg}")


# ---------------------------------------------------------------- tiles

Number = Union[int, float, bool]


def const(value: Number, dtype: str) -> "Tile":
    """A scalar constant of ``dtype``."""
    if dtype in ir.FLOAT_DTYPES:
        value = float(value)
    elif dtype == "int1":
        value = bool(value)
    else:
        if isinstance(value, float) and not value.is_integer():
            raise _error(f"cannot use {value!r} as an {dtype} constant")
        value = int(value)
    return Tile(emit("const", [], {"value": value, "dtype": dtype})[0])


def _default_dtype(x: Number) -> str:
    return "int1" if isinstance(x, bool) else "int32" if isinstance(x, int) else "float32"


def as_tile(x, like: Optional["Tile"] = None) -> "Tile":
    """``x`` as a Tile; Python numbers become constants of ``like``'s dtype (else a default)."""
    if isinstance(x, Tile):
        return x
    if isinstance(x, (int, float, bool)):
        return const(x, like.dtype if like is not None else _default_dtype(x))
    raise _error(f"expected a tile or a number, got {type(x).__name__}")


def _binop(name: str, a, b) -> "Tile":
    if not isinstance(a, Tile) and not isinstance(b, Tile):
        raise _error(f"{name}: at least one operand must be a tile")
    a = as_tile(a, b if isinstance(b, Tile) else None)
    b = as_tile(b, a)
    return Tile(emit(name, [a.value, b.value])[0])


class Tile:
    """A traced tile (or scalar): wraps an IR value; operators record ops."""

    __slots__ = ("value",)

    def __init__(self, value: ir.Value):
        self.value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.type.shape

    @property
    def dtype(self) -> str:
        return self.value.type.dtype

    def __repr__(self) -> str:
        return f"Tile({self.value!r})"

    def __bool__(self):
        raise _error("a traced tile has no truth value at trace time; use hl.where(...) "
                     "or a compile-time constant for Python control flow")

    __add__ = lambda a, b: _binop("add", a, b)
    __radd__ = lambda a, b: _binop("add", b, a)
    __sub__ = lambda a, b: _binop("sub", a, b)
    __rsub__ = lambda a, b: _binop("sub", b, a)
    __mul__ = lambda a, b: _binop("mul", a, b)
    __rmul__ = lambda a, b: _binop("mul", b, a)
    __truediv__ = lambda a, b: _binop("div", a, b)
    __rtruediv__ = lambda a, b: _binop("div", b, a)
    __floordiv__ = lambda a, b: _binop("floordiv", a, b)
    __rfloordiv__ = lambda a, b: _binop("floordiv", b, a)
    __mod__ = lambda a, b: _binop("mod", a, b)
    __lt__ = lambda a, b: _binop("lt", a, b)
    __le__ = lambda a, b: _binop("le", a, b)
    __gt__ = lambda a, b: _binop("gt", a, b)
    __ge__ = lambda a, b: _binop("ge", a, b)
    __eq__ = lambda a, b: _binop("eq", a, b)
    __ne__ = lambda a, b: _binop("ne", a, b)
    __and__ = lambda a, b: _binop("and", a, b)
    __or__ = lambda a, b: _binop("or", a, b)
    __hash__ = object.__hash__

    def __neg__(self) -> "Tile":
        return Tile(emit("neg", [self.value])[0])

    def __invert__(self) -> "Tile":
        return Tile(emit("not", [self.value])[0])

    def __matmul__(self, other: "Tile") -> "Tile":
        return dot(self, other)

    @property
    def T(self) -> "Tile":
        return Tile(emit("trans", [self.value])[0])

    def to(self, dtype: str) -> "Tile":
        if dtype == self.dtype:
            return self
        return Tile(emit("cast", [self.value], {"dtype": dtype})[0])

    def __getitem__(self, index) -> "Tile":
        """Only unit axes: ``x[:, None]``, ``x[None, :]``."""
        index = index if isinstance(index, tuple) else (index,)
        out, axis = self, 0
        for item in index:
            if item is None:
                out = Tile(emit("expand_dims", [out.value], {"axis": axis})[0])
                axis += 1
            elif isinstance(item, slice) and item == slice(None):
                axis += 1
            else:
                raise _error(f"tiles only support [:, None]-style indexing, got {item!r}")
        if axis != len(out.shape):
            raise _error(f"index {index} does not cover the {len(self.shape)} axes of {self.value.type}")
        return out


# ---------------------------------------------------------------- ops as functions

def _unary(name: str):
    def fn(x) -> Tile:
        x = as_tile(x)
        return Tile(emit(name, [x.value])[0])
    fn.__name__ = name
    fn.__doc__ = f"elementwise {name}"
    return fn


exp, exp2, log, sqrt, rsqrt, sigmoid = (_unary(n) for n in ("exp", "exp2", "log", "sqrt", "rsqrt", "sigmoid"))
abs = _unary("abs")


def maximum(a, b) -> Tile:
    return _binop("maximum", a, b)


def minimum(a, b) -> Tile:
    return _binop("minimum", a, b)


def cdiv(a, b):
    """ceil(a / b) for non-negative ints (plain ints stay plain ints)."""
    if not isinstance(a, Tile) and not isinstance(b, Tile):
        return -(-a // b)
    return _binop("cdiv", a, b)


def where(cond: Tile, a, b) -> Tile:
    """Elementwise ``a if cond else b`` with broadcasting; numbers adopt the tile operand's dtype."""
    like = a if isinstance(a, Tile) else b if isinstance(b, Tile) else None
    if like is None:
        raise _error("where: one of a, b must be a tile (to fix the dtype)")
    a, b = as_tile(a, like), as_tile(b, like)
    return Tile(emit("where", [cond.value, a.value, b.value])[0])


def full(shape: Sequence[int], value: Number, dtype: str = "float32") -> Tile:
    return Tile(emit("full", [], {"shape": tuple(int(s) for s in shape), "value": value, "dtype": dtype})[0])


def zeros(shape: Sequence[int], dtype: str = "float32") -> Tile:
    return full(shape, 0, dtype)


def iota(n: int) -> Tile:
    """int32 [n]: 0, 1, ..., n - 1."""
    return Tile(emit("iota", [], {"n": int(n)})[0])


def broadcast_to(x: Tile, shape: Sequence[int]) -> Tile:
    return Tile(emit("broadcast_to", [x.value], {"shape": tuple(shape)})[0])


def dot(a: Tile, b: Tile, acc: Optional[Tile] = None, *, trans_a: bool = False, trans_b: bool = False) -> Tile:
    """``op(a) @ op(b) (+ acc)`` in float32, op = transpose when asked."""
    args = [a.value, b.value] + ([acc.value] if acc is not None else [])
    return Tile(emit("dot", args, {"trans_a": trans_a, "trans_b": trans_b})[0])


def _reduce(name: str):
    def fn(x: Tile, axis: int) -> Tile:
        return Tile(emit(name, [x.value], {"axis": axis % (len(x.shape) or 1)})[0])
    fn.__name__ = name
    return fn


# Named like the builtins on purpose (hl.sum, hl.max); this module must not use those builtins.
sum, max, min = _reduce("sum"), _reduce("max"), _reduce("min")


def cumsum(x: Tile, axis: int) -> Tile:
    return Tile(emit("cumsum", [x.value], {"axis": axis % len(x.shape)})[0])


def unit_lower_inverse(a: Tile) -> Tile:
    """(I + strict_lower(a))^-1 of a square tile, by forward substitution."""
    return Tile(emit("unit_lower_inverse", [a.value])[0])


def program_id(axis: int) -> Tile:
    return Tile(emit("program_id", [], {"axis": axis})[0])


def grid(*extents) -> tuple[Tile, ...]:
    """Declare the launch grid (one to three axes; ints or size arithmetic) and return this
    program's index along each axis."""
    tr = _trace()
    if tr.grid is not None:
        raise _error("hl.grid(...) may be called once per kernel")
    if not 1 <= len(extents) <= 3:
        raise _error(f"hl.grid takes 1 to 3 extents, got {len(extents)}")
    tr.grid = [as_tile(e).value for e in extents]
    return tuple(program_id(i) for i in range(len(extents)))


def dim(name: str) -> Union[Tile, int]:
    """The runtime size called ``name`` (an int32 scalar)."""
    tr = _trace()
    if name not in tr.sizes:
        raise _error(f"no runtime size {name!r}; sizes are {list(tr.sizes)}")
    return Tile(tr.sizes[name])


# ---------------------------------------------------------------- memory

@dataclass(frozen=True)
class tile:
    """Index entry: ``size`` consecutive positions from ``start`` (masked outside the dim)."""

    start: Any
    size: int


class TensorRef:
    """A tensor parameter inside a kernel: ``x[i, tile(s, n), :]`` loads, assignment stores."""

    def __init__(self, value: ir.Value, shape: tuple, name: str = "t"):
        self.value = value
        self.shape = shape          # ints for constant dims, Tiles for runtime sizes
        self.name = name

    @property
    def dtype(self) -> str:
        return self.value.type.dtype

    def _index(self, index) -> tuple[list[ir.Value], list[tuple]]:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) != len(self.shape):
            raise _error(f"tensor {self.name} has {len(self.shape)} dims "
                         f"{self.value.type.dims}, got {len(index)} indices")
        vals, kinds = [], []
        for d, item in zip(self.shape, index):
            if isinstance(item, tile):
                vals.append(as_tile(item.start, None).value)
                kinds.append(("slice", int(item.size)))
            elif isinstance(item, slice):
                if item != slice(None) or not isinstance(d, int):
                    raise _error("':' is only allowed on a compile-time dim; use hl.tile(start, size)")
                vals.append(const(0, "int32").value)
                kinds.append(("slice", d))
            elif isinstance(item, Tile) and item.shape != ():
                vals.append(item.value)
                kinds.append(("gather",))
            else:
                vals.append(as_tile(item).value)
                kinds.append(("scalar",))
        return vals, kinds

    def load(self, index, *, mask: Optional[Tile] = None, other: Number = 0) -> Tile:
        vals, kinds = self._index(index)
        attrs = {"index": tuple(kinds), "other": other, "has_mask": mask is not None}
        args = [self.value] + vals + ([mask.value] if mask is not None else [])
        return Tile(emit("load", args, attrs, hint=f"{self.name}_")[0])

    def store(self, index, value, *, mask: Optional[Tile] = None) -> None:
        vals, kinds = self._index(index)
        value = as_tile(value).to(self.dtype) if isinstance(value, Tile) else as_tile(value)
        attrs = {"index": tuple(kinds), "has_mask": mask is not None}
        args = [self.value] + vals + [value.value] + ([mask.value] if mask is not None else [])
        emit("store", args, attrs)

    __getitem__ = load

    def __setitem__(self, index, value) -> None:
        self.store(index, value)


# ---------------------------------------------------------------- loops

def loop(start, stop, step=1, *, carry: Union[Tile, Sequence[Tile]] = (), pipelined: bool = False):
    """Decorator for a serial loop ``for i in range(start, stop, step)`` carrying tiles.

    ``@hl.loop(0, n, carry=S)`` over ``def S(i, S): ...; return S`` replaces the function by the
    loop's result (one tile, or a tuple for several carries). ``pipelined`` lets a backend
    overlap the next iteration's loads (the schedule's num_stages).
    """
    single = isinstance(carry, Tile)
    inits = [carry] if single else list(carry)

    def decorate(body: Callable) -> Union[Tile, tuple]:
        tr = _trace()
        lo, hi, st = (as_tile(x, None) for x in (start, stop, step))
        block = ir.Block()
        index = tr.value(ir.TileType((), "int32"), "i")
        names = list(inspect.signature(body).parameters)   # name the body's values like its parameters
        names = names + ["c"] * (1 + len(inits) - len(names))
        index.hint = names[0] + "_"
        block.args = [index] + [tr.value(t.value.type, name + "_") for t, name in zip(inits, names[1:])]
        tr.blocks.append(block)
        try:
            out = body(Tile(index), *(Tile(a) for a in block.args[1:]))
        finally:
            tr.blocks.pop()
        outs = [] if out is None else [out] if isinstance(out, Tile) else list(out)
        if len(outs) != len(inits):
            raise _error(f"loop body {body.__name__} returns {len(outs)} tiles, carries {len(inits)}")
        for o, i in zip(outs, inits):
            if not isinstance(o, Tile) or o.value.type != i.value.type:
                got = o.value.type if isinstance(o, Tile) else type(o).__name__
                raise _error(f"loop body {body.__name__} returns {got} for a carry of type {i.value.type}")
        block.yields = [o.value for o in outs]
        results = emit("loop", [lo.value, hi.value, st.value] + [i.value for i in inits],
                       {"kind": "pipelined" if pipelined else "serial"})
        tr.blocks[-1].ops[-1].regions.append(block)
        if len(results) == 1:
            results[0].hint = body.__name__ + "_"
        wrapped = [Tile(r) for r in results]
        return wrapped[0] if single else tuple(wrapped)
    return decorate


# ---------------------------------------------------------------- kernels

@dataclass(frozen=True)
class In:
    """An input tensor parameter with named dims (and a fixed dtype, or one given at trace)."""

    dims: tuple
    dtype: Optional[str] = None

    def __init__(self, *dims: str, dtype: Optional[str] = None):
        object.__setattr__(self, "dims", tuple(dims))
        object.__setattr__(self, "dtype", dtype)

    kind = "in"


class Out(In):
    """An output tensor parameter (written by stores)."""

    kind = "out"


@dataclass(frozen=True)
class Scalar:
    """A runtime scalar parameter."""

    dtype: str = "float32"
    kind = "scalar"


class KernelDef:
    """A kernel function and its parameter declarations; ``trace`` specialises it to IR."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.name = fn.__name__
        self.source = inspect.getsourcefile(fn) or ""
        sig = inspect.signature(fn)
        self.params: list[tuple[str, Any]] = []
        self.const_names: list[str] = []
        for p in sig.parameters.values():
            if p.kind == p.KEYWORD_ONLY:
                self.const_names.append(p.name)
            elif isinstance(p.annotation, (In, Scalar)):
                self.params.append((p.name, p.annotation))
            else:
                raise DSLError(f"{self.source}: kernel {self.name}: parameter {p.name} needs an "
                               f"hl.In / hl.Out / hl.Scalar annotation or must be keyword-only (a constant)")

    def size_names(self) -> list[str]:
        """Runtime size names in order of first appearance (every dim that is not a constant)."""
        out: list[str] = []
        for _, ann in self.params:
            for d in getattr(ann, "dims", ()):
                if d not in self.const_names and d not in out:
                    out.append(d)
        return out

    def trace(self, dtypes: Optional[dict[str, str]] = None, **consts) -> ir.Kernel:
        """Specialise for parameter ``dtypes`` ({name: dtype} for tensors without a fixed dtype)
        and compile-time ``consts``; return the typed IR."""
        dtypes = dict(dtypes or {})
        missing = [c for c in self.const_names if c not in consts]
        extra = [c for c in consts if c not in self.const_names]
        if missing or extra:
            raise DSLError(f"kernel {self.name}: constants missing {missing}, unknown {extra}; "
                           f"expected {self.const_names}")
        tr = _Trace(self.name)
        _STACK.append(tr)
        try:
            params = [ir.Param(n, "size", tr.value(ir.TileType((), "int32"), n)) for n in self.size_names()]
            tr.sizes = {p.name: p.value for p in params}
            call_args = {}
            for name, ann in self.params:
                if isinstance(ann, Scalar):
                    v = tr.value(ir.TileType((), ann.dtype), name)
                    params.append(ir.Param(name, "scalar", v))
                    call_args[name] = Tile(v)
                    continue
                dtype = ann.dtype or dtypes.get(name)
                if dtype not in ir.DTYPES:
                    raise DSLError(f"kernel {self.name}: tensor {name} needs a dtype in {list(ir.DTYPES)}, got {dtype!r}")
                v = tr.value(ir.TensorType(ann.dims, dtype), name)
                params.append(ir.Param(name, ann.kind, v))
                shape = tuple(consts[d] if d in consts else Tile(tr.sizes[d]) for d in ann.dims)
                call_args[name] = TensorRef(v, shape, name)
            self.fn(**call_args, **consts)
            _name_after_source(tr.blocks[0])
            if tr.grid is None:
                raise DSLError(f"{self.source}: kernel {self.name} never called hl.grid(...)")
            return ir.Kernel(self.name, params, dict(consts), tr.grid, tr.blocks[0], self.source)
        finally:
            _STACK.pop()


_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*=[^=]")


def _name_after_source(block: ir.Block) -> None:
    """Give the values a source line assigns (``kc = k[...]``, ``iv, b, h = hl.grid(...)``) that
    line's variable names as hints, so the IR and generated code read like the kernel. The last
    ops of the line are the assigned ones."""
    ops = block.ops
    for n, op in enumerate(ops):
        for region in op.regions:
            _name_after_source(region)
        if not op.loc or (n + 1 < len(ops) and ops[n + 1].loc == op.loc):
            continue
        path, _, line = getattr(op, "loc_path", "").rpartition(":")
        m = _ASSIGN.match(linecache.getline(path, int(line))) if line.isdigit() else None
        if not m:
            continue
        names = [x.strip() for x in m.group(1).split(",")]
        first = n + 1 - len(names)              # (the builtin max is shadowed by hl.max here)
        tail = ops[first:n + 1] if first >= 0 else []
        if len(tail) == len(names) and all(o.loc == op.loc and len(o.results) == 1 for o in tail):
            for o, name in zip(tail, names):
                if name != "_":
                    o.results[0].hint = name + "_"


def kernel(fn: Callable) -> KernelDef:
    """Decorator: declare a DSL kernel (see the module docstring)."""
    return KernelDef(fn)
