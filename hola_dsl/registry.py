"""The op registry: every DSL op once, with its shape/dtype rule and its eager meaning.

An :class:`OpDef` has
  ``infer(arg_types, attrs) -> list[TileType]``  the shape/dtype rule (raise TypeError to reject),
  ``eager(args, attrs, ctx) -> tuple``           the meaning, on torch tensors (any device).
Backends lower ops by name in one file each (``hola_dsl/backends/<backend>/``); a backend that
lacks an op fails loudly at emit time, naming the op.

Op list (args; attrs) -> result:
  const(; value, dtype) -> scalar            program_id(; axis) -> int32 scalar
  full(; shape, value, dtype) -> tile        iota(; n) -> int32[n]  (0..n-1)
  unary  neg exp exp2 log sqrt rsqrt sigmoid abs not (x) -> like x (not: int1)
  binary add sub mul div floordiv mod maximum minimum cdiv (a, b) -> broadcast(a, b), same dtype
         lt le gt ge eq ne (a, b) -> int1;  and or (a, b) on int1
  where(c, a, b) -> broadcast                cast(x; dtype)
  expand_dims(x; axis)  broadcast_to(x; shape)  trans(x) (2-D)
  dot(a, b[, acc]; trans_a, trans_b) -> float32[M, N]   (a @ b + acc, fp32 accumulation)
  sum / max / min (x; axis) -> x without axis            cumsum(x; axis) -> like x
  unit_lower_inverse(a) -> (I + strict_lower(a))^-1 for a square float tile (forward substitution)
  load(tensor, *index[, mask]; index, other, has_mask) -> tile
  store(tensor, *index, value[, mask]; index, has_mask)
  loop(start, stop, step, *init; kind) { ^(i, *carried): ... yield(*next) } -> carried results

Indexing (load/store): ``attrs["index"]`` has one entry per tensor dim: ``("scalar",)`` (an
int scalar arg; the dim is dropped), ``("slice", size)`` (a scalar start arg; the dim becomes
``size`` long, rows outside [0, extent) are masked) or ``("gather",)`` (an int 1-D tile arg of
positions; entries < 0 or >= extent are masked). Kept dims keep their order. Masked loads
give ``other``; masked stores write nothing. Integer arithmetic is on non-negative values
(floordiv/mod of negatives are not defined across backends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from hola_dsl.ir import FLOAT_DTYPES, INT_DTYPES, TensorType, TileType

TORCH_DTYPE = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64, "int1": torch.bool, "int32": torch.int32, "int64": torch.int64,
}
DTYPE_NAME = {v: k for k, v in TORCH_DTYPE.items()}


@dataclass(frozen=True)
class OpDef:
    """One op: its name, shape/dtype rule, eager meaning and a one-line description."""

    name: str
    infer: Callable[[Sequence[Any], dict], list]
    eager: Callable[[list, dict, Any], tuple]
    doc: str = ""


OPS: dict[str, OpDef] = {}


def register(name: str, infer, eager, doc: str = "") -> None:
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice")
    OPS[name] = OpDef(name, infer, eager, doc)


def get(name: str) -> OpDef:
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; registered ops: {sorted(OPS)}")
    return OPS[name]


# ---------------------------------------------------------------- shape helpers

def broadcast_shapes(*shapes: tuple) -> tuple:
    """numpy broadcasting of static shapes; TypeError when they do not broadcast."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise TypeError(f"shapes {' and '.join(map(str, shapes))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _tile(t, what: str) -> TileType:
    if not isinstance(t, TileType):
        raise TypeError(f"{what}: expected a tile, got {t}")
    return t


def _same_dtype(name: str, *types: TileType) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise TypeError(f"{name}: operands have dtypes {[t.dtype for t in types]}; cast them to one dtype first")
    return dtypes.pop()


# ---------------------------------------------------------------- elementwise

def _unary(name, fn, dtypes=FLOAT_DTYPES, out_dtype=None):
    def infer(types, attrs):
        t = _tile(types[0], name)
        if t.dtype not in dtypes:
            raise TypeError(f"{name}: expected a {'/'.join(dtypes)} operand, got {t.dtype}")
        return [TileType(t.shape, out_dtype or t.dtype)]
    register(name, infer, lambda args, attrs, ctx: (fn(args[0]),), f"elementwise {name}")


_unary("neg", torch.neg, FLOAT_DTYPES + INT_DTYPES)
_unary("exp", torch.exp)
_unary("exp2", torch.exp2)
_unary("log", torch.log)
_unary("sqrt", torch.sqrt)
_unary("rsqrt", torch.rsqrt)
_unary("sigmoid", torch.sigmoid)
_unary("abs", torch.abs, FLOAT_DTYPES + INT_DTYPES)
_unary("not", torch.logical_not, ("int1",))


def _floordiv(a, b):
    return torch.div(a, b, rounding_mode="floor")


_ARITH = {
    "add": (torch.add, FLOAT_DTYPES + INT_DTYPES), "sub": (torch.sub, FLOAT_DTYPES + INT_DTYPES),
    "mul": (torch.mul, FLOAT_DTYPES + INT_DTYPES), "div": (torch.div, FLOAT_DTYPES),
    "floordiv": (_floordiv, INT_DTYPES), "mod": (torch.remainder, INT_DTYPES),
    "maximum": (torch.maximum, FLOAT_DTYPES + INT_DTYPES),
    "minimum": (torch.minimum, FLOAT_DTYPES + INT_DTYPES),
    "cdiv": (lambda a, b: _floordiv(a + b - 1, b), INT_DTYPES),
}
_COMPARE = {"lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge, "eq": torch.eq, "ne": torch.ne}
_LOGIC = {"and": torch.logical_and, "or": torch.logical_or}


def _binary(name, fn, dtypes, out_dtype=None):
    def infer(types, attrs):
        a, b = _tile(types[0], name), _tile(types[1], name)
        dtype = _same_dtype(name, a, b)
        if dtype not in dtypes:
            raise TypeError(f"{name}: expected {'/'.join(dtypes)} operands, got {dtype}")
        return [TileType(broadcast_shapes(a.shape, b.shape), out_dtype or dtype)]

    def eager(args, attrs, ctx):
        out = fn(args[0], args[1])
        return (out.to(args[0].dtype) if out_dtype is None else out,)
    register(name, infer, eager, f"elementwise {name} with broadcasting")


for _n, (_f, _d) in _ARITH.items():
    _binary(_n, _f, _d)
for _n, _f in _COMPARE.items():
    _binary(_n, _f, FLOAT_DTYPES + INT_DTYPES + ("int1",), "int1")
for _n, _f in _LOGIC.items():
    _binary(_n, _f, ("int1",))


def _where_infer(types, attrs):
    c, a, b = (_tile(t, "where") for t in types)
    if c.dtype != "int1":
        raise TypeError(f"where: condition must be int1 (a comparison), got {c.dtype}")
    dtype = _same_dtype("where", a, b)
    return [TileType(broadcast_shapes(c.shape, a.shape, b.shape), dtype)]


register("where", _where_infer, lambda args, attrs, ctx: (torch.where(args[0], args[1], args[2]),),
         "elementwise select")


def _cast_infer(types, attrs):
    t = _tile(types[0], "cast")
    if attrs["dtype"] not in TORCH_DTYPE:
        raise TypeError(f"cast: unknown dtype {attrs['dtype']!r}; expected one of {list(TORCH_DTYPE)}")
    return [TileType(t.shape, attrs["dtype"])]


register("cast", _cast_infer, lambda args, attrs, ctx: (args[0].to(TORCH_DTYPE[attrs["dtype"]]),),
         "convert element type")


# ---------------------------------------------------------------- creation

register("const", lambda types, attrs: [TileType((), attrs["dtype"])],
         lambda args, attrs, ctx: (torch.tensor(attrs["value"], dtype=TORCH_DTYPE[attrs["dtype"]], device=ctx.device),),
         "scalar constant")
register("program_id", lambda types, attrs: [TileType((), "int32")],
         lambda args, attrs, ctx: (torch.tensor(ctx.program_id[attrs["axis"]], dtype=torch.int32, device=ctx.device),),
         "index of this program along grid axis `axis`")


def _full_infer(types, attrs):
    if any(not isinstance(d, int) or d < 1 for d in attrs["shape"]):
        raise TypeError(f"full: shape must be positive ints, got {attrs['shape']}")
    return [TileType(tuple(attrs["shape"]), attrs["dtype"])]


register("full", _full_infer,
         lambda args, attrs, ctx: (torch.full(tuple(attrs["shape"]), attrs["value"],
                                              dtype=TORCH_DTYPE[attrs["dtype"]], device=ctx.device),),
         "tile filled with one value")
register("iota", lambda types, attrs: [TileType((attrs["n"],), "int32")],
         lambda args, attrs, ctx: (torch.arange(attrs["n"], dtype=torch.int32, device=ctx.device),),
         "0, 1, ..., n-1")


# ---------------------------------------------------------------- shape ops

def _expand_infer(types, attrs):
    t = _tile(types[0], "expand_dims")
    axis = attrs["axis"]
    if not 0 <= axis <= t.rank:
        raise TypeError(f"expand_dims: axis {axis} out of range for rank {t.rank}")
    return [TileType(t.shape[:axis] + (1,) + t.shape[axis:], t.dtype)]


register("expand_dims", _expand_infer, lambda args, attrs, ctx: (args[0].unsqueeze(attrs["axis"]),),
         "insert a unit axis")


def _bcast_infer(types, attrs):
    t = _tile(types[0], "broadcast_to")
    shape = tuple(attrs["shape"])
    if broadcast_shapes(t.shape, shape) != shape:
        raise TypeError(f"broadcast_to: {t.shape} does not broadcast to {shape}")
    return [TileType(shape, t.dtype)]


register("broadcast_to", _bcast_infer,
         lambda args, attrs, ctx: (args[0].expand(tuple(attrs["shape"])).contiguous(),), "broadcast")


def _trans_infer(types, attrs):
    t = _tile(types[0], "trans")
    if t.rank != 2:
        raise TypeError(f"trans: expected a 2-D tile, got shape {t.shape}")
    return [TileType(t.shape[::-1], t.dtype)]


register("trans", _trans_infer, lambda args, attrs, ctx: (args[0].t().contiguous(),), "2-D transpose")


def _dot_infer(types, attrs):
    a, b = _tile(types[0], "dot"), _tile(types[1], "dot")
    if a.rank != 2 or b.rank != 2:
        raise TypeError(f"dot: expected 2-D tiles, got {a.shape} and {b.shape}")
    if a.dtype not in FLOAT_DTYPES or b.dtype != a.dtype:
        raise TypeError(f"dot: expected two float tiles of one dtype, got {a.dtype} and {b.dtype}")
    (m, ka) = a.shape[::-1] if attrs["trans_a"] else a.shape
    (kb, n) = b.shape[::-1] if attrs["trans_b"] else b.shape
    if ka != kb:
        raise TypeError(f"dot: inner dims differ: a is {m}x{ka}, b is {kb}x{n} (after transposes)")
    if len(types) == 3:
        acc = _tile(types[2], "dot acc")
        if acc.shape != (m, n) or acc.dtype != "float32":
            raise TypeError(f"dot: acc must be float32[{m}, {n}], got {acc}")
    return [TileType((m, n), "float32")]


def _dot_eager(args, attrs, ctx):
    a, b = args[0].float(), args[1].float()
    a = a.t() if attrs["trans_a"] else a
    b = b.t() if attrs["trans_b"] else b
    out = a @ b
    return (out + args[2] if len(args) == 3 else out,)


register("dot", _dot_infer, _dot_eager, "matrix product with optional transposes and accumulator (fp32)")


def _reduce_infer(name):
    def infer(types, attrs):
        t = _tile(types[0], name)
        axis = attrs["axis"]
        if not 0 <= axis < t.rank:
            raise TypeError(f"{name}: axis {axis} out of range for shape {t.shape}")
        if t.dtype == "int1":
            raise TypeError(f"{name}: cast int1 to int32 before reducing")
        return [TileType(t.shape[:axis] + t.shape[axis + 1:], t.dtype)]
    return infer


register("sum", _reduce_infer("sum"), lambda args, attrs, ctx: (args[0].sum(attrs["axis"]).to(args[0].dtype),),
         "sum over an axis")
register("max", _reduce_infer("max"), lambda args, attrs, ctx: (args[0].amax(attrs["axis"]),), "max over an axis")
register("min", _reduce_infer("min"), lambda args, attrs, ctx: (args[0].amin(attrs["axis"]),), "min over an axis")


def _cumsum_infer(types, attrs):
    t = _tile(types[0], "cumsum")
    if not 0 <= attrs["axis"] < t.rank:
        raise TypeError(f"cumsum: axis {attrs['axis']} out of range for shape {t.shape}")
    return [t]


register("cumsum", _cumsum_infer, lambda args, attrs, ctx: (args[0].cumsum(attrs["axis"]).to(args[0].dtype),),
         "inclusive prefix sum over an axis")


def _inv_infer(types, attrs):
    t = _tile(types[0], "unit_lower_inverse")
    if t.rank != 2 or t.shape[0] != t.shape[1] or t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"unit_lower_inverse: expected a square float tile, got {t}")
    return [t]


def _inv_eager(args, attrs, ctx):
    a = args[0]
    n = a.shape[0]
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    # A triangular solve is forward substitution; never the power product (docs/design.md).
    return (torch.linalg.solve_triangular(eye + a.tril(-1), eye, upper=False, unitriangular=True),)


register("unit_lower_inverse", _inv_infer, _inv_eager,
         "(I + strict_lower(a))^-1 by forward substitution; entries on/above the diagonal are ignored")


# ---------------------------------------------------------------- memory

def index_shape(tensor: TensorType, index: Sequence[tuple], index_types: Sequence[TileType]) -> tuple:
    """The tile shape a load/store with ``index`` addresses (kept dims, in order)."""
    if len(index) != len(tensor.dims):
        raise TypeError(f"index has {len(index)} entries, tensor {tensor} has {len(tensor.dims)} dims")
    shape = []
    for dim, kind, t in zip(tensor.dims, index, index_types):
        if kind[0] in ("scalar", "slice"):
            if t.shape != () or t.dtype not in INT_DTYPES:
                raise TypeError(f"dim {dim}: a {kind[0]} index needs an int scalar, got {t}")
            if kind[0] == "slice":
                shape.append(kind[1])
        elif kind[0] == "gather":
            if t.rank != 1 or t.dtype not in INT_DTYPES:
                raise TypeError(f"dim {dim}: a gather index needs an int 1-D tile, got {t}")
            shape.append(t.shape[0])
        else:
            raise TypeError(f"dim {dim}: unknown index kind {kind}")
    return tuple(shape)


def _split_mem_args(types_or_args, attrs, has_value: bool):
    n = len(attrs["index"])
    tensor = types_or_args[0]
    index = list(types_or_args[1:1 + n])
    rest = list(types_or_args[1 + n:])
    value = rest.pop(0) if has_value else None
    mask = rest.pop(0) if attrs.get("has_mask") else None
    return tensor, index, value, mask


def _check_mask(mask, shape, what):
    if mask is not None:
        m = _tile(mask, f"{what} mask")
        if m.dtype != "int1" or broadcast_shapes(m.shape, shape) != shape:
            raise TypeError(f"{what}: mask must be int1 broadcastable to {shape}, got {m}")


def _load_infer(types, attrs):
    tensor, index, _, mask = _split_mem_args(types, attrs, False)
    if not isinstance(tensor, TensorType):
        raise TypeError(f"load: first operand must be a tensor parameter, got {tensor}")
    shape = index_shape(tensor, attrs["index"], index)
    _check_mask(mask, shape, "load")
    return [TileType(shape, tensor.dtype)]


def _store_infer(types, attrs):
    tensor, index, value, mask = _split_mem_args(types, attrs, True)
    if not isinstance(tensor, TensorType):
        raise TypeError(f"store: first operand must be a tensor parameter, got {tensor}")
    shape = index_shape(tensor, attrs["index"], index)
    value = _tile(value, "store value")
    if value.shape != shape:
        raise TypeError(f"store: value has shape {value.shape}, the indexed region has shape {shape}")
    if value.dtype != tensor.dtype:
        raise TypeError(f"store: value is {value.dtype}, tensor is {tensor.dtype}; cast it first")
    _check_mask(mask, shape, "store")
    return []


def gather_indices(t: torch.Tensor, index_kinds, index_vals, user_mask):
    """Per-dim index arrays broadcast to the tile shape, clamped in range, and the validity mask."""
    kept = sum(1 for k in index_kinds if k[0] != "scalar")
    arrays, mask, pos = [], None, 0
    for d, (kind, val) in enumerate(zip(index_kinds, index_vals)):
        extent = t.shape[d]
        if kind[0] == "scalar":
            idx = val.long().reshape(())
        else:
            idx = (val.long() + torch.arange(kind[1], device=t.device)) if kind[0] == "slice" else val.long()
            view = [1] * kept
            view[pos] = -1
            idx = idx.reshape(view)
            pos += 1
        ok = (idx >= 0) & (idx < extent)
        mask = ok if mask is None else mask & ok
        arrays.append(idx.clamp(0, max(extent - 1, 0)))
    if user_mask is not None:
        mask = mask & user_mask
    shape = torch.broadcast_shapes(*(a.shape for a in arrays), mask.shape)
    return [a.expand(shape) for a in arrays], mask.expand(shape)


def _load_eager(args, attrs, ctx):
    t, index, _, mask = _split_mem_args(args, attrs, False)
    arrays, ok = gather_indices(t, attrs["index"], index, mask)
    if t.numel() == 0:
        return (torch.full(ok.shape, attrs.get("other", 0), dtype=t.dtype, device=t.device),)
    vals = t[tuple(arrays)]
    return (torch.where(ok, vals, torch.tensor(attrs.get("other", 0), dtype=t.dtype, device=t.device)),)


def _store_eager(args, attrs, ctx):
    t, index, value, mask = _split_mem_args(args, attrs, True)
    arrays, ok = gather_indices(t, attrs["index"], index, mask)
    t[tuple(a[ok] for a in arrays)] = value.expand(ok.shape)[ok].to(t.dtype)
    return ()


register("load", _load_infer, _load_eager, "masked tile load from a tensor (slices, scalars, gathers)")
register("store", _store_infer, _store_eager, "masked tile store into a tensor")


# ---------------------------------------------------------------- control flow

def _loop_infer(types, attrs):
    for name, t in zip(("start", "stop", "step"), types[:3]):
        if not isinstance(t, TileType) or t.shape != () or t.dtype != "int32":
            raise TypeError(f"loop: {name} must be an int32 scalar, got {t}")
    return list(types[3:])


def _loop_eager(args, attrs, ctx):
    start, stop, step = (int(a) for a in args[:3])
    carried = list(args[3:])
    region = ctx.op.regions[0]  # read before the body runs: ctx.op moves on
    for i in range(start, stop, step):
        carried = ctx.run_block(region, [torch.tensor(i, dtype=torch.int32, device=ctx.device)] + carried)
    return tuple(carried)


register("loop", _loop_infer, _loop_eager,
         "serial loop start..stop by step carrying tiles; kind 'serial' or 'pipelined' (a hint)")
