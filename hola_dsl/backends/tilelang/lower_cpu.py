"""TileLang CPU-dialect lowering: IR + schedule -> a readable ``tilelang.cpu.language`` source.

The generated module defines ``build()`` returning a ``T.prim_func`` for ``target="c"``; the C
it compiles to is plain loops over local arrays, written so gcc's ``-O3 -march=native`` turns
them into SIMD code:

* the grid is flattened into one program index ``pid`` in ``[pid_lo, pid_hi)`` so the host can
  hand disjoint ranges to several threads (TileLang's C path has no threads of its own);
* every tile lives in a local array; elementwise chains are fused into the loop that consumes
  them (see ``tilelang_common``);
* ``dot`` is a register-blocked micro-kernel: an ``MR x NR`` accumulator stays in registers
  while the k loop streams a row-major ``[K, NR]`` panel of B, the innermost loop runs over
  contiguous columns (vectorisable); ``MR`` and ``NR`` are schedule knobs (``cpu_mr``,
  ``cpu_nr``). A transposed B is first copied to row-major, which is O(K N) against O(M N K);
* loads and stores of slices get an unmasked fast path when the whole tile is in range.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from hola_dsl import ir
from hola_dsl.backends.codegen import checked, doc_text, schedule_repr
from hola_dsl.backends.tilelang import lower_common as tilelang_common
from hola_dsl.backends.tilelang.lower_common import (
    BaseEmitter, EmitError, buf_dtype, buffer_repr, identity_of, literal, scalar_repr,
)

__all__ = ["emit", "EMITTER_VERSION", "EmitError", "COMPILE_FLAGS", "PASS_CONFIGS", "kernel_function_name"]

# The CPU dialect's own changes bump the suffix; the shared part follows the common emitter.
EMITTER_VERSION = f"{tilelang_common.EMITTER_VERSION}.cpu3"

# -O3 -march=native is what makes the C fast (15x over the default); reassociation lets gcc
# vectorise row reductions. No -ffinite-math-only: the kernels rely on -inf (masked logits).
COMPILE_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math",
                 "-fassociative-math", "-fno-signed-zeros")
# Bounds are handled by the emitter (masks of SPEC'd loads); TileLang's own guard on every
# global access would block vectorisation.
PASS_CONFIGS = {"tl.disable_safe_memory_legalize": True}

# exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in two FMA steps (Cody-Waite; FMAs
# keep -fassociative-math from merging them), exp(r) by Cephes' degree-6 polynomial: within
# 1e-7 relative of exp over float32's normal range (measured: 7.5e-8). Results below 2^-126
# (x < -87) flush to 0, -inf gives 0, x > 88 gives inf, NaN stays NaN. Branch-free, so gcc
# vectorises the loops that call it.
_EXPF = r"""
extern "C" inline __attribute__((always_inline)) float hola_expf(float x) {
  float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
  float r = __builtin_fmaf(n, -0.693359375f, xc);
  r = __builtin_fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  y = x < -87.0f ? 0.0f : y * scale;
  y = x > 88.0f ? __builtin_inff() : y;
  return x != x ? x : y;
}""".strip("\n")

# gcc's float abs builtins, per element type (inlined as one vector and-not).
_FABS = {"float32": "__builtin_fabsf", "float64": "__builtin_fabs"}

# Partial results per row of a max/min reduction (one AVX-512 register of float32).
_LANES = 16

_RESERVED = {"T", "tilelang", "build", "pid", "pid_lo", "pid_hi"}


def kernel_function_name(kernel: ir.Kernel) -> str:
    return f"{kernel.name}_cpu"


def _and(conds: Sequence[str]) -> str:
    out = conds[0]
    for c in conds[1:]:
        out = f"T.And({out}, {c})"
    return out


def _largest_divisor(n: int, cap: int) -> int:
    d = max(1, min(cap, n))
    while n % d:
        d -= 1
    return d


class CpuEmitter(BaseEmitter):
    DIALECT = "cpu"

    def __init__(self, kernel: ir.Kernel, schedule: dict, target: str):
        super().__init__(kernel, schedule, target)
        self.indent = " " * 12
        self.const_value: dict[ir.Value, object] = {}
        self.tensor_name: dict[ir.Value, str] = {}
        self.trans_memo: dict[ir.Value, str] = {}
        self.helpers: dict[str, str] = {}
        self.mr = checked(self.schedule.get("cpu_mr", 4), (int,), "cpu_mr")
        self.nr = checked(self.schedule.get("cpu_nr", 32), (int,), "cpu_nr")
        self.grid_pos: str = ""               # set by module(): the program's grid position
        # Inside a loop body: the value each carry is yielded from -> (carried buffer, body arg).
        self.carry_homes: dict[ir.Value, tuple[str, ir.Value]] = {}
        self.producer = {r: op for op in ir.walk(kernel.body) for r in op.results}

    # ------------------------------------------------------------ buffers
    def alloc_text(self, name: str, shape: tuple, dtype: str) -> str:
        return f'{name} = T.alloc_local(({", ".join(map(str, shape))},), "{dtype}")'

    def loops(self, shape: Sequence[int], stem: str = "i") -> list[str]:
        """Open a loop nest over ``shape`` (caller pops len(shape) levels via close)."""
        idx = [self.fresh(stem) for _ in shape]
        if len(shape) == 1:
            self.line(f"for {idx[0]} in T.serial({shape[0]}):")
        else:
            self.line(f"for {', '.join(idx)} in T.grid({', '.join(map(str, shape))}):")
        self.push()
        return idx

    def write_tile(self, name: str, shape: tuple, at, reads_from=None) -> None:
        if shape == ():
            self.line(f"{name}[0] = {at([])}")
            return
        idx = self.loops(shape)
        self.line(f"{name}[{', '.join(idx)}] = {at(idx)}")
        self.pop()

    # ------------------------------------------------------------ params, grid, scalars
    def op_program_id(self, op: ir.Op) -> None:
        axis = op.attrs["axis"]
        # CUDA dialect (a subclass) binds p0, p1, ... to the block indices instead.
        pos = f"{self.grid_pos}[{axis}]" if self.grid_pos else f"p{axis}"
        self.reprs[op.result] = scalar_repr(pos, "int32")

    def op_const(self, op: ir.Op) -> None:
        super().op_const(op)
        self.const_value[op.result] = op.attrs["value"]

    def is_const(self, v: ir.Value, value) -> bool:
        return v in self.const_value and self.const_value[v] == value

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
                return f"T.if_then_else({_and(conds)}, {elem}, {other})"
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
        if len(shape) >= 2 and self.DIALECT == "cpu":
            checked = lambda: self._rows_checked(op, shape, name, user_mask)
        else:
            checked = lambda: self._nest(shape, lambda idx: write(idx, True))
        if tile_ok and user_mask is None:
            self.line(f"if {_and(tile_ok)}:")
            self.push()
            self._nest(shape, lambda idx: write(idx, False))
            self.pop()
            self.line("else:")
            self.push()
            checked()
            self.pop()
            return
        checked()

    def _row_loops(self, op: ir.Op, shape: tuple, user_mask) -> tuple[list, str, list, list]:
        """Open loops over all but the last dim of ``shape`` and name the innermost index; return
        (index names, element address, the access's conditions that do not involve the innermost
        index, the ones that do). Loads and stores test the first kind once per row."""
        idx = self.loops(shape[:-1]) + [self.fresh("i")]
        elem, conds, _ = self.address(op, idx)
        if user_mask is not None:
            conds = conds + [self.ex_b(user_mask, shape, idx)]
        row = [c for c in conds if not re.search(rf"\b{idx[-1]}\b", c)]
        return idx, elem, row, [c for c in conds if c not in row]

    def _rows_checked(self, op: ir.Op, shape: tuple, name: str, user_mask) -> None:
        """A masked load whose conditions on the outer indices (a row mask, a row's bound, a
        gathered row's index) are tested once per row: per element they keep the row loop
        scalar, and a gathered row becomes per-element gather instructions instead of one
        contiguous copy."""
        idx, elem, row, rest = self._row_loops(op, shape, user_mask)
        inner = idx[-1]
        if op.result.type.dtype != self.load_dtype(op):
            elem = f'T.Cast("{self.load_dtype(op)}", {elem})'
        other = literal(op.attrs.get("other", 0), self.load_dtype(op))
        value = f"T.if_then_else({_and(rest)}, {elem}, {other})" if rest else elem
        dst = f"{name}[{', '.join(idx)}]"
        if row:
            self.line(f"if {_and(row)}:")
            self.line(f"    for {inner} in T.serial({shape[-1]}):")
            self.line(f"        {dst} = {value}")
            self.line("else:")
            self.line(f"    for {inner} in T.serial({shape[-1]}):")
            self.line(f"        {dst} = {other}")
        else:
            self.line(f"for {inner} in T.serial({shape[-1]}):")
            self.line(f"    {dst} = {value}")
        self.pop()

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

        def emit_store(idx, checked, skip=()):
            elem, conds, _ = self.address(op, idx)
            if user_mask is not None:
                conds = conds + [self.ex_b(user_mask, shape, idx)]
            conds = [c for c in conds if c not in skip]
            stmt = f"{elem} = {self.ex(value, idx)}"
            if checked and conds:
                self.line(f"if {_and(conds)}:")
                self.push()
                self.line(stmt)
                self.pop()
            else:
                self.line(stmt)

        probe = [f"_{d}" for d in range(len(shape))]
        _, conds, tile_ok = self.address(op, probe)

        def nest(checked):
            if shape == ():
                emit_store([], checked)
                return
            if checked and len(shape) >= 2 and self.DIALECT == "cpu":
                # Conditions that do not involve the innermost index (row masks, row bounds)
                # are tested once per row: a branch per element keeps the row loop scalar.
                idx, _, row, _ = self._row_loops(op, shape, user_mask)
                inner = idx[-1]
                if row:
                    self.line(f"if {_and(row)}:")
                    self.push()
                self.line(f"for {inner} in T.serial({shape[-1]}):")
                self.push()
                emit_store(idx, checked, skip=row)
                self.pop()
                if row:
                    self.pop()
                self.pop()
                return
            idx = self.loops(shape)
            emit_store(idx, checked)
            self.pop()
        if not conds and user_mask is None:
            nest(False)
        elif tile_ok and user_mask is None:
            self.line(f"if {_and(tile_ok)}:")
            self.push()
            nest(False)
            self.pop()
            self.line("else:")
            self.push()
            nest(True)
            self.pop()
        else:
            nest(True)

    # ------------------------------------------------------------ compute
    def op_dot(self, op: ir.Op) -> None:
        a, b = op.args[0], op.args[1]
        acc = op.args[2] if len(op.args) == 3 else None
        ta, tb = op.attrs["trans_a"], op.attrs["trans_b"]
        M, N = op.result.type.shape
        K = a.type.shape[0] if ta else a.type.shape[1]
        if self.reprs[a].cost > 0:
            self.materialize(a, role="a")
        ra = self.reprs[a]
        rb = self.reprs[b]
        if rb.buffer is not None and not tb and rb.shape == b.type.shape:
            bname = rb.buffer
        elif tb and rb.cost == 0:
            # One row-major copy of a transposed operand per block, shared by its dots (the
            # kernels multiply by K^T and by the state's transpose twice per chunk).
            if b not in self.trans_memo:
                self.trans_memo[b] = self.alloc(f"{b.hint or 'b'}_rows", (K, N), rb.dtype)
                self.transpose_into(self.trans_memo[b], rb, (N, K))
            bname = self.trans_memo[b]
        elif tb and rb.dtype == "float32":
            # A computed operand (e.g. RMS-normalised keys): compute it row-major first, where
            # its loops run along contiguous rows, then transpose the plain buffer in blocks.
            # Computing it straight into the transposed layout reads with a stride of a row.
            src = self.materialize(b, role="bt")
            bname = self.scratch("b_rows", (K, N), rb.dtype)
            self.transpose_into(bname, src, (N, K))
        else:
            # The micro-kernel streams rows of B; give it a row-major [K, N] copy.
            bname = self.scratch("b_rows", (K, N), rb.dtype)
            self.write_tile(bname, (K, N), lambda idx: rb.at([idx[1], idx[0]] if tb else idx))
        mr, nr = _largest_divisor(M, self.mr), _largest_divisor(N, self.nr)
        out = self.accumulates_in_place(op, acc) or self.alloc(op.result.hint or "dot", (M, N), "float32")
        if ra.buffer is None or ra.shape != a.type.shape:
            ra = self.materialize(a, role="a")
        if ra.dtype == "float32" and rb.dtype == "float32":
            # The micro-kernel as a C helper over pointers: gcc keeps the accumulator tile in
            # registers there (3x the rate of the same loops over the program's local arrays).
            fn = self.dot_helper(M, N, K, mr, nr, ta, acc is not None)
            if acc is not None:
                self.write_tile(out, (M, N), lambda idx: self.ex(acc, idx))
            first = "0, 0"
            self.line(f'T.evaluate(T.call_extern("int32", "{fn}", T.address_of({ra.buffer}[{first}]), '
                      f"T.address_of({bname}[{first}]), T.address_of({out}[{first}])))")
            self.reprs[op.result] = buffer_repr(out, (M, N), "float32")
            return
        # Exactly [mr, nr]: gcc keeps a small fixed-size local array in registers.
        accn = self.scratch("acc", (mr, nr), "float32")
        i0, j0 = self.fresh("i0"), self.fresh("j0")
        self.line(f"for {i0}, {j0} in T.grid({M // mr}, {N // nr}):")
        self.push()
        ii, jj, kk = self.fresh("ii"), self.fresh("jj"), self.fresh("kk")
        row, col = f"{i0} * {mr} + {ii}", f"{j0} * {nr} + {jj}"
        init = self.ex(acc, [row, col]) if acc is not None else "T.float32(0)"
        self.line(f"for {ii}, {jj} in T.grid({mr}, {nr}):")
        self.line(f"    {accn}[{ii}, {jj}] = {init}")
        a_el = ra.at([kk, row] if ta else [row, kk])
        b_el = f"{bname}[{kk}, {col}]"
        if a.type.dtype != "float32":
            a_el, b_el = f'T.Cast("float32", {a_el})', f'T.Cast("float32", {b_el})'
        self.line(f"for {kk} in T.serial({K}):")
        self.line(f"    for {ii} in T.unroll({mr}):")
        self.line(f"        for {jj} in T.serial({nr}):")
        self.line(f"            {accn}[{ii}, {jj}] = {accn}[{ii}, {jj}] + {a_el} * {b_el}")
        self.line(f"for {ii}, {jj} in T.grid({mr}, {nr}):")
        self.line(f"    {out}[{row}, {col}] = {accn}[{ii}, {jj}]")
        self.pop()
        self.reprs[op.result] = buffer_repr(out, (M, N), "float32")

    def accumulates_in_place(self, op: ir.Op, acc) -> Optional[str]:
        """The loop-carried buffer a dot may write its result into, or None.

        An online softmax's ``acc = dot(p, v, acc * alpha)`` yields the dot as the carry's next
        value, and the old value's one use is the accumulator's elementwise expression. Writing
        the product into the carried buffer itself saves a tile for the result and the copy
        back into the carry at the end of every trip. Safe when the old value has no other
        reader (one use, feeding the accumulator only) and the accumulator reads the buffer
        only at the element it writes."""
        home = self.carry_homes.get(op.result)
        if acc is None or home is None or self.DIALECT != "cpu":
            return None
        name, arg = home
        if self.uses.get(arg, 0) != 1 or self.reprs[arg].buffer != name:
            return None
        if acc is not arg:
            made_by = self.producer.get(acc)
            if self.uses.get(acc, 0) != 1 or made_by is None or arg not in made_by.args:
                return None
        probe = self.ex(acc, ["_I", "_J"])
        if any(ref != "_I, _J" for ref in re.findall(rf"\b{name}\[([^\]]*)\]", probe)):
            return None
        return name

    def transpose_into(self, dst: str, src, shape: tuple) -> None:
        """``dst[j, i] = src[i, j]`` for a ``shape`` = (R, C) source; float32 buffers go through a
        blocked C helper (a column-order sweep of a row-major tile thrashes L1 when rows are
        a power-of-two apart), anything else through a plain loop nest."""
        R, C = shape
        if src.buffer is None or src.shape != shape or src.dtype != "float32":
            self.write_tile(dst, (C, R), lambda idx: src.at([idx[1], idx[0]]))
            return
        name = f"hola_transpose_{R}x{C}"
        if name not in self.helpers:
            bs = 16
            self.helpers[name] = "\n".join([
                f'extern "C" __attribute__((noinline)) int32_t {name}(float* S, float* D) {{',
                f"  for (int i0 = 0; i0 < {R}; i0 += {bs}) for (int j0 = 0; j0 < {C}; j0 += {bs})",
                f"    for (int j = j0; j < (j0 + {bs} < {C} ? j0 + {bs} : {C}); j++)",
                f"      for (int i = i0; i < (i0 + {bs} < {R} ? i0 + {bs} : {R}); i++)",
                f"        D[j * {R} + i] = S[i * {C} + j];",
                "  return 0;",
                "}",
            ])
        self.line(f'T.evaluate(T.call_extern("int32", "{name}", T.address_of({src.buffer}[0, 0]), '
                  f"T.address_of({dst}[0, 0])))")

    def unary_template(self, op: ir.Op):
        """float32 exp goes through ``hola_expf``: libm's expf is an opaque call that keeps
        every softmax loop scalar; this one inlines and vectorises. A float abs is gcc's
        builtin (TileLang's C codegen has no lowering for ``T.abs`` of a float)."""
        dtype = op.result.type.dtype
        if self.DIALECT == "cpu" and op.name == "exp" and dtype == "float32":
            self.helpers.setdefault("hola_expf", _EXPF)
            return lambda a: f'T.call_extern("float32", "hola_expf", {a})'
        if self.DIALECT == "cpu" and op.name == "abs" and dtype in _FABS:
            return lambda a: f'T.call_extern("{dtype}", "{_FABS[dtype]}", {a})'
        return super().unary_template(op)

    def binary_template(self, op: ir.Op):
        """Masks combine with bitwise ``&``/``|``: TileLang's And/Or are C's short-circuit
        ``&&``/``||``, a branch per element that keeps comparison loops (the selection's
        ranks) scalar; both operands are side-effect-free bools, so the result is the same."""
        if self.DIALECT == "cpu" and op.name in ("and", "or") and all(a.type.dtype == "int1" for a in op.args):
            fn = "T.bitwise_and" if op.name == "and" else "T.bitwise_or"
            return lambda a, b: f"{fn}({a}, {b})"
        return super().binary_template(op)

    def dot_helper(self, M: int, N: int, K: int, mr: int, nr: int, ta: bool, accumulate: bool) -> str:
        """Name of a C micro-kernel C[M, N] (+)= A @ B for float32 row-major tiles (A is [K, M]
        when ``ta``), written once into the prelude. Counted loops over constant bounds and an
        [mr, nr] accumulator are the shape gcc vectorises into a register-blocked FMA loop."""
        name = f"hola_dot_{M}x{N}x{K}_{mr}x{nr}{'_ta' if ta else ''}{'_acc' if accumulate else ''}"
        if name not in self.helpers:
            a = f"A[kk * {M} + i0 * {mr} + ii]" if ta else f"A[(i0 * {mr} + ii) * {K} + kk]"
            init = f"C[(i0 * {mr} + ii) * {N} + j0 * {nr} + jj]" if accumulate else "0.0f"
            self.helpers[name] = "\n".join([
                f'extern "C" __attribute__((noinline)) int32_t {name}(float* A, float* B, float* C) {{',
                f"  float acc[{mr} * {nr}];",
                f"  for (int i0 = 0; i0 < {M // mr}; i0++) for (int j0 = 0; j0 < {N // nr}; j0++) {{",
                f"    for (int ii = 0; ii < {mr}; ii++) for (int jj = 0; jj < {nr}; jj++) acc[ii * {nr} + jj] = {init};",
                f"    for (int kk = 0; kk < {K}; kk++) for (int ii = 0; ii < {mr}; ii++) for (int jj = 0; jj < {nr}; jj++)",
                f"      acc[ii * {nr} + jj] += {a} * B[kk * {N} + j0 * {nr} + jj];",
                f"    for (int ii = 0; ii < {mr}; ii++) for (int jj = 0; jj < {nr}; jj++)",
                f"      C[(i0 * {mr} + ii) * {N} + j0 * {nr} + jj] = acc[ii * {nr} + jj];",
                "  }",
                "  return 0;",
                "}",
            ])
        return name

    def _reduce(self, op: ir.Op, kind: str) -> None:
        x = op.args[0]
        axis = op.attrs["axis"]
        shape = x.type.shape
        out_shape = op.result.type.shape
        dtype = op.result.type.dtype
        name = self.alloc(op.result.hint or kind, out_shape, dtype)
        self.write_tile(name, out_shape, lambda idx: identity_of(kind, dtype))
        lanes = _LANES
        if (kind in ("max", "min") and dtype in ir.FLOAT_DTYPES and len(shape) == 2 and axis == 1
                and shape[1] % lanes == 0 and shape[1] > lanes):
            # gcc will not vectorise a float max/min reduction (NaNs order-dependent), but an
            # elementwise max of LANES partial results along the row is plain SIMD; the
            # partials are folded once per row.
            part = self.scratch("lanes", (lanes,), dtype)
            i, j0, l = self.fresh("i"), self.fresh("j0"), self.fresh("l")
            self.line(f"for {i} in T.serial({shape[0]}):")
            self.push()
            self.line(f"for {l} in T.serial({lanes}):")
            self.line(f"    {part}[{l}] = {identity_of(kind, dtype)}")
            self.line(f"for {j0} in T.serial({shape[1] // lanes}):")
            self.line(f"    for {l} in T.serial({lanes}):")
            val = self.ex(x, [i, f"{j0} * {lanes} + {l}"])
            self.line(f"        {part}[{l}] = T.{kind}({part}[{l}], {val})")
            self.line(f"for {l} in T.serial({lanes}):")
            self.line(f"    {name}[{i}] = T.{kind}({name}[{i}], {part}[{l}])")
            self.pop()
            self.reprs[op.result] = buffer_repr(name, out_shape, dtype)
            return
        idx = self.loops(shape)
        o = [i for d, i in enumerate(idx) if d != axis]
        ref = f"{name}[{', '.join(o)}]" if o else f"{name}[0]"
        val = self.ex(x, idx)
        if kind == "sum":
            self.line(f"{ref} = {ref} + {val}")
        else:
            self.line(f"{ref} = T.{kind}({ref}, {val})")
        self.pop()
        self.reprs[op.result] = buffer_repr(name, out_shape, dtype)

    def op_sum(self, op: ir.Op) -> None:
        self._reduce(op, "sum")

    def op_max(self, op: ir.Op) -> None:
        self._reduce(op, "max")

    def op_min(self, op: ir.Op) -> None:
        self._reduce(op, "min")

    def op_cumsum(self, op: ir.Op) -> None:
        x = op.args[0]
        axis = op.attrs["axis"]
        shape = x.type.shape
        name = self.alloc(op.result.hint or "cumsum", shape, x.type.dtype)
        self.write_tile(name, shape, lambda idx: self.ex(x, idx))
        idx = [self.fresh("i") for _ in shape]
        for d, (i, n) in enumerate(zip(idx, shape)):
            self.line(f"for {i} in T.serial({1 if d == axis else 0}, {n}):")
            self.push()
        prev = list(idx)
        prev[axis] = f"{idx[axis]} - 1"
        self.line(f"{name}[{', '.join(idx)}] = {name}[{', '.join(idx)}] + {name}[{', '.join(prev)}]")
        for _ in shape:
            self.pop()
        self.reprs[op.result] = buffer_repr(name, shape, x.type.dtype)

    def op_unit_lower_inverse(self, op: ir.Op) -> None:
        a = op.args[0]
        n = a.type.shape[0]
        if self.reprs[a].cost > 0:
            self.materialize(a)
        dtype = op.result.type.dtype
        x = self.alloc(op.result.hint or "inv", (n, n), dtype)
        i, j, m = self.fresh("i"), self.fresh("j"), self.fresh("m")
        one, zero = literal(1, dtype), literal(0, dtype)
        # Forward substitution, row by row: X_i = e_i - sum_{m < i} L_im X_m. Row m of X is zero
        # right of column m, so sweeping all n columns adds exact zeros; a fixed-length row is
        # one clean SIMD loop where a triangular one is mostly remainder handling.
        self.line(f"for {i} in T.serial({n}):")
        self.push()
        self.line(f"for {j} in T.serial({n}):")
        self.line(f"    {x}[{i}, {j}] = T.if_then_else({i} == {j}, {one}, {zero})")
        self.line(f"for {m} in T.serial({i}):")
        self.line(f"    for {j} in T.serial({n}):")
        self.line(f"        {x}[{i}, {j}] = {x}[{i}, {j}] - {self.ex(a, [i, m])} * {x}[{m}, {j}]")
        self.pop()
        self.reprs[op.result] = buffer_repr(x, (n, n), dtype)

    # ------------------------------------------------------------ control flow
    def op_loop(self, op: ir.Op) -> None:
        body = op.regions[0]
        start, stop, step = (self.ex(a) for a in op.args[:3])
        carried = []
        for arg, init in zip(body.args[1:], op.args[3:]):
            ri = self.reprs[init]
            if (ri.buffer is not None and self.uses.get(init, 0) == 1 and ri.shape == arg.type.shape
                    and ri.buffer not in carried and ri.dtype == arg.type.dtype
                    and ri.buffer not in self.scratch_pool.values()):
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
            (hazards if r.reads & written else direct).append((name, arg, y))
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

    def module(self) -> str:
        k = self.kernel
        sig, order, dyn = self.bind_params()
        ng = len(k.grid)
        sig += [f"grid_{d}: T.int32" for d in range(ng)] + ["pid_lo: T.int32", "pid_hi: T.int32"]
        # The program's grid position lives in a local array, not in let-bound expressions:
        # TileLang inlines those at every use, and a division by a runtime grid extent inside a
        # masked load cannot be hoisted out of the branch (it may trap), so it ran per element.
        self.grid_pos = self.alloc("grid_pos", (ng,), "int32")
        self.line("for pid in T.serial(pid_lo, pid_hi):")
        self.push()
        for d in range(ng):
            inner = " * ".join(f"grid_{e}" for e in range(d + 1, ng))
            q = f"T.truncdiv(pid, {inner})" if inner else "pid"
            self.line(f"{self.grid_pos}[{d}] = T.truncmod({q}, grid_{d})" if d else f"{self.grid_pos}[0] = {q}")
        self.block(k.body)
        body_lines = self.lines
        fname = kernel_function_name(k)
        head = [
            f'"""Generated by hola_dsl.backends.tilelang.lower_cpu (emitter {EMITTER_VERSION}) from kernel {k.name!r}.',
            "",
            f"IR hash {k.hash()}; schedule {schedule_repr(self.schedule)}; target {doc_text(self.target)}.",
            "Compile with target='c' and COMPILE_FLAGS; run programs pid_lo..pid_hi of the flattened grid.",
            '"""',
            "import tilelang.cpu.language as T",
            "",
            f"PARAMS = {order!r}    # prim_func parameters before the grid extents",
            f"GRID_RANK = {ng}",
            f"COMPILE_FLAGS = {list(COMPILE_FLAGS)!r}",
            f"PASS_CONFIGS = {PASS_CONFIGS!r}",
            "",
            "# C helpers the kernel calls: dot micro-kernels (register-blocked, one per dot shape),",
            "# blocked transposes, a vectorisable expf.",
            'PRELUDE = r"""',
            *[h for h in self.helpers.values()],
            '"""',
            "",
            "",
            "def build():",
            *[f"    {d}" for d in dyn],
            "",
            "    @T.prim_func",
            f"    def {fname}(",
            *[f"        {s}," for s in sig],
            "    ):",
            "        with T.Kernel(1, prelude=PRELUDE) as _one:",
            *[f"            {a}" for a in self.allocs],
        ]
        return "\n".join(head + body_lines + ["", f"    return {fname}", ""])


def emit(kernel: ir.Kernel, schedule: dict, target: str = "cpu") -> str:
    """The TileLang CPU-dialect source of ``kernel`` under ``schedule`` (``cpu_mr``, ``cpu_nr``)."""
    return CpuEmitter(kernel, schedule, target).module()
