"""TileLang CUDA-dialect lowering: IR + schedule -> a readable ``tilelang.language`` source.

A sibling of ``lower_cpu`` over the shared walk of ``lower_common`` (lazy elementwise chains,
masked loads and stores with an unmasked fast path, loop-carried buffers), with GPU storage and
parallelism:

* one thread block per program: ``T.Kernel(grid_0, grid_1, grid_2, threads=THREADS)``;
* a loaded tile whose users all work element by element goes straight to a register fragment;
  any other whole tile (a gemm operand, a row-serial consumer's input) is one ``T.copy`` into
  shared memory in the tensor's dtype (bounds-checked by TileLang; cp.async inside
  ``T.Pipelined``), a widening cast of it stays an expression where it is used;
* computed tiles live in shared memory, written by ``T.Parallel`` loops (every thread takes a
  share of the elements; TileLang inserts the barriers between dependent loops), except those
  computed from gemm results, which stay in fragments with the gemm's layout;
* ``dot`` is ``T.gemm`` of two shared tiles into a float32 register fragment (tensor cores
  where the arch has them), which stays the result: a later gemm accumulates into it in place,
  row reductions run ``T.reduce_*`` on it, and only a consumer that reads other threads'
  elements (an operand, a prefix sum, the inverse, a broadcast, a reduction across rows) gets a
  shared copy. Two float32 operands that are exact casts of 16-bit tiles multiply those tiles;
  a dot too small for every warp to own a 16 x 8 tensor-core share (the scan's 16 x 16 inverse
  blocks) runs on FMAs instead, each thread summing whole output elements in a register;
* reductions of shared tiles and prefix sums give each thread whole rows (a serial loop inside ``T.Parallel``,
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

from typing import Optional, Sequence

from hola_dsl import ir
from hola_dsl.backends.codegen import checked, symbol
from hola_dsl.backends.tilelang.lower_common import (
    ELEMENTWISE, BaseEmitter, EmitError, Repr, and_all, buf_dtype, buffer_repr, identity_of, literal,
)

__all__ = ["emit", "EmitError", "PASS_CONFIGS"]

# Tiles live in shared memory; TileLang's default merge barely reuses it across a loop body,
# the aggressive merge (liveness per statement) halves a delta_scan program's footprint.
# Global -> shared tile loads are T.copy; inside T.Pipelined they become cp.async (zero-filling
# the out-of-range part). On sm_90 TileLang would turn them into TMA loads with a producer
# warpgroup added to the block instead; that changes the block size the launcher and the
# tuned ``threads`` knob assume, so both are off and every arch gets the cp.async pipeline.
# The pipeline's epilogue waits on cp.async groups by a count that is only constant once its
# loop is unrolled (TileLang 0.1.15 otherwise fails in codegen: "Downcast from tirx.Sub").
PASS_CONFIGS = {"tl.enable_aggressive_shared_memory_merge": True, "tl.disable_tma_lower": True,
                "tl.disable_warp_specialized": True, "tl.UnrollLoop": {"explicit_unroll": True}}


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
        self.fragments: set[str] = set()        # buffers in registers (T.alloc_fragment)
        self.plain_layout: set[str] = set()     # shared tiles that must not become gemm operands
        self.narrow: dict = {}                  # float32 value -> (buffer, dtype) it is an exact cast of

    def alloc_text(self, name: str, shape: tuple, dtype: str) -> str:
        return f'{name} = T.alloc_shared(({", ".join(map(str, shape))},), "{dtype}")'

    def alloc_fragment(self, stem: str, shape: tuple, dtype: str) -> str:
        name = self.fresh(stem)
        self.allocs.append(f'{name} = T.alloc_fragment(({", ".join(map(str, shape))},), "{buf_dtype(dtype)}")')
        self.fragments.add(name)
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

    # ------------------------------------------------------------ storage
    def reads_fragment(self, v: ir.Value) -> bool:
        return bool(self.reprs[v].reads & self.fragments)

    def to_shared(self, v: ir.Value, role: Optional[str] = None) -> Repr:
        """``v`` in a shared tile of its own shape: for consumers that read other threads'
        elements (a row-serial reduction, a prefix sum, the inverse, a gemm operand), which a
        register fragment cannot serve. With ``role``, a value used once goes to the role's
        scratch tile."""
        r = self.reprs[v]
        shape = v.type.shape
        if r.buffer is not None and r.shape == shape and r.buffer not in self.fragments:
            return r
        if r.buffer is None and not (r.reads & self.fragments):
            return super().materialize(v, role=role)
        if role is not None and self.uses.get(v, 0) == 1:
            name = self.scratch(role, shape, v.type.dtype)
        else:
            name = self.alloc(v.hint or "t", shape, v.type.dtype)
        if r.buffer is not None and r.shape == shape:
            self.line(f"T.copy({r.buffer}, {name})")
        else:
            self.write_tile(name, shape, r.at)
        self.reprs[v] = buffer_repr(name, shape, v.type.dtype)
        return self.reprs[v]

    def materialize(self, v: ir.Value, stem: Optional[str] = None, role: Optional[str] = None) -> Repr:
        """A tile computed from gemm results stays in registers (a fragment with their layout:
        the loop writing it reads them at its own index); anything else goes to shared memory."""
        r = self.reprs[v]
        if (role is not None or (r.buffer is not None and r.buffer in self.fragments)
                or any(u.name == "dot" for u in self.users.get(v, []))):
            return self.to_shared(v, role)
        if r.buffer is None and v.type.shape != () and r.reads & self.fragments:
            name = self.alloc_fragment(stem or (v.hint or "t"), v.type.shape, v.type.dtype)
            self.write_tile(name, v.type.shape, r.at)
            self.reprs[v] = buffer_repr(name, v.type.shape, v.type.dtype)
            return self.reprs[v]
        return super().materialize(v, stem, role)

    def can_carry(self, buffer: str) -> bool:
        return buffer not in self.fragments

    def update_in_place(self, name: str, r: Repr, written: set) -> bool:
        """A carry whose next value reads only its own element (``decay * S + dS``) is updated
        in place: each thread reads then writes the same element, so no temporary tile (a
        [BV, BK] float32 one for the scan's state) is needed."""
        if r.reads & written != {name} or not r.shape:
            return False
        probe = [f"__i{d}" for d in range(len(r.shape))]
        text = r.at(probe)
        own = f"{name}[{', '.join(probe)}]"
        return text.count(f"{name}[") == text.count(own) > 0

    def _shared_args(self, op: ir.Op) -> None:
        """Values read at other indices than the consumer's own element go to shared memory
        first when they come from registers (a fragment element lives in one thread only)."""
        for a in op.args:
            if a.type.shape != () and a in self.reprs and self.reads_fragment(a):
                self.to_shared(a)

    def elementwise(self, op: ir.Op) -> None:
        out = op.result.type.shape
        for a in op.args:
            if a.type.shape != out and a.type.shape != () and self.reads_fragment(a):
                self.to_shared(a)                 # broadcast: other threads' elements
        super().elementwise(op)
        src = op.args[0]
        if (op.name == "cast" and op.attrs["dtype"] == "float32" and op.result.type.shape != ()
                and self.reprs[src].buffer is not None and self.reprs[src].buffer not in self.fragments
                and self.reprs[src].dtype in ("bfloat16", "float16")):
            self.narrow[op.result] = (self.reprs[src].buffer, self.reprs[src].dtype)

    def set_lazy(self, op: ir.Op, at, cost: int, reads) -> None:
        """A widening cast of a loaded tile stays an expression (one convert per use) instead of
        a float32 copy of the tile: shared memory holds the input dtype."""
        if (op.name == "cast" and cost == 1 and op.result.type.shape != ()
                and all(self.reprs[a].buffer is not None for a in op.args)
                and not (frozenset(reads) & self.fragments)):
            res = op.result
            self.reprs[res] = Repr(res.type.shape, res.type.dtype, at, cost, frozenset(reads))
            return
        res = op.result
        if res.type.shape == () and cost > 0 and self.uses.get(res, 0) > 1 and res.type.dtype in ir.FLOAT_DTYPES:
            # A register, not a let-bound name: TileLang's codegen hoisted a vector broadcast of
            # a let-bound scalar out of its scope once the pipeline epilogue was unrolled.
            name = self.alloc(res.hint or "v", (), res.type.dtype)
            self.line(f"{name}[0] = {at([])}")
            self.reprs[res] = buffer_repr(name, (), res.type.dtype)
            return
        super().set_lazy(op, at, cost, reads)

    def op_expand_dims(self, op: ir.Op) -> None:
        self._shared_args(op)
        super().op_expand_dims(op)

    def op_broadcast_to(self, op: ir.Op) -> None:
        self._shared_args(op)
        super().op_broadcast_to(op)

    def op_trans(self, op: ir.Op) -> None:
        self._shared_args(op)
        super().op_trans(op)

    def load_dtype(self, op: ir.Op) -> str:
        """Tiles stay in the tensor's dtype in shared memory (a bf16 tile is half a float32
        one); a cast of it is an expression where it is used."""
        return op.result.type.dtype

    def op_load(self, op: ir.Op) -> None:
        """A whole tile of a tensor (slices and scalar indices, no mask, zero padding) is one
        ``T.copy`` into shared memory: vectorised, bounds-checked by TileLang, and cp.async
        inside ``T.Pipelined``. Gathers and masked loads take the element loop."""
        res = op.result
        kinds = op.attrs["index"]
        if self._register_load(res):
            self._load_into(op, self.alloc_fragment(res.hint or "ld", res.type.shape, res.type.dtype))
            return
        if (res.type.shape == () or op.attrs.get("has_mask") or res.type.dtype == "int1"
                or any(k[0] not in ("slice", "scalar") for k in kinds)
                or float(op.attrs.get("other", 0)) != 0.0
                or res.type.dtype != op.args[0].type.dtype):
            super().op_load(op)
            return
        tensor = op.args[0]
        subs = []
        for kind, val in zip(kinds, op.args[1:1 + len(kinds)]):
            if kind[0] == "scalar":
                subs.append(self.ex(val))
            else:
                start = "0" if self.is_const(val, 0) else self.ex(val)
                subs.append(f"{start}:{start} + {kind[1]}" if start != "0" else f"0:{kind[1]}")
        name = self.alloc(res.hint or "ld", res.type.shape, res.type.dtype)
        self.line(f"T.copy({self.tensor_name[tensor]}[{', '.join(subs)}], {name})")
        self.reprs[res] = buffer_repr(name, res.type.shape, res.type.dtype)

    def _register_load(self, v: ir.Value) -> bool:
        """Whether a loaded tile goes to registers instead of shared memory: each of its users is
        an elementwise op of its own shape (each thread reads the elements it loaded), and none
        is a loop carry or a dot."""
        users = self.users.get(v, [])
        return bool(users) and all(
            u.name in ELEMENTWISE and u.result.type.shape == v.type.shape for u in users
        ) and len(v.type.shape) >= 1 and v.type.dtype != "int1" and not self._cast_to_dot(v) \
            and not self._feeds_load(v)

    def _feeds_load(self, v: ir.Value) -> bool:
        """Whether ``v``, or an elementwise result of it, indexes or masks a load (a gather's
        positions, cache_read's ids): the load's element loop reads it at every element, while a
        fragment element lives in one thread only, so TileLang would confine the gather to the
        threads holding it (and place barriers inside that branch)."""
        return any(u.name == "load" or (u.name in ELEMENTWISE and self._feeds_load(u.result))
                   for u in self.users.get(v, []))

    def _cast_to_dot(self, v: ir.Value) -> bool:
        """Whether ``v`` reaches a dot directly or through a widening cast (``k[...].to("float32")``):
        such a tile stays in shared memory in its own dtype, where the gemm reads it."""
        return any(u.name == "dot" or (u.name == "cast" and u.attrs["dtype"] == "float32"
                                        and v.type.dtype in ("bfloat16", "float16") and self._cast_to_dot(u.result))
                   for u in self.users.get(v, []))

    def _load_into(self, op: ir.Op, name: str) -> None:
        """The element-loop load of ``op`` (masked, bounds-checked) into buffer ``name``."""
        res = op.result
        shape, dtype = res.type.shape, res.type.dtype
        other = literal(op.attrs.get("other", 0), dtype)
        user_mask = op.args[-1] if op.attrs.get("has_mask") else None

        def body(idx, checked):
            elem, conds, _ = self.address(op, idx)
            if user_mask is not None:
                conds = conds + [self.ex_b(user_mask, shape, idx)]
            if checked and conds:
                return f"T.if_then_else({and_all(conds)}, {elem}, {other})"
            return elem
        self._fast_path(op, shape, name, body, user_mask)
        self.reprs[res] = buffer_repr(name, shape, dtype)

    # ------------------------------------------------------------ compute
    def _shared_operand(self, v: ir.Value, role: str) -> str:
        r = self.reprs[v]
        if r.buffer is not None and r.shape == v.type.shape and r.buffer in self.plain_layout:
            # the inverse's columns keep a plain layout (see op_unit_lower_inverse): the gemm
            # gets a copy, made once
            name = self.alloc(v.hint or "t", v.type.shape, v.type.dtype)
            self.write_tile(name, v.type.shape, r.at)
            self.reprs[v] = buffer_repr(name, v.type.shape, v.type.dtype)
            return name
        return self.to_shared(v, role=role).buffer

    def _gemm_operands(self, a: ir.Value, b: ir.Value) -> tuple[str, str]:
        """Shared operands of a gemm. Two float32 operands that are exact casts of tiles of one
        16-bit dtype multiply those tiles instead: the products are the same (a 16-bit float is
        exact in TF32 and float32), without float32 copies of the tiles."""
        na, nb = self.narrow.get(a), self.narrow.get(b)
        if na and nb and na[1] == nb[1]:
            return na[0], nb[0]
        return self._shared_operand(a, "a"), self._shared_operand(b, "b")

    def op_dot(self, op: ir.Op) -> None:
        """``T.gemm`` into a float32 register fragment, which stays the result: elementwise
        consumers and reductions read it there, a later gemm accumulates into it in place; only
        a consumer that needs shared memory (an operand, a row-serial loop) gets a copy."""
        a, b = op.args[0], op.args[1]
        acc = op.args[2] if len(op.args) == 3 else None
        M, N = op.result.type.shape
        if not _gemm_fits(M, N, self.threads // 32) or (self.fma_float32 and a.type.dtype == "float32"):
            sa, sb = self._shared_operand(a, "a"), self._shared_operand(b, "b")
            if acc is not None and self.reads_fragment(acc):
                self.to_shared(acc)
            self._small_dot(op, sa, sb, acc)
            return
        sa, sb = self._gemm_operands(a, b)
        racc = self.reprs[acc] if acc is not None else None
        if (racc is not None and racc.buffer in self.fragments and racc.shape == (M, N)
                and self.uses.get(acc, 0) == 1 and racc.dtype == "float32"):
            frag = racc.buffer                    # the partial sum's only use: accumulate in place
        else:
            frag = self.alloc_fragment(op.result.hint or "acc", (M, N), "float32")
            if racc is None:
                self.line(f"T.clear({frag})")
            elif racc.buffer is not None and racc.shape == (M, N) and racc.dtype == "float32":
                self.line(f"T.copy({racc.buffer}, {frag})")
            else:
                self.write_tile(frag, (M, N), lambda idx: self.ex(acc, idx))
        self.line(f"T.gemm({sa}, {sb}, {frag}, transpose_A={op.attrs['trans_a']}, "
                  f"transpose_B={op.attrs['trans_b']})")
        self.reprs[op.result] = buffer_repr(frag, (M, N), "float32")

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
        if out_shape != () and axis == len(shape) - 1 and self.reads_fragment(x):
            # along rows only: TileLang 0.1.15 cannot reduce a gemm fragment across its rows
            # ("ReduceOp cannot lower a layout where a source index depends on a thread-owned
            # reduce segment"), those take the shared-memory path below
            self._reduce_fragment(op, kind)
            return
        if self.reads_fragment(x):
            self.to_shared(x)
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

    def _reduce_fragment(self, op: ir.Op, kind: str) -> None:
        """A reduction of gemm results in registers: ``T.reduce_*`` over a fragment (each thread
        folds its own elements, then the threads sharing a row combine theirs by shuffles), its
        result copied to a small shared tile that any consumer may read."""
        x = op.args[0]
        shape, out_shape, dtype = x.type.shape, op.result.type.shape, op.result.type.dtype
        src = self.reprs[x]
        if src.buffer in self.fragments and src.shape == shape:
            frag = src.buffer
        else:
            frag = self.alloc_fragment("red_in", shape, x.type.dtype)
            self.write_tile(frag, shape, src.at)
        out = self.alloc_fragment(op.result.hint or kind, out_shape, dtype)
        self.line(f"T.reduce_{kind}({frag}, {out}, dim={op.attrs['axis']})")
        name = self.alloc(op.result.hint or kind, out_shape, dtype)
        self.line(f"T.copy({out}, {name})")
        self.reprs[op.result] = buffer_repr(name, out_shape, dtype)

    def op_cumsum(self, op: ir.Op) -> None:
        x = op.args[0]
        if self.reads_fragment(x):
            self.to_shared(x)
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
        if self.reprs[a].cost > 0 or self.reads_fragment(a):
            self.to_shared(a)
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
        # A gemm that takes the inverse as an operand gets a copy (``_shared_operand``); the
        # scan's consumers (FMA dots, hi/lo splits) read the columns where they are.
        self.plain_layout.add(cols)
        self.reprs[op.result] = buffer_repr(cols, (n, n), dtype)

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
