"""TileLang CUDA-dialect lowering: IR + schedule -> a readable ``tilelang.language`` source.

A sibling of ``lower_cpu`` over the shared walk of ``lower_common`` (lazy elementwise chains,
masked loads and stores with an unmasked fast path, loop-carried buffers), with GPU storage and
parallelism:

* one thread block per program: ``T.Kernel(grid_0, grid_1, grid_2, threads=THREADS)``;
* tiles live in shared memory, written by ``T.Parallel`` loops (every thread takes a share of
  the elements; TileLang inserts the barriers between dependent loops);
* ``dot`` is ``T.gemm`` of two shared tiles into a float32 register fragment (tensor cores
  where the arch has them), copied back to shared memory; a dot too small for every warp to own
  a 16 x 8 tensor-core share (the scan's 16 x 16 inverse blocks) runs on FMAs instead, each
  thread summing whole output elements in a register;
* reductions and prefix sums give each thread whole rows (a serial loop inside ``T.Parallel``,
  the running value in a register); the triangular inverse gives each thread whole columns,
  which are independent;
* scalars live in a register of every thread (``T.alloc_local``) and every thread computes
  them: a scalar that one thread writes to shared memory for the others needs barriers
  inside a single-thread branch, which TileLang cannot place (its ThreadSync pass hoisted
  them out and warned of a race);
* a loop the kernel marks pipelined becomes ``T.Pipelined`` with ``num_stages`` stages.

Schedule knobs: ``threads`` (per block), ``num_stages`` and ``dot_precision`` (float32 operands
on TF32 tensor cores, or on FMAs as the small dots do: exact, for float32 inputs).
"""

from __future__ import annotations

from typing import Sequence

from hola_dsl import ir
from hola_dsl.backends.codegen import checked, symbol
from hola_dsl.backends.tilelang.lower_common import (
    BaseEmitter, EmitError, Repr, buf_dtype, buffer_repr, identity_of, literal,
)

__all__ = ["emit", "EmitError", "PASS_CONFIGS"]

# Tiles live in shared memory; TileLang's default merge barely reuses it across a loop body,
# the aggressive merge (liveness per statement) halves a delta_scan program's footprint.
PASS_CONFIGS = {"tl.enable_aggressive_shared_memory_merge": True}


# Integer index expressions of at most this many ops are recomputed where used (stays_lazy);
# longer ones (a masked position, say) are computed once into shared memory.
LAZY_INDEX_OPS = 3


