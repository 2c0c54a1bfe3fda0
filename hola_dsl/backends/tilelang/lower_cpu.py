"""TileLang CPU-dialect lowering: IR + schedule -> a readable ``tilelang.cpu.language`` source.
A sibling of ``lower_cuda`` over the shared walk of ``lower_common``.

The generated module defines ``build()`` returning a ``T.prim_func`` for ``target="c"``; the C
it compiles to is plain loops over local arrays, written so gcc's ``-O3 -march=native`` turns
them into SIMD code:

* the grid is flattened into one program index ``pid`` in ``[pid_lo, pid_hi)`` so the host can
  hand disjoint ranges to several threads (TileLang's C path has no threads of its own);
* every tile lives in a local array; elementwise chains are fused into the loop that consumes
  them (see ``tilelang_common``);
* ``dot`` is a register-blocked micro-kernel (C text in ``c_helpers``, as are the blocked
  transposes and a vectorisable expf): an ``MR x NR`` accumulator stays in registers
  while the k loop streams a row-major ``[K, NR]`` panel of B, the innermost loop runs over
  contiguous columns (vectorisable); ``MR`` and ``NR`` are schedule knobs (``cpu_mr``,
  ``cpu_nr``). A transposed B is first copied to row-major, which is O(K N) against O(M N K);
* loads and stores of slices get an unmasked fast path when the whole tile is in range.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from hola_dsl import ir
from hola_dsl.backends.codegen import checked
from hola_dsl.backends.tilelang import c_helpers
from hola_dsl.backends.tilelang.lower_common import (
    BaseEmitter, EmitError, and_all, buffer_repr, identity_of, literal,
)

__all__ = ["emit", "EmitError", "COMPILE_FLAGS", "PASS_CONFIGS"]

# -O3 -march=native is what makes the C fast (15x over the default); reassociation lets gcc
# vectorise row reductions. No -ffinite-math-only: the kernels rely on -inf (masked logits).
COMPILE_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math",
                 "-fassociative-math", "-fno-signed-zeros")
# Bounds are handled by the emitter (masks of SPEC'd loads); TileLang's own guard on every
# global access would block vectorisation.
PASS_CONFIGS = {"tl.disable_safe_memory_legalize": True}

# Partial results per row of a max/min reduction (one AVX-512 register of float32).
_LANES = 16


def _largest_divisor(n: int, cap: int) -> int:
    d = max(1, min(cap, n))
    while n % d:
        d -= 1
    return d


class CpuEmitter(BaseEmitter):
    DIALECT = "cpu"

    def __init__(self, kernel: ir.Kernel, schedule: dict, target: str):
        super().__init__(kernel, schedule, target)
        self.helpers: dict[str, str] = {}      # name -> C text of the prelude (``c_helpers``)
        self.mr = checked(self.schedule.get("cpu_mr", 4), (int,), "cpu_mr")
        self.nr = checked(self.schedule.get("cpu_nr", 32), (int,), "cpu_nr")
        self.grid_pos: str = ""               # set by module(): the program's grid position
        self.producer = {r: op for op in ir.walk(kernel.body) for r in op.results}


    # ------------------------------------------------------------ storage, loops, grid
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

    def grid_position(self, axis: int) -> str:
        return f"{self.grid_pos}[{axis}]"

    # ------------------------------------------------------------ memory: row-wise conditions
    def checked_load(self, op: ir.Op, shape: tuple, name: str, write, user_mask) -> None:
        if len(shape) >= 2:
            self._rows_checked(op, shape, name, user_mask)
        else:
            super().checked_load(op, shape, name, write, user_mask)

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
        value = f"T.if_then_else({and_all(rest)}, {elem}, {other})" if rest else elem
        dst = f"{name}[{', '.join(idx)}]"
        if row:
            self.line(f"if {and_all(row)}:")
            self.line(f"    for {inner} in T.serial({shape[-1]}):")
            self.line(f"        {dst} = {value}")
            self.line("else:")
            self.line(f"    for {inner} in T.serial({shape[-1]}):")
            self.line(f"        {dst} = {other}")
        else:
            self.line(f"for {inner} in T.serial({shape[-1]}):")
            self.line(f"    {dst} = {value}")
        self.pop()

    def checked_store(self, op: ir.Op, value: ir.Value, user_mask) -> None:
        """Conditions that do not involve the innermost index (row masks, row bounds) are tested
        once per row: a branch per element keeps the row loop scalar."""
        shape = value.type.shape
        if len(shape) < 2:
            super().checked_store(op, value, user_mask)
            return
        idx, _, row, _ = self._row_loops(op, shape, user_mask)
        inner = idx[-1]
        if row:
            self.line(f"if {and_all(row)}:")
            self.push()
        self.line(f"for {inner} in T.serial({shape[-1]}):")
        self.push()
        self.store_element(op, value, user_mask, idx, True, skip=row)
        self.pop()
        if row:
            self.pop()
        self.pop()

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
            fn = self.helper(*c_helpers.dot(M, N, K, mr, nr, ta, acc is not None))
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
        if acc is None or home is None:
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
        blocked C helper (``c_helpers.transpose``), anything else through a plain loop nest."""
        R, C = shape
        if src.buffer is None or src.shape != shape or src.dtype != "float32":
            self.write_tile(dst, (C, R), lambda idx: src.at([idx[1], idx[0]]))
            return
        name = self.helper(*c_helpers.transpose(R, C))
        self.line(f'T.evaluate(T.call_extern("int32", "{name}", T.address_of({src.buffer}[0, 0]), '
                  f"T.address_of({dst}[0, 0])))")

    def helper(self, name: str, text: str) -> str:
        """``name`` of a C helper, its ``text`` written once into the prelude."""
        self.helpers.setdefault(name, text)
        return name

    def unary_template(self, op: ir.Op):
        """float32 exp goes through ``hola_expf``: libm's expf is an opaque call that keeps
        every softmax loop scalar; this one inlines and vectorises. A float abs is gcc's
        builtin (TileLang's C codegen has no lowering for ``T.abs`` of a float)."""
        dtype = op.result.type.dtype
        if op.name == "exp" and dtype == "float32":
            name = self.helper(c_helpers.EXPF_NAME, c_helpers.EXPF)
            return lambda a: f'T.call_extern("float32", "{name}", {a})'
        if op.name == "abs" and dtype in c_helpers.FABS:
            return lambda a: f'T.call_extern("{dtype}", "{c_helpers.FABS[dtype]}", {a})'
        return super().unary_template(op)

    def binary_template(self, op: ir.Op):
        """Masks combine with bitwise ``&``/``|``: TileLang's And/Or are C's short-circuit
        ``&&``/``||``, a branch per element that keeps comparison loops (the selection's
        ranks) scalar; both operands are side-effect-free bools, so the result is the same."""
        if op.name in ("and", "or") and all(a.type.dtype == "int1" for a in op.args):
            fn = "T.bitwise_and" if op.name == "and" else "T.bitwise_or"
            return lambda a, b: f"{fn}({a}, {b})"
        return super().binary_template(op)

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

    # ------------------------------------------------------------ the module
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
        settings = [
            f"COMPILE_FLAGS = {list(COMPILE_FLAGS)!r}",
            f"PASS_CONFIGS = {PASS_CONFIGS!r}",
            "",
            "# C helpers the kernel calls: dot micro-kernels (register-blocked, one per dot shape),",
            "# blocked transposes, a vectorisable expf.",
            'PRELUDE = r"""',
            *self.helpers.values(),
            '"""',
            "",
        ]
        return self.module_text(
            order, sig, dyn, "Compile with target='c' and COMPILE_FLAGS; run programs pid_lo..pid_hi of the flattened grid.",
            "tilelang.cpu.language", settings, "with T.Kernel(1, prelude=PRELUDE) as _one:")


def emit(kernel: ir.Kernel, schedule: dict, target: str = "cpu") -> str:
    """The TileLang CPU-dialect source of ``kernel`` under ``schedule`` (``cpu_mr``, ``cpu_nr``)."""
    return CpuEmitter(kernel, schedule, target).module()
