"""TileLang CUDA-dialect lowering: IR + schedule -> a readable ``tilelang.language`` source.

The same walk as the CPU dialect (``tilelang_cpu``; lazy elementwise chains, masked loads and
stores with an unmasked fast path, loop-carried buffers), with GPU storage and parallelism:

* one thread block per program: ``T.Kernel(grid_0, grid_1, grid_2, threads=THREADS)``;
* tiles live in shared memory, written by ``T.Parallel`` loops (every thread takes a share of
  the elements; TileLang inserts the barriers between dependent loops);
* ``dot`` is ``T.gemm`` of two shared tiles into a float32 register fragment (tensor cores
  where the arch has them), copied back to shared memory;
* reductions and prefix sums give each thread whole rows (a serial loop inside ``T.Parallel``);
  the triangular inverse gives each thread whole columns, which are independent;
* a loop the kernel marks pipelined becomes ``T.Pipelined`` with ``num_stages`` stages.

Schedule knobs: ``threads`` (per block) and ``num_stages``.
"""

from __future__ import annotations

from typing import Sequence

from hola_dsl import ir
from hola_dsl.lower.tilelang_common import EMITTER_VERSION, EmitError, buffer_repr, identity_of, literal
from hola_dsl.lower.tilelang_cpu import CpuEmitter

__all__ = ["emit", "EMITTER_VERSION", "EmitError", "PASS_CONFIGS", "kernel_function_name"]


# Tiles live in shared memory; TileLang's default merge barely reuses it across a loop body,
# the aggressive merge (liveness per statement) halves a delta_scan program's footprint.
PASS_CONFIGS = {"tl.enable_aggressive_shared_memory_merge": True}


def kernel_function_name(kernel: ir.Kernel) -> str:
    return f"{kernel.name}_cuda"


