"""Triton lowering: IR + schedule -> a readable Triton ``.py`` source.

Each op is lowered by one entry of ``LOWER`` (op name -> function(emitter, op, args) returning
a Python expression, or None for statements). Constants are inlined as literals; every other
value gets a variable named after the IR value. Tensors are contiguous: strides are products of
the later dims (runtime sizes are kernel arguments, constant dims literals). Index terms that
involve a runtime size are computed in int64 so large tensors do not overflow.

The schedule supplies ``num_warps``/``num_stages`` (used by the launcher and for pipelined
loops) and ``dot_precision`` ("ieee" or "tf32") for float32 dots.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import schedules
from hola_dsl import ir
from hola_dsl.backends.codegen import checked, doc_text, literal, schedule_kwargs, source_comment, symbol
from schedules.targets import is_gpu

EMITTER_VERSION = "1"

# The schedule knobs a Triton source uses itself (tile sizes reach it as the IR's constants).
SOURCE_KNOBS = ("num_warps", "num_stages", "dot_precision")

TL_DTYPE = {
    "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float32": "tl.float32", "float64": "tl.float64",
    "int1": "tl.int1", "int32": "tl.int32", "int64": "tl.int64",
}
SIGNATURE_DTYPE = {
    "float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float64": "fp64",
    "int1": "i1", "int32": "i32", "int64": "i64",
}

# Helper functions a kernel may call, by name; emit() writes the ones it uses before the kernel.
PRELUDE = {"_unit_lower_inverse": '''
@triton.jit
def _unit_lower_inverse(a, N: tl.constexpr):
    """(I + strict_lower(a))^-1 by forward substitution, one row at a time (exact on repeated
    keys, unlike the power product)."""
    i = tl.arange(0, N)
    y = -tl.where(i[:, None] > i[None, :], a, 0.0)        # rows >= r still hold -L
    for r in range(1, N):
        sel = (i == r)[:, None]
        row = tl.sum(tl.where(sel, y, 0.0), 0)             # -L_r, nonzero only left of r
        row = row + tl.sum(row[:, None] * y, 0) * (i < r)  # - L_r - sum_j L_rj Y_j
        y = tl.where(sel, row[None, :], y)
    return y + (i[:, None] == i[None, :]).to(a.dtype)
''', "_to_bf16_rtne": '''
@triton.jit
def _to_bf16_rtne(x):
    """float32 -> bfloat16 rounded to nearest, ties to even, on every runtime: GPUs round a plain
    .to(tl.bfloat16), but Triton 3.9's CPU interpreter drops the low 16 bits (with or without
    fp_downcast_rounding="rtne"). Adding 0x7FFF plus the lowest kept bit rounds the dropped
    bits into the kept ones; what is left converts exactly. NaN is passed through as it is (the
    addition could carry a NaN's payload into the sign)."""
    bits = tl.cast(x, tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    rounded = tl.cast(bits & 0xFFFF0000, tl.float32, bitcast=True)
    return tl.cast(tl.where(x != x, x, rounded), tl.bfloat16)
'''}


class EmitError(ValueError):
    """The IR cannot be lowered to Triton as asked (names the op and its kernel line)."""


def _literal(value, dtype: str) -> str:
    if dtype in ir.FLOAT_DTYPES:
        if math.isinf(value):
            text = 'float("inf")' if value > 0 else '-float("inf")'
        elif math.isnan(value):
            text = 'float("nan")'
        else:
            text = repr(float(value))
        return text if dtype == "float32" else f"tl.full([], {text}, {TL_DTYPE[dtype]})"
    if dtype == "int1":
        return "True" if value else "False"
    return repr(int(value)) if dtype == "int32" else f"tl.full([], {int(value)}, {TL_DTYPE[dtype]})"


class Emitter:
    """Walks a kernel's IR and writes Triton source lines."""

    def __init__(self, kernel: ir.Kernel, schedule: dict, target: str):
        self.kernel = kernel
        self.schedule = dict(schedule)
        self.target = target
        self.names: dict[ir.Value, str] = {}
        self.literals: dict[ir.Value, str] = {}
        self.lines: list[str] = []
        self.indent = "    "
        self.last_loc = None
        self.size_names = {p.name for p in kernel.sizes()}
        self.helpers: set[str] = set()             # names in PRELUDE the kernel calls
        for p in kernel.params:
            self.names[p.value] = p.name

    # -------------------------------------------------------- helpers
    def expr(self, v: ir.Value) -> str:
        return self.literals.get(v) or self.names[v]

    def name(self, v: ir.Value) -> str:
        if v not in self.names:
            self.names[v] = v.name
        return self.names[v]

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def loc_comment(self, op: ir.Op) -> None:
        if not op.loc or op.loc == self.last_loc:
            return
        self.last_loc = op.loc
        self.line(source_comment(self.kernel.source, op.loc))

    def fail(self, op: ir.Op, msg: str) -> EmitError:
        return EmitError(f"{op.loc}: cannot lower {op.name} to Triton: {msg}")

    def dim_expr(self, d: str) -> str:
        return str(self.kernel.consts[d]) if d in self.kernel.consts else d

    def helper(self, name: str) -> str:
        """``name`` of a PRELUDE function, noted so that emit() writes its definition."""
        self.helpers.add(name)
        return name

    # -------------------------------------------------------- blocks
    def block(self, block: ir.Block) -> None:
        for op in block.ops:
            if op.name == "const":
                self.literals[op.result] = _literal(op.attrs["value"], op.attrs["dtype"])
                continue
            self.loc_comment(op)
            if op.name == "loop":
                self.loop(op)
                continue
            lower = LOWER.get(op.name)
            if lower is None:
                raise self.fail(op, "no Triton lowering registered for this op")
            text = lower(self, op, [self.expr(a) if a in self.names or a in self.literals else None
                                    for a in op.args])
            if op.results:
                self.line(f"{self.name(op.result)} = {text}")
            elif text:
                self.line(text)

    def loop(self, op: ir.Op) -> None:
        body = op.regions[0]
        start, stop, step = (self.expr(a) for a in op.args[:3])
        carried = [self.name(a) for a in body.args[1:]]
        for c, init in zip(carried, op.args[3:]):
            self.line(f"{c} = {self.expr(init)}")
        stages = checked(self.schedule.get("num_stages", 1), (int,), "num_stages")
        if op.attrs.get("kind") == "pipelined" and stages > 1:
            rng = f"tl.range({start}, {stop}, {step}, num_stages={stages})"
        else:
            rng = f"range({start}, {stop}, {step})"
        self.line(f"for {self.name(body.args[0])} in {rng}:")
        outer = self.indent
        self.indent += "    "
        self.last_loc = None
        self.block(body)
        if carried:
            self.line(f"{', '.join(carried)} = {', '.join(self.expr(y) for y in body.yields)}")
        else:
            self.line("pass")
        self.indent = outer
        self.last_loc = None
        for r, c in zip(op.results, carried):
            self.names[r] = c

    # -------------------------------------------------------- memory
    def address(self, op: ir.Op, tensor: ir.Value, index_args: list[ir.Value]):
        """(pointer expression, mask expression or None) for a load/store."""
        ttype: ir.TensorType = tensor.type
        kinds = op.attrs["index"]
        rank = sum(1 for k in kinds if k[0] != "scalar")
        terms, masks, pos = [], [], 0
        for d, (dim, kind, val) in enumerate(zip(ttype.dims, kinds, index_args)):
            later = ttype.dims[d + 1:]
            stride = " * ".join(self.dim_expr(x) for x in later) or "1"
            big = any(x in self.size_names for x in later)
            extent = self.dim_expr(dim)
            x = self.expr(val)
            if kind[0] == "scalar":
                # tl.cast, not .to: in the interpreter a loop index is a plain int
                idx = f"tl.cast({x}, tl.int64)" if val in self.names else x
                terms.append(f"{idx} * {stride}" if stride != "1" else idx)
                continue
            if kind[0] == "slice":
                idx = f"({x} + tl.arange(0, {kind[1]}))" if x != "0" else f"tl.arange(0, {kind[1]})"
                static_ok = x == "0" and dim in self.kernel.consts and kind[1] <= self.kernel.consts[dim]
                cond = None if static_ok else f"{idx} < {extent}"
            else:
                idx = x
                cond = f"({x} >= 0) & ({x} < {extent})"
            sl = "[" + ", ".join(":" if i == pos else "None" for i in range(rank)) + "]" if rank > 1 else ""
            pos += 1
            idx_b = f"{idx}{sl}"
            if big:
                idx_b = f"{idx_b}.to(tl.int64)"
            terms.append(f"{idx_b} * {stride}" if stride != "1" else idx_b)
            if cond:
                masks.append(f"({cond}){sl}" if sl else f"({cond})")
        if op.attrs.get("has_mask"):
            masks.append(self.expr(op.args[-1]))
        ptr = f"{self.names[tensor]} + " + " + ".join(terms)
        return ptr, (" & ".join(masks) if masks else None)


# ------------------------------------------------------------ lowerings

def _py_literal(value, dtype: str) -> str:
    """A plain Python literal (Triton casts it to the tensor's dtype)."""
    return _literal(value, "float32" if dtype in ir.FLOAT_DTYPES else "int1" if dtype == "int1" else "int32")


def _pointers(em: Emitter, op: ir.Op, base: str) -> tuple[str, Optional[str]]:
    """Write ``<base>_ptrs`` (and ``<base>_mask``) lines for a load/store; return their names."""
    n = len(op.attrs["index"])
    ptr, mask = em.address(op, op.args[0], op.args[1:1 + n])
    em.line(f"{base}_ptrs = {ptr}")
    if mask is None:
        return f"{base}_ptrs", None
    em.line(f"{base}_mask = {mask}")
    return f"{base}_ptrs", f"{base}_mask"


def _load(em: Emitter, op: ir.Op, args):
    ptrs, mask = _pointers(em, op, em.name(op.result))
    if mask is None:
        return f"tl.load({ptrs})"
    return f"tl.load({ptrs}, mask={mask}, other={_py_literal(op.attrs.get('other', 0), op.result.type.dtype)})"


def _store(em: Emitter, op: ir.Op, args):
    n = len(op.attrs["index"])
    value = op.args[1 + n]
    ptrs, mask = _pointers(em, op, f"{em.names[op.args[0]]}_{value.id}")
    value = em.expr(value)
    return f"tl.store({ptrs}, {value}, mask={mask})" if mask else f"tl.store({ptrs}, {value})"


def _dot(em: Emitter, op: ir.Op, args):
    a, b = args[0], args[1]
    shapes = [x.type.shape for x in op.args[:2]]
    if any(s < 16 for shape in shapes for s in shape):
        raise em.fail(op, f"tl.dot needs every dim >= 16, got {shapes[0]} and {shapes[1]}; pad the tiles")
    dtype = op.args[0].type.dtype
    if dtype in ("bfloat16", "float16") and not is_gpu(em.target):
        # The interpreter multiplies bf16 tiles as their raw bits and fp16 ones in fp16: give it
        # the exact float32 values, as a GPU's dot accumulates their products in float32.
        a, b, dtype = f"{a}.to(tl.float32)", f"{b}.to(tl.float32)", "float32"
    a = f"tl.trans({a})" if op.attrs["trans_a"] else a
    b = f"tl.trans({b})" if op.attrs["trans_b"] else b
    extra = f", acc={args[2]}" if len(args) == 3 else ""
    if dtype == "float32":
        extra += f', input_precision="{symbol(em.schedule.get("dot_precision", "ieee"), "dot_precision")}"'
    return f"tl.dot({a}, {b}{extra})"


def _cast(em: Emitter, op: ir.Op, args):
    dst, src = op.attrs["dtype"], op.args[0].type.dtype
    if dst == "bfloat16" and src in ("float32", "float64") and not is_gpu(em.target):
        x = args[0] if src == "float32" else f"tl.cast({args[0]}, tl.float32)"
        return f"{em.helper('_to_bf16_rtne')}({x})"
    # GPUs round every float downcast to nearest (one cvt instruction; the bit arithmetic of
    # _to_bf16_rtne costs several per element, in the inner loops of the softmax), and so does
    # the interpreter for the other dtypes (numpy's astype).
    return f"tl.cast({args[0]}, {TL_DTYPE[dst]})" if op.args[0].type.rank == 0 else f"{args[0]}.to({TL_DTYPE[dst]})"


def _expand_dims(em: Emitter, op: ir.Op, args):
    rank = op.args[0].type.rank
    if rank == 0:
        return f"tl.expand_dims({args[0]}, 0)"
    axis = op.attrs["axis"]
    items = [":"] * rank
    items.insert(axis, "None")
    return f"{args[0]}[{', '.join(items)}]"


def _binary(symbol: str) -> Callable:
    return lambda em, op, args: f"({args[0]} {symbol} {args[1]})"


def _call(fn: str) -> Callable:
    return lambda em, op, args: f"{fn}({', '.join(args)})"


def _reduce(fn: str) -> Callable:
    return lambda em, op, args: f"{fn}({args[0]}, axis={op.attrs['axis']})"


LOWER: dict[str, Callable[[Emitter, ir.Op, list], Optional[str]]] = {
    "program_id": lambda em, op, args: f"tl.program_id({op.attrs['axis']})",
    "full": lambda em, op, args: f"tl.full({list(op.attrs['shape'])}, {_py_literal(op.attrs['value'], op.attrs['dtype'])}, {TL_DTYPE[op.attrs['dtype']]})",
    "iota": lambda em, op, args: f"tl.arange(0, {op.attrs['n']})",
    "neg": lambda em, op, args: f"(-{args[0]})",
    "exp": _call("tl.exp"), "exp2": _call("tl.exp2"), "log": _call("tl.log"), "sqrt": _call("tl.sqrt"),
    "rsqrt": _call("tl.rsqrt"), "sigmoid": _call("tl.sigmoid"), "abs": _call("tl.abs"),
    "not": lambda em, op, args: f"({args[0]} == 0)",
    "add": _binary("+"), "sub": _binary("-"), "mul": _binary("*"), "div": _binary("/"),
    "floordiv": _binary("//"), "mod": _binary("%"),
    "maximum": _call("tl.maximum"), "minimum": _call("tl.minimum"), "cdiv": _call("tl.cdiv"),
    "lt": _binary("<"), "le": _binary("<="), "gt": _binary(">"), "ge": _binary(">="),
    "eq": _binary("=="), "ne": _binary("!="), "and": _binary("&"), "or": _binary("|"),
    "where": _call("tl.where"),
    "cast": _cast,
    "expand_dims": _expand_dims,
    "broadcast_to": lambda em, op, args: f"tl.broadcast_to({args[0]}, {tuple(op.attrs['shape'])})",
    "trans": _call("tl.trans"),
    "dot": _dot,
    "sum": _reduce("tl.sum"), "max": _reduce("tl.max"), "min": _reduce("tl.min"),
    "cumsum": _reduce("tl.cumsum"),
    "unit_lower_inverse": lambda em, op, args: f"{em.helper('_unit_lower_inverse')}({args[0]}, {op.args[0].type.shape[0]})",
    "load": _load,
    "store": _store,
}


def source_schedule(schedule: Mapping[str, Any], program: Optional[str] = None) -> dict:
    """The part of a completed schedule a Triton source depends on (``SOURCE_KNOBS``), for the DSL
    kernel called ``program`` (one phase of a split kernel): its warps from a knob of its own
    where the schedule has one (``schedules.warps_knob``)."""
    out = {k: schedule[k] for k in SOURCE_KNOBS if k in schedule}
    own = schedules.warps_knob(program) if program else "num_warps"
    if own in schedule:
        out["num_warps"] = schedule[own]
    return out


def kernel_function_name(kernel: ir.Kernel) -> str:
    return f"{kernel.name}_kernel"


def emit(kernel: ir.Kernel, schedule: dict, target: str) -> str:
    """The Triton source of ``kernel`` for ``schedule`` and ``target`` (a complete module)."""
    em = Emitter(kernel, schedule, target)
    em.block(kernel.body)
    params = ", ".join(p.name for p in kernel.params)
    consts = ", ".join(f"{k}={v!r}" for k, v in sorted(kernel.consts.items()))
    sched = schedule_kwargs(schedule)
    header = [
        f'"""Triton kernel {kernel.name}, generated by hola_dsl from {kernel.source.split("hola_dsl/")[-1]}.',
        "",
        f"IR hash {kernel.hash()}; target {doc_text(target)}; emitter v{EMITTER_VERSION}.",
        f"constants: {consts}",
        f"schedule: {sched}",
        f"grid: ({', '.join(ir.scalar_text(g, kernel) for g in kernel.grid)}); "
        f"arguments: {', '.join(p.name for p in kernel.params)} (hola_dsl.backends.triton.runtime launches it).",
        "Do not edit: regenerate with `hola emit`.",
        '"""',
        "",
        "import triton",
        "import triton.language as tl",
        "",
        f"NUM_WARPS = {literal(schedule.get('num_warps', 4), (int,), 'num_warps')}",
        f"NUM_STAGES = {literal(schedule.get('num_stages', 1), (int,), 'num_stages')}",
    ]
    prelude = [line for name in sorted(em.helpers) for line in PRELUDE[name].split("\n")]
    body = ["", "@triton.jit", f"def {kernel_function_name(kernel)}({params}):"] + em.lines
    return "\n".join(header + prelude + body) + "\n"


def signature(kernel: ir.Kernel) -> dict[str, str]:
    """Triton AOT signature {param: type} ("*fp32" for tensors, "i32" sizes, "fp32" scalars)."""
    out = {}
    for p in kernel.params:
        t = p.value.type
        out[p.name] = f"*{SIGNATURE_DTYPE[t.dtype]}" if isinstance(t, ir.TensorType) else SIGNATURE_DTYPE[t.dtype]
    return out
