"""Generated TileLang sources on disk, compiled and launched.

Sources are written to ``$HOLA_CACHE_DIR/tilelang`` (default ``~/.cache/hola-dsl/tilelang``),
named by a hash of the IR, the schedule, the target, the dialect and the tool versions, exactly
like the Triton sources (``hola_dsl.backends.triton.runtime``): a change to any of them makes a new file.
TileLang's ``T.prim_func`` reads its function's source, hence real files rather than ``exec``.

CPU launches (``target="c"``) run the flattened grid ``[0, programs)`` on torch's intra-op
thread count (or a config's ``cpu_threads``): by default as an OpenMP parallel region on
torch's own libgomp team (``cpu_parallel``, which says why), else split into
contiguous ranges over Python threads (the compiled call releases the GIL).
``HOLA_CPU_POOL=python`` forces the latter.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Optional

import torch

from hola_dsl import ir, source_cache
from hola_dsl.backends import codegen
from hola_dsl.backends.tilelang import c_helpers, cpu_parallel, lower_common, lower_cpu, lower_cuda
from schedules import targets

_MODULES: dict[str, Any] = {}
_COMPILED: dict[str, Any] = {}
_LOCK = threading.Lock()
# Programs hold every tile in local arrays on their thread's stack. Host threads get at least
# this much; a program needing more gets a thread sized to it.
_THREAD_STACK = 64 << 20
# A serial launch runs on the calling thread only when its program needs at most this: the
# caller's stack is typically 8 MiB (the main thread's rlimit, glibc's default for others) and
# the Python frames below us need their share. Bigger programs (a scan at chunk 1024 holds
# about 28 MB of tiles) run on one host thread with the stack they need.
_CALLER_STACK = 2 << 20
# Tiles beyond this per program are refused with an error rather than a thread whose stack
# mapping may fail or thrash (a scan chunk of 8192 would want over 1.5 GB).
MAX_PROGRAM_STACK = 1 << 30


def cache_dir() -> Path:
    return source_cache.cache_dir("tilelang")


# The emitter of each dialect, and every module whose source shapes what it writes (the source
# cache key hashes them).
_LOWERINGS = {"cpu": lower_cpu, "cuda": lower_cuda}
_EMITTER_SOURCES = {"cpu": (codegen, lower_common, c_helpers, lower_cpu), "cuda": (codegen, lower_common, lower_cuda)}


def _lowering(dialect: str):
    if dialect not in _LOWERINGS:
        raise ValueError(f"dialect: expected 'cpu' or 'cuda', got {dialect!r}")
    return _LOWERINGS[dialect]


def cpu_target() -> str:
    """The CPU the C dialect is compiled for (-march=native makes the code CPU-specific)."""
    return f"cpu:{targets.cpu_model()}"


def tool_versions(dialect: str) -> dict[str, str]:
    """Versions that change generated code: tilelang, torch, and the dialect's emitter sources."""
    import tilelang
    _lowering(dialect)
    return {"tilelang": tilelang.__version__, "torch": torch.__version__,
            "emitter": source_cache.modules_hash(*_EMITTER_SOURCES[dialect]), "dialect": dialect}