class CudaEmitter(CpuEmitter):
    DIALECT = "cuda"

    def __init__(self, kernel: ir.Kernel, schedule: dict, target: str):
        super().__init__(kernel, schedule, target)
        self.indent = " " * 12
        self.threads = int(self.schedule.get("threads", 128))
        self.stages = int(self.schedule.get("num_stages", 1))

    def alloc_text(self, name: str, shape: tuple, dtype: str) -> str:
        return f'{name} = T.alloc_shared(({", ".join(map(str, shape))},), "{dtype}")'

    def alloc_fragment(self, stem: str, shape: tuple, dtype: str) -> str:
        name = self.fresh(stem)
        self.allocs.append(f'{name} = T.alloc_fragment(({", ".join(map(str, shape))},), "{dtype}")')
        return name

    def loops(self, shape: Sequence[int], stem: str = "i") -> list[str]:
        idx = [self.fresh(stem) for _ in shape]
        self.line(f"for {', '.join(idx)} in T.Parallel({', '.join(map(str, shape))}):")
        self.push()
        return idx

    def write_tile(self, name: str, shape: tuple, at, reads_from=None) -> None:
        if shape == ():
            z = self.fresh("z")
            self.line(f"for {z} in T.Parallel(1):")
            self.line(f"    {name}[0] = {at([])}")
            return
        super().write_tile(name, shape, at)

    def _nest(self, shape: tuple, stmt) -> None:
        if shape == ():
            z = self.fresh("z")
            self.line(f"for {z} in T.Parallel(1):")
            self.line(f"    {stmt([])}")
            return
        super()._nest(shape, stmt)

    # ------------------------------------------------------------ compute
    def _shared_operand(self, v: ir.Value, role: str) -> str:
        r = self.reprs[v]
        if r.buffer is None or r.shape != v.type.shape:
            r = self.materialize(v, role=role)
        return r.buffer

    def op_dot(self, op: ir.Op) -> None:
        a, b = op.args[0], op.args[1]
        acc = op.args[2] if len(op.args) == 3 else None
        M, N = op.result.type.shape
        sa, sb = self._shared_operand(a, "a"), self._shared_operand(b, "b")
        frag = self.alloc_fragment("acc", (M, N), "float32")
        if acc is not None:
            self.line(f"T.copy({self._shared_operand(acc, 'c')}, {frag})")
        else:
            self.line(f"T.clear({frag})")
        self.line(f"T.gemm({sa}, {sb}, {frag}, transpose_A={op.attrs['trans_a']}, "
                  f"transpose_B={op.attrs['trans_b']})")
        out = self.alloc(op.result.hint or "dot", (M, N), "float32")
        self.line(f"T.copy({frag}, {out})")
        self.reprs[op.result] = buffer_repr(out, (M, N), "float32")

    def _rows(self, shape: tuple, axis: int):
        """Open a T.Parallel over every dim but ``axis`` (one element for a 1-D tile); returns
        the index list with a placeholder at ``axis``."""
        others = [n for d, n in enumerate(shape) if d != axis]
        if others:
            names = self.loops(others)
        else:
            z = self.fresh("z")
            self.line(f"for {z} in T.Parallel(1):")
            self.push()
            names = []
        idx = list(names)
        idx.insert(axis, None)
        return names, idx

    def _reduce(self, op: ir.Op, kind: str) -> None:
        x = op.args[0]
        axis = op.attrs["axis"]
        shape = x.type.shape
        out_shape = op.result.type.shape
        dtype = op.result.type.dtype
        name = self.alloc(op.result.hint or kind, out_shape, dtype)
        names, idx = self._rows(shape, axis)
        ref = f"{name}[{', '.join(names)}]" if names else f"{name}[0]"
        r = self.fresh("r")
        idx[axis] = r
        self.line(f"{ref} = {identity_of(kind, dtype)}")
        self.line(f"for {r} in T.serial({shape[axis]}):")
        val = self.ex(x, idx)
        self.line(f"    {ref} = {ref} + {val}" if kind == "sum" else f"    {ref} = T.{kind}({ref}, {val})")
        self.pop()
        self.reprs[op.result] = buffer_repr(name, out_shape, dtype)

    def op_cumsum(self, op: ir.Op) -> None:
        x = op.args[0]
        axis = op.attrs["axis"]
        shape = x.type.shape
        dtype = x.type.dtype
        name = self.alloc(op.result.hint or "cumsum", shape, dtype)
        self.write_tile(name, shape, lambda idx: self.ex(x, idx))
        names, idx = self._rows(shape, axis)
        r = self.fresh("r")
        idx[axis] = r
        prev = list(idx)
        prev[axis] = f"{r} - 1"
        self.line(f"for {r} in T.serial(1, {shape[axis]}):")
        self.line(f"    {name}[{', '.join(idx)}] = {name}[{', '.join(idx)}] + {name}[{', '.join(prev)}]")
        self.pop()
        self.reprs[op.result] = buffer_repr(name, shape, dtype)

    def op_unit_lower_inverse(self, op: ir.Op) -> None:
        a = op.args[0]
        n = a.type.shape[0]
        if self.reprs[a].cost > 0:
            self.materialize(a)
        dtype = op.result.type.dtype
        x = self.alloc(op.result.hint or "inv", (n, n), dtype)
        j, i, m = self.fresh("j"), self.fresh("i"), self.fresh("m")
        one, zero = literal(1, dtype), literal(0, dtype)
        # Column j of X solves (I + L) x = e_j on its own: one thread per column, rows in order.
        self.line(f"for {j} in T.Parallel({n}):")
        self.push()
        self.line(f"for {i} in T.serial({n}):")
        self.line(f"    {x}[{i}, {j}] = T.if_then_else({i} == {j}, {one}, {zero})")
        self.line(f"    for {m} in T.serial({i}):")
        self.line(f"        {x}[{i}, {j}] = {x}[{i}, {j}] - {self.ex(a, [i, m])} * {x}[{m}, {j}]")
        self.pop()
        self.reprs[op.result] = buffer_repr(x, (n, n), dtype)

    def loop_header(self, op: ir.Op, iv: str, start: str, stop: str, step: str) -> str:
        if op.attrs.get("kind") == "pipelined" and self.is_const(op.args[2], 1) and self.stages > 1:
            return f"for {iv} in T.Pipelined({start}, {stop}, num_stages={self.stages}):"
        return super().loop_header(op, iv, start, stop, step)

    def op_program_id(self, op: ir.Op) -> None:
        super().op_program_id(op)

    # ------------------------------------------------------------ the module
    def module(self) -> str:
        k = self.kernel
        sig, order, dyn = self.bind_params()
        ng = len(k.grid)
        if not 1 <= ng <= 3:
            raise EmitError(f"kernel {k.name}: a CUDA grid has 1 to 3 axes, this one has {ng}")
        sig += [f"grid_{d}: T.int32" for d in range(ng)]
        self.block(k.body)
        fname = kernel_function_name(k)
        pids = ", ".join(f"p{d}" for d in range(ng))
        head = [
            f'"""Generated by hola_dsl.lower.tilelang_cuda (emitter {EMITTER_VERSION}) from kernel {k.name!r}.',
            "",
            f"IR hash {k.hash()}; schedule {self.schedule}; target {self.target}.",
            "One thread block per program; call with the grid extents after the parameters.",
            '"""',
            "import tilelang.language as T",
            "",
            f"PARAMS = {order!r}    # prim_func parameters before the grid extents",
            f"GRID_RANK = {ng}",
            f"THREADS = {self.threads}",
            f"PASS_CONFIGS = {PASS_CONFIGS!r}",
            "",
            "",
            "def build():",
            *[f"    {d}" for d in dyn],
            "",
            "    @T.prim_func",
            f"    def {fname}(",
            *[f"        {s}," for s in sig],
            "    ):",
            f"        with T.Kernel({', '.join(f'grid_{d}' for d in range(ng))}, threads=THREADS) as "
            f"{'(' + pids + ')' if ng > 1 else pids}:",
            *[f"            {a}" for a in self.allocs],
        ]
        return "\n".join(head + self.lines + ["", f"    return {fname}", ""])


def emit(kernel: ir.Kernel, schedule: dict, target: str = "sm_90a") -> str:
    """The TileLang CUDA-dialect source of ``kernel`` under ``schedule`` (``threads``, ``num_stages``)."""
    return CudaEmitter(kernel, schedule, target).module()