def _gemm_fits(M: int, N: int, warps: int) -> bool:
    """Whether ``T.gemm`` can split an M x N product over ``warps`` warps, each owning a multiple
    of 16 rows and 8 columns (TileLang rejects the product otherwise)."""
    return any(warps % mw == 0 and M % (16 * mw) == 0 and N % (8 * (warps // mw)) == 0
               for mw in range(1, warps + 1))


class CudaEmitter(BaseEmitter):
    DIALECT = "cuda"

    def __init__(self, kernel: ir.Kernel, schedule: dict, target: str):
        super().__init__(kernel, schedule, target)
        self.threads = checked(self.schedule.get("threads", 128), (int,), "threads")
        self.stages = checked(self.schedule.get("num_stages", 1), (int,), "num_stages")
        # "ieee": float32 operands take FMA dots (T.gemm would round them to TF32)
        self.fma_float32 = symbol(self.schedule.get("dot_precision", "tf32"), "dot_precision") == "ieee"

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

    def grid_position(self, axis: int) -> str:
        return f"p{axis}"                 # bound to the block indices by T.Kernel

    def alloc(self, stem: str, shape: tuple, dtype: str) -> str:
        """Tiles go to shared memory; a scalar to a register of every thread (``alloc_local``),
        which every thread computes for itself (see the class notes on scalars)."""
        if shape != ():
            return super().alloc(stem, shape, dtype)
        name = self.fresh(stem)
        self.allocs.append(f'{name} = T.alloc_local((1,), "{buf_dtype(dtype)}")')
        return name

    def stays_lazy(self, r: Repr) -> bool:
        """Short integer index arithmetic that reads no buffer (``t0 + iota``, ``pid % NQ * BQ``)
        is recomputed where used: a few integer ops per element against a shared-memory round
        trip and a barrier; and a masked store whose row condition reads a shared tile is not
        vectorised by TileLang (it fell back to a serial loop over the vector lanes)."""
        return super().stays_lazy(r) or (r.dtype in ("int32", "int64") and not r.reads
                                         and r.cost <= LAZY_INDEX_OPS)

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
        if not _gemm_fits(M, N, self.threads // 32) or (self.fma_float32 and a.type.dtype == "float32"):
            self._small_dot(op, sa, sb, acc)
            return
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

    def _small_dot(self, op: ir.Op, sa: str, sb: str, acc) -> None:
        """A dot too small for ``T.gemm`` to give every warp a 16 x 8 share of its tensor-core
        tiles (a 16 x 16 block of the scan's blockwise inverse with 4 warps): each thread takes
        whole output elements and sums their products in a register (float32 FMAs)."""
        a = op.args[0]
        M, N = op.result.type.shape
        K = a.type.shape[0] if op.attrs["trans_a"] else a.type.shape[1]
        out = self.alloc(op.result.hint or "dot", (M, N), "float32")
        self._born_before(out, (M, N), "float32")
        reg = self._register("float32")
        i, j = self.loops((M, N))
        r = self.fresh("r")
        ea = f"{sa}[{r}, {i}]" if op.attrs["trans_a"] else f"{sa}[{i}, {r}]"
        eb = f"{sb}[{j}, {r}]" if op.attrs["trans_b"] else f"{sb}[{r}, {j}]"
        init = self.ex(acc, [i, j]) if acc is not None else literal(0, "float32")
        self.line(f"{reg}[0] = {init}")
        self.line(f"for {r} in T.serial({K}):")
        self.line(f'    {reg}[0] = {reg}[0] + T.Cast("float32", {ea}) * T.Cast("float32", {eb})')
        self.line(f"{out}[{i}, {j}] = {reg}[0]")
        self.pop()
        self.reprs[op.result] = buffer_repr(out, (M, N), "float32")

    def _register(self, dtype: str) -> str:
        """A per-thread register for running sums, shared by every reduction of ``dtype``.

        Accumulating in shared memory (``out[i] = out[i] + ...`` inside ``T.Parallel``) makes
        TileLang put a barrier between the initial write and the loop's reads (it cannot tell
        they are the same thread's), inside the branch that picks the working threads; a
        register needs none, and the shared tile is written once at the end."""
        return self.scratch("acc", (), dtype)

    def _born_before(self, name: str, shape: tuple, dtype: str) -> None:
        """Write ``name`` once before the loop that computes it reads other tiles.

        Under the aggressive shared-memory merge a tile first written in a statement may share
        memory with a tile last read in that same statement. When that statement is a loop over
        rows that reads other rows (a reduction, a prefix sum, the inverse), a thread's write
        then clobbers what another thread still reads, and with fewer than 32 rows TileLang
        cannot put a barrier between them (it warned: "Hoisting sync out of an if ... the race
        remains"). Written earlier, the output is live while the inputs are, so the two never
        share memory."""
        self.write_tile(name, shape, lambda idx: literal(0, dtype))

    def _fold(self, reg: str, kind: str, val: str) -> str:
        return f"{reg}[0] = {reg}[0] + {val}" if kind == "sum" else f"{reg}[0] = T.{kind}({reg}[0], {val})"

    def _reduce(self, op: ir.Op, kind: str) -> None:
        x = op.args[0]
        axis = op.attrs["axis"]
        shape = x.type.shape
        out_shape = op.result.type.shape
        dtype = op.result.type.dtype
        name = self.alloc(op.result.hint or kind, out_shape, dtype)
        r = self.fresh("r")
        if out_shape == ():
            # A 1-D tile to a scalar: every thread folds the whole tile into its own register
            # (its reads are shared-memory broadcasts) instead of one thread computing a
            # shared scalar for the others.
            self.line(f"{name}[0] = {identity_of(kind, dtype)}")
            self.line(f"for {r} in T.serial({shape[0]}):")
            self.line(f"    {self._fold(name, kind, self.ex(x, [r]))}")
            self.reprs[op.result] = buffer_repr(name, out_shape, dtype)
            return
        # Each thread takes whole rows (every dim but ``axis``) and folds them in a register.
        reg = self._register(dtype)
        self._born_before(name, out_shape, dtype)
        names = self.loops([n for d, n in enumerate(shape) if d != axis])
        idx = list(names)
        idx.insert(axis, r)
        self.line(f"{reg}[0] = {identity_of(kind, dtype)}")
        self.line(f"for {r} in T.serial({shape[axis]}):")
        self.line(f"    {self._fold(reg, kind, self.ex(x, idx))}")
        self.line(f"{name}[{', '.join(names)}] = {reg}[0]")
        self.pop()
        self.reprs[op.result] = buffer_repr(name, out_shape, dtype)

    def op_cumsum(self, op: ir.Op) -> None:
        x = op.args[0]
        axis = op.attrs["axis"]
        shape = x.type.shape
        dtype = x.type.dtype
        name = self.alloc(op.result.hint or "cumsum", shape, dtype)
        reg = self._register(dtype)
        self._born_before(name, shape, dtype)
        r = self.fresh("r")
        zero = literal(0, dtype)
        if len(shape) == 1:
            # Element i sums x[0..i] itself, in the order a running sum would (the r > i terms
            # add exact zeros): n threads at O(n) each instead of one thread's serial scan
            # while the rest of the block waits.
            src = self.reprs[x]
            if src.cost > 0:
                src = self.materialize(x)
            i = self.fresh("i")
            self.line(f"for {i} in T.Parallel({shape[0]}):")
            self.line(f"    {reg}[0] = {zero}")
            self.line(f"    for {r} in T.serial({shape[0]}):")
            self.line(f"        {reg}[0] = {reg}[0] + T.if_then_else({r} <= {i}, {src.at([r])}, {zero})")
            self.line(f"    {name}[{i}] = {reg}[0]")
            self.reprs[op.result] = buffer_repr(name, shape, dtype)
            return
        # Each thread runs along whole rows, the running sum in a register.
        names = self.loops([n for d, n in enumerate(shape) if d != axis])
        idx = list(names)
        idx.insert(axis, r)
        self.line(f"{reg}[0] = {zero}")
        self.line(f"for {r} in T.serial({shape[axis]}):")
        self.line(f"    {reg}[0] = {reg}[0] + {self.ex(x, idx)}")
        self.line(f"    {name}[{', '.join(idx)}] = {reg}[0]")
        self.pop()
        self.reprs[op.result] = buffer_repr(name, shape, dtype)

    def op_unit_lower_inverse(self, op: ir.Op) -> None:
        a = op.args[0]
        n = a.type.shape[0]
        if self.reprs[a].cost > 0:
            self.materialize(a)
        dtype = op.result.type.dtype
        cols = self.alloc("inv_cols", (n, n), dtype)
        self._born_before(cols, (n, n), dtype)
        reg = self._register(dtype)
        j, i, m = self.fresh("j"), self.fresh("i"), self.fresh("m")
        one, zero = literal(1, dtype), literal(0, dtype)
        # Column j of X solves (I + L) x = e_j on its own: one thread per column, rows in order,
        # each element summed in a register. The columns go to a tile of their own, with a
        # plain row-major layout in which TileLang sees that a thread reads back only its own
        # column; computed straight into the (swizzled) dot operand, the reads of earlier rows
        # looked like other threads' data and got a barrier per term (n^2 / 2 per chunk).
        self.line(f"for {j} in T.Parallel({n}):")
        self.push()
        self.line(f"for {i} in T.serial({n}):")
        self.line(f"    {reg}[0] = T.if_then_else({i} == {j}, {one}, {zero})")
        self.line(f"    for {m} in T.serial({i}):")
        self.line(f"        {reg}[0] = {reg}[0] - {self.ex(a, [i, m])} * {cols}[{m}, {j}]")
        self.line(f"    {cols}[{i}, {j}] = {reg}[0]")
        self.pop()
        x = self.alloc(op.result.hint or "inv", (n, n), dtype)
        self.write_tile(x, (n, n), lambda idx: f"{cols}[{idx[0]}, {idx[1]}]")
        self.reprs[op.result] = buffer_repr(x, (n, n), dtype)

    def loop_header(self, op: ir.Op, iv: str, start: str, stop: str, step: str) -> str:
        if op.attrs.get("kind") == "pipelined" and self.is_const(op.args[2], 1) and self.stages > 1:
            return f"for {iv} in T.Pipelined({start}, {stop}, num_stages={self.stages}):"
        return super().loop_header(op, iv, start, stop, step)

    # ------------------------------------------------------------ the module
    def module(self) -> str:
        k = self.kernel
        sig, order, dyn = self.bind_params()
        ng = len(k.grid)
        if not 1 <= ng <= 3:
            raise EmitError(f"kernel {k.name}: a CUDA grid has 1 to 3 axes, this one has {ng}")
        sig += [f"grid_{d}: T.int32" for d in range(ng)]
        self.block(k.body)
        pids = ", ".join(f"p{d}" for d in range(ng))
        return self.module_text(
            order, sig, dyn, "One thread block per program; call with the grid extents after the parameters.",
            "tilelang.language", [f"THREADS = {self.threads}", f"PASS_CONFIGS = {PASS_CONFIGS!r}", ""],
            f"with T.Kernel({', '.join(f'grid_{d}' for d in range(ng))}, threads=THREADS) as "
            f"{'(' + pids + ')' if ng > 1 else pids}:")


def emit(kernel: ir.Kernel, schedule: dict, target: str = "sm_90a") -> str:
    """The TileLang CUDA-dialect source of ``kernel`` under ``schedule`` (``threads``, ``num_stages``)."""
    return CudaEmitter(kernel, schedule, target).module()