def source_key(kernel: ir.Kernel, schedule: dict, target: str, dialect: str) -> str:
    payload = json.dumps({"ir": ir.format_kernel(kernel, locs=False), "schedule": schedule, "target": target,
                          "versions": tool_versions(dialect)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def emit(kernel: ir.Kernel, schedule: dict, target: str, dialect: str) -> str:
    """The generated TileLang source text (not written anywhere)."""
    return _lowering(dialect).emit(kernel, schedule, target)


def source_path(kernel: ir.Kernel, schedule: dict, target: str, dialect: str) -> Path:
    """Write the generated source (if not already there) and return its path."""
    path = cache_dir() / f"{kernel.name}_{dialect}_{source_key(kernel, schedule, target, dialect)}.py"
    return source_cache.write_once(path, lambda: emit(kernel, schedule, target, dialect))


def load(kernel: ir.Kernel, schedule: dict, target: str, dialect: str):
    """The generated module (imported once per process)."""
    path = source_path(kernel, schedule, target, dialect)
    key = str(path)
    with _LOCK:
        if key not in _MODULES:
            _MODULES[key] = source_cache.import_file(path, f"hola_generated_{path.stem}")
        return _MODULES[key]


def code_schedule(schedule: dict) -> dict:
    """The part of a schedule that shapes the generated source: launch settings (a thread count,
    ``schedules.tilelang.LAUNCH``) are left out, so a thread sweep does not recompile and a
    launch setting never appears in a source that is imported."""
    from schedules.tilelang import LAUNCH
    launch_names = {s.name for s in LAUNCH}
    return {k: v for k, v in schedule.items() if k not in launch_names}


# (id of the IR kernel, schedule) -> (kernel, module, compiled, launcher or None, stack bytes a
# program needs or None): a launch costs a dict lookup, not a hash of the IR's text.
_LAUNCH_CACHE: dict[tuple, tuple] = {}


def compiled_cpu(kernel: ir.Kernel, schedule: dict):
    """(generated module, compiled C kernel) for the CPU dialect (compiled once per process;
    TileLang's own disk cache makes later processes fast)."""
    import tilelang

    # TileLang logs two INFO lines per compile; during a tuning run they bury the progress bar.
    if not os.environ.get("HOLA_VERBOSE"):
        logging.getLogger("tilelang").setLevel(logging.WARNING)
    schedule = code_schedule(schedule)
    target = cpu_target()
    module = load(kernel, schedule, target, "cpu")
    key = module.__file__
    with _LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = tilelang.compile(module.build(), target="c", execution_backend="cython",
                                              compile_flags=list(module.COMPILE_FLAGS),
                                              pass_configs=dict(module.PASS_CONFIGS))
        return module, _COMPILED[key]


def _prepared_cpu(kernel: ir.Kernel, schedule: dict) -> tuple:
    """(module, compiled, OpenMP launcher or None, a program's stack bytes or None) for a kernel
    and schedule, cached."""
    key = (id(kernel), json.dumps(code_schedule(schedule), sort_keys=True, default=str))
    hit = _LAUNCH_CACHE.get(key)
    if hit is not None and hit[0] is kernel:
        return hit[1:]
    module, compiled = compiled_cpu(kernel, schedule)
    launcher = cpu_parallel.launcher(compiled)
    need = cpu_parallel.program_stack(compiled)
    with _LOCK:
        _LAUNCH_CACHE[key] = (kernel, module, compiled, launcher, need)
    return module, compiled, launcher, need


def thread_stack(kernel: ir.Kernel, schedule: dict, need: Optional[int]) -> int:
    """The stack (bytes) a host thread running programs of ``need`` stack bytes gets; a
    ValueError naming the kernel and its schedule when no thread should hold that much."""
    if need is None:
        return _THREAD_STACK
    if need > MAX_PROGRAM_STACK:
        raise ValueError(
            f"{kernel.name}: a program of schedule {code_schedule(schedule)} keeps {need / 2**20:.0f} MiB "
            f"of tiles on its stack (the TileLang C dialect holds every tile in local arrays); at most "
            f"{MAX_PROGRAM_STACK / 2**20:.0f} MiB is allowed: choose smaller tiles (chunk_size, BV, BQ, BKV, BC)")
    return max(_THREAD_STACK, -(-need // (1 << 20)) << 20)


# How CPU launches ran in this process ("serial", "omp", "python"): diagnostics for `hola bench`.
LAUNCH_MODES: collections.Counter = collections.Counter()


def cpu_pool() -> str:
    """How multi-thread CPU launches run: "omp" (default) or "python" (``HOLA_CPU_POOL``)."""
    pool = os.environ.get("HOLA_CPU_POOL", "omp").strip().lower() or "omp"
    if pool not in ("omp", "python"):
        raise ValueError(f"HOLA_CPU_POOL: expected 'omp' or 'python', got {pool!r}")
    return pool


def _run_threads(fn, ranges: list[tuple[int, int]], stack: int = _THREAD_STACK) -> None:
    """``fn(lo, hi)`` for each range, each on a host thread with ``stack`` bytes of stack."""
    errors: list[BaseException] = []

    def work(lo: int, hi: int) -> None:
        try:
            fn(lo, hi)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
    with _LOCK:
        old = threading.stack_size(stack)
        try:
            threads = [threading.Thread(target=work, args=r, daemon=True) for r in ranges]
            for t in threads:
                t.start()
        finally:
            threading.stack_size(old)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def split(programs: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges covering 0..programs in at most ``parts`` near-equal pieces."""
    parts = max(1, min(parts, programs))
    step = programs / parts
    bounds = [round(i * step) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i + 1] > bounds[i]]


def launch_cpu(kernel: ir.Kernel, schedule: dict, args: dict[str, Any], threads: Optional[int] = None,
               pool: Optional[str] = None) -> str:
    """Run ``kernel`` on CPU tensors ``args`` ({param: tensor or number}); outputs in place.

    ``threads`` defaults to the config's ``cpu_threads``, else ``torch.get_num_threads()``;
    ``pool`` ("omp" or "python") to :func:`cpu_pool`. Returns how it ran: "serial", "omp" or "python"."""
    module, compiled, launcher, need = _prepared_cpu(kernel, schedule)
    stack = thread_stack(kernel, schedule, need)
    sizes = kernel.sizes_of(args)
    grid = kernel.grid_extents(sizes)
    programs = math.prod(grid)
    if programs == 0:
        return "serial"
    tensors = {}
    for name in module.PARAMS:
        x = args[name]
        if isinstance(x, torch.Tensor) and not x.is_contiguous():
            if kernel.param(name).kind == "out" and x.stride() and 0 not in x.stride():
                raise ValueError(f"{kernel.name}: output {name} must be contiguous")
            x = x.contiguous()           # e.g. a stride-0 stand-in for an absent optional input
        tensors[name] = x
    call = [tensors[name] for name in module.PARAMS] + list(grid)
    requested = schedule.get("cpu_threads")
    if requested is not None:
        from schedules.tilelang import CPU_THREADS
        if (reason := CPU_THREADS.check(requested)) is not None:
            raise ValueError(reason)
    threads = int(threads or requested or torch.get_num_threads())
    threads = max(1, min(threads, os.cpu_count() or 1, programs))
    if threads == 1:
        if need is not None and need <= _CALLER_STACK:
            compiled(*call, 0, programs)
        else:
            _run_threads(lambda lo, hi: compiled(*call, lo, hi), [(0, programs)], stack)
        mode = "serial"
    elif (pool or cpu_pool()) == "omp" and launcher is not None and launcher.fits(threads):
        values = {**sizes, **tensors, **{f"grid_{i}": n for i, n in enumerate(grid)}}
        # Several chunks per thread: the dynamic schedule evens out programs of unequal cost
        # (causal cache-read tiles) without a dispatch per tiny program.
        launcher.run(values, programs, threads, chunk=max(1, programs // (threads * 8)))
        mode = "omp"
    else:
        _run_threads(lambda lo, hi: compiled(*call, lo, hi), split(programs, threads), stack)
        mode = "python"
    LAUNCH_MODES[mode] += 1
    return mode


# Where a fast launch reads each parameter of TileLang's C ``call``.
_PTR, _SCALAR, _SIZE, _GRID, _LO, _HI = range(6)
_CPU_COUNT = os.cpu_count() or 1
_FAST: dict[tuple, tuple] = {}


def cpu_fast_launcher(kernel: ir.Kernel, schedule: dict):
    """A launcher ``run(args)`` of ``kernel`` for callers that launch it many times on arguments
    they have checked (hola_dsl.decode: one launch per token): no size checks, no contiguity
    copies, the C ``call`` through ctypes (TileLang's own adapter spends hundreds of
    microseconds per call). Tensors must be dense, of the traced dtypes and consistent sizes.
    Falls back to :func:`launch_cpu` where TileLang's ``call`` or the OpenMP shim is missing or
    a program needs more stack than the caller's thread has."""
    import ctypes

    key = (id(kernel), json.dumps(code_schedule(schedule), sort_keys=True, default=str),
           schedule.get("cpu_threads"))
    hit = _FAST.get(key)
    if hit is not None and hit[0] is kernel:
        return hit[1]
    module, compiled, launcher, need = _prepared_cpu(kernel, schedule)
    if launcher is None or need is None or need > _CALLER_STACK:
        run = lambda args: launch_cpu(kernel, schedule, args)
        _FAST[key] = (kernel, run)
        return run
    from hola_dsl.backends.tilelang.cpu_parallel import _C_TYPES
    params = launcher.shim.params
    fn = ctypes.CFUNCTYPE(ctypes.c_int32, *(_C_TYPES[p.ctype] for p in params))(launcher.fn)
    size_of: dict[str, tuple[str, int]] = {}
    for p in kernel.tensors():
        for axis, d in enumerate(p.value.type.dims):
            if d not in kernel.consts:
                size_of.setdefault(d, (p.name, axis))
    kinds = {p.name: p.kind for p in kernel.params}
    plan = []
    for p in params:
        if p.name == "pid_lo":
            plan.append((_LO, None))
        elif p.name == "pid_hi":
            plan.append((_HI, None))
        elif p.name.startswith("grid_") and p.name not in kinds:
            plan.append((_GRID, int(p.name[5:])))
        elif kinds.get(p.name) == "size":
            plan.append((_SIZE, p.name))
        elif p.ctype.endswith("*"):
            plan.append((_PTR, p.name))
        else:
            plan.append((_SCALAR, p.name))
    grids: dict[tuple, tuple] = {}
    requested = schedule.get("cpu_threads")

    def run(args) -> None:
        sizes = {d: args[n].shape[a] for d, (n, a) in size_of.items()}
        sig = tuple(sizes.values())
        grid = grids.get(sig)
        if grid is None:
            grid = grids[sig] = tuple(kernel.grid_extents(sizes))
        programs = math.prod(grid)
        if programs == 0:
            return
        vals = []
        for kind, what in plan:
            if kind == _PTR:
                vals.append(args[what].data_ptr())
            elif kind == _SCALAR:
                vals.append(args[what])
            elif kind == _SIZE:
                vals.append(sizes[what])
            elif kind == _GRID:
                vals.append(grid[what])
            else:
                vals.append(0 if kind == _LO else programs)
        threads = max(1, min(int(requested or torch.get_num_threads()), _CPU_COUNT, programs))
        if threads > 1 and launcher.fits(threads):
            outer = [v for (kind, _), v in zip(plan, vals) if kind not in (_LO, _HI)]
            err = launcher.shim.lib.hola_run(launcher.fn, *outer, programs, threads,
                                             max(1, programs // (threads * 8)))
        else:
            err = fn(*vals)
        if err != 0:
            raise RuntimeError(f"{kernel.name}: TileLang C kernel returned error code {err}")

    _FAST[key] = (kernel, run)
    return run


def compiled_cuda(kernel: ir.Kernel, schedule: dict, arch: str):
    """(generated module, compiled CUDA kernel) for the CUDA dialect on this process's GPU."""
    import tilelang

    module = load(kernel, schedule, arch, "cuda")
    key = module.__file__
    with _LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = tilelang.compile(module.build(), target="cuda",
                                              pass_configs=dict(module.PASS_CONFIGS))
        return module, _COMPILED[key]


def launch_cuda(kernel: ir.Kernel, schedule: dict, args: dict[str, Any]) -> None:
    """Run ``kernel`` on CUDA tensors ``args``: one thread block per program of the grid."""
    device = next(x.device for x in args.values() if isinstance(x, torch.Tensor))
    module, compiled = compiled_cuda(kernel, code_schedule(schedule), targets.arch_of(device))
    sizes = kernel.sizes_of(args)
    grid = kernel.grid_extents(sizes)
    if 0 in grid:
        return
    call = []
    for name in module.PARAMS:
        x = args[name]
        call.append(x.contiguous() if isinstance(x, torch.Tensor) and not x.is_contiguous() else x)
    with torch.cuda.device(device):
        compiled(*call, *grid)
