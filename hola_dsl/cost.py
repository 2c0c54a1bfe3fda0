"""What a kernel launch costs, read off its traced IR: programs, FLOPs, bytes and the sequential
path (`hola build --report`).

Counting rules (the work the kernel really performs, not the minimum the math needs):

- a ``dot`` of an m x k by a k x n tile: 2mkn FLOPs (its accumulator add is inside), counted
  once whatever its precision: a float32 dot that a schedule runs as 3xTF32 makes about three
  tensor-core passes (hi*hi + hi*lo + lo*hi), so its hardware time is ~3x what the count says;
- ``unit_lower_inverse`` of an n x n tile: n(n-1)(n-2)/3 FLOPs (forward substitution's
  multiply-adds, C(n, 3) of them);
- float elementwise arithmetic and functions (add, mul, exp, rsqrt, ...): one FLOP per result
  element; reductions and prefix sums: one per input element;
- index arithmetic (integer results), comparisons, selects, casts, broadcasts: none;
- bytes: every element a ``load`` reads or a ``store`` writes, at the tensor's element size, as
  the program addresses it (no reuse through caches is assumed).

A loop runs its trip count times; loop bounds may depend on sizes, program ids and outer loop
variables, so a program's cost is evaluated per distinct value of the grid axes its loop bounds
read. A loop is *sequential* when its trip count grows with a runtime size and is the same for
every program: its iterations (chunks, cache blocks) are walked in order, the GPU's critical path.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from hola_dsl import ir, spec

# Ops that move or reshape data, pick, compare or convert: no floating-point work.
_FREE = frozenset({"const", "program_id", "full", "iota", "expand_dims", "broadcast_to", "trans", "cast", "where",
                   "load", "store", "loop", "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not"})
_REDUCE = frozenset({"sum", "max", "min", "cumsum"})
_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int1": 1, "int32": 4, "int64": 8}


@dataclass(frozen=True)
class KernelCost:
    """One launch's cost at one problem size.

    ``programs``: grid size. ``flops``: all floating-point operations of all programs, of
    which ``dot_flops`` in dots. ``bytes``: global memory read plus written. ``sequential``:
    iterations of the outermost sequential loop (0 when the kernel has none: it is parallel
    over its grid); ``dots_per_step``: dots in one iteration of that loop, inner loops
    unrolled, and ``step_flops`` the FLOPs of one iteration (per program).
    """

    kernel: str
    programs: int
    flops: int
    dot_flops: int
    bytes: int
    sequential: int
    dots_per_step: int
    step_flops: int


@dataclass
class _Tally:
    flops: int = 0
    dot_flops: int = 0
    bytes: int = 0
    dots: int = 0

    def add(self, other: "_Tally", times: int = 1) -> None:
        self.flops += other.flops * times
        self.dot_flops += other.dot_flops * times
        self.bytes += other.bytes * times
        self.dots += other.dots * times


def _numel(t) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n


class _Counter:
    """Evaluates loop bounds and tallies one program of ``kernel``."""

    def __init__(self, kernel: ir.Kernel, sizes: Mapping[str, int]):
        self.kernel = kernel
        self.defs = {}
        for op in ir.walk(kernel.body):
            for r in op.results:
                self.defs[r] = op
        self.base = {p.value: int(sizes[p.name]) for p in kernel.sizes()}
        # Roots a value may depend on: size params, program ids (by axis), loop variables.
        self._deps: dict = {}
        self.size_values = set(self.base)
        self.loop_vars = {op.regions[0].args[0]: op for op in ir.walk(kernel.body) if op.name == "loop"}

    def deps(self, v: ir.Value) -> frozenset:
        """The roots ``v`` is computed from: size Values, ("pid", axis) and loop variables."""
        if v in self._deps:
            return self._deps[v]
        if v in self.size_values or v in self.loop_vars:
            out = frozenset({v})
        else:
            op = self.defs.get(v)
            if op is None:
                out = frozenset({v})  # a parameter or a loop-carried value: data, not a size
            elif op.name == "program_id":
                out = frozenset({("pid", op.attrs["axis"])})
            else:
                out = frozenset().union(*(self.deps(a) for a in op.args)) if op.args else frozenset()
        self._deps[v] = out
        return out

    def value(self, v: ir.Value, env: Mapping) -> int:
        if v in env:
            return env[v]
        op = self.defs.get(v)
        if op is None:
            raise ValueError(f"kernel {self.kernel.name}: a loop bound reads {v.name}, which is data, not a size")
        if op.name == "const":
            return int(op.attrs["value"])
        if op.name == "program_id":
            return env[("pid", op.attrs["axis"])]
        if op.name == "cast":
            return self.value(op.args[0], env)
        if op.name in ir.HOST_SCALAR:  # the size arithmetic grid extents use, too
            a, b = (self.value(x, env) for x in op.args)
            return ir.HOST_SCALAR[op.name](a, b)
        raise ValueError(f"kernel {self.kernel.name}: a loop bound uses op {op.name} ({op.loc}), which the "
                         f"cost model cannot evaluate")

    def trips(self, op: ir.Op, env: Mapping) -> int:
        start, stop, step = (self.value(a, env) for a in op.args[:3])
        return max(0, -(-(stop - start) // step)) if step > 0 else 0

    def bound_deps(self, op: ir.Op) -> frozenset:
        return frozenset().union(*(self.deps(a) for a in op.args[:3]))

    def loop_bound_pids(self) -> set[int]:
        return {d[1] for op in ir.walk(self.kernel.body) if op.name == "loop"
                for d in self.bound_deps(op) if isinstance(d, tuple)}

    def tally(self, block: ir.Block, env: dict) -> _Tally:
        t = _Tally()
        for op in block.ops:
            if op.name == "loop":
                body, var = op.regions[0], op.regions[0].args[0]
                n = self.trips(op, env)
                inner = [o for o in ir.walk(body) if o.name == "loop" and var in self.bound_deps(o)]
                if inner:  # an inner loop's bounds read this loop's variable: walk every iteration
                    start, step = self.value(op.args[0], env), self.value(op.args[2], env)
                    for i in range(n):
                        t.add(self.tally(body, {**env, var: start + i * step}))
                elif n:
                    t.add(self.tally(body, env), n)
                continue
            t.add(self.op_tally(op))
        return t

    def op_tally(self, op: ir.Op) -> _Tally:
        t = _Tally()
        name = op.name
        if name in ("load", "store"):
            # a load's tile is its result; a store's the value after the indices
            tile = op.results[0].type if name == "load" else op.args[1 + len(op.attrs["index"])].type
            t.bytes = _numel(tile) * _BYTES[op.args[0].type.dtype]
            return t
        if name == "dot":
            a, b = op.args[0].type, op.args[1].type
            m, k = a.shape[::-1] if op.attrs["trans_a"] else a.shape
            n = b.shape[0] if op.attrs["trans_b"] else b.shape[1]
            t.flops = t.dot_flops = 2 * m * n * k
            t.dots = 1
            return t
        if name == "unit_lower_inverse":
            n = op.args[0].type.shape[0]
            t.flops = n * (n - 1) * (n - 2) // 3
            return t
        if name in _FREE:
            return t
        out = op.results[0].type if op.results else None
        if name in _REDUCE:
            src = op.args[0].type
            t.flops = _numel(src) if src.dtype in ir.FLOAT_DTYPES else 0
            return t
        if out is not None and isinstance(out, ir.TileType) and out.dtype in ir.FLOAT_DTYPES:
            t.flops = _numel(out)
        return t


def kernel_cost(kernel: ir.Kernel, sizes: Mapping[str, int]) -> KernelCost:
    """The cost of launching traced ``kernel`` once at runtime ``sizes`` ({"B": 2, "T": 16384,
    ...}, every size parameter of the kernel)."""
    missing = [p.name for p in kernel.sizes() if p.name not in sizes]
    if missing:
        raise ValueError(f"kernel {kernel.name}: sizes {missing} not given (got {sorted(sizes)})")
    c = _Counter(kernel, sizes)
    grid = kernel.grid_extents(dict(sizes))
    programs = 1
    for g in grid:
        programs *= g
    varying = sorted(c.loop_bound_pids())
    same = programs
    for axis in varying:
        same //= grid[axis]
    total = _Tally()
    for ids in itertools.product(*(range(grid[a]) for a in varying)):
        env = dict(c.base)
        env.update({("pid", a): i for a, i in zip(varying, ids)})
        total.add(c.tally(kernel.body, env), same)
    seq, step = _sequential(c, kernel.body, dict(c.base))
    return KernelCost(kernel.name, programs, total.flops, total.dot_flops, total.bytes,
                      seq[0] if seq else 0, step.dots if seq else 0, step.flops if seq else 0)


def _sequential(c: _Counter, block: ir.Block, env: dict) -> tuple[Optional[tuple[int, ir.Op]], _Tally]:
    """The outermost loop whose bounds read a size but no program id (trips, op) and one
    iteration's tally, or (None, empty)."""
    for op in ir.walk(block):
        if op.name != "loop":
            continue
        d = c.bound_deps(op)
        if any(isinstance(x, tuple) for x in d) or not (d & c.size_values) or (d & set(c.loop_vars)):
            continue
        n = c.trips(op, env)
        body = op.regions[0]
        step = c.tally(body, {**env, body.args[0]: c.value(op.args[0], env)})
        return (n, op), step
    return None, _Tally()


def report(kernel_spec: spec.KernelSpec, schedule: Mapping[str, Any], dims: Mapping[str, int], dtype: torch.dtype,
           B: int, T: int, H: int) -> list[KernelCost]:
    """The cost of every launch of one call of ``kernel_spec`` at B x T x H with static ``dims``
    (K, V, W, C, chunk_size), inputs of ``dtype``, under a completed ``schedule`` (planned on
    ``meta`` tensors: nothing is allocated or run)."""
    for name, n in (("B", B), ("T", T), ("H", H)):
        if type(n) is not int or n < 1:
            raise ValueError(f"{name}: expected a positive int, got {n!r}")
    inputs, options = kernel_spec.example({**spec.DEFAULT_DIMS, **dims}, dtype, B=B, T=T, H=H)
    plan = kernel_spec.plan(dict(schedule), *inputs, **options)
    out = []
    for step in plan.launches:
        k = spec.specialize(step)
        out.append(kernel_cost(k, k.sizes_of({p.name: step.args[p.name] for p in k.tensors()})))
    return out
