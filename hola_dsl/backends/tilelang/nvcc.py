"""Cross-architecture build of TileLang CUDA-dialect kernels without a GPU.

TileLang lowers a CUDA-dialect ``PrimFunc`` to CUDA C++ for a named architecture on any machine
(``enable_device_compile=False``); nvcc then compiles that source to a cubin, and ptxas's verbose
report gives registers, spills and static shared memory. Dynamic shared memory (where TileLang
puts its tiles) and the block size come from the lowered device function's attributes. Nothing
here runs a kernel, so this works where no GPU exists; where nvcc is missing, ``find_nvcc``
returns None and callers say so and skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from hola_dsl import kernels, source_cache, spec
from hola_dsl.backends.builds import BuildResult, each_kernel
from hola_dsl.backends.tilelang import runtime, schedule
from schedules import targets
from schedules.kernels import KERNELS

_NVCC_CANDIDATES = ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc", "/opt/cuda/bin/nvcc")

# Flags TileLang's own CUDA build uses for its templates (C++20, silence template warnings).
_NVCC_FLAGS = ("-std=c++20", "-O3", "-w", "-Xcudafe", "--diag_suppress=177", "--use_fast_math")


def find_nvcc() -> Optional[str]:
    """Path of an nvcc executable (``$NVCC``, then PATH, then the usual install places), or None."""
    env = os.environ.get("NVCC")
    if env and Path(env).is_file():
        return env
    found = shutil.which("nvcc")
    if found:
        return found
    return next((p for p in _NVCC_CANDIDATES if Path(p).is_file()), None)


@functools.lru_cache(maxsize=None)
def nvcc_version(nvcc: Optional[str] = None) -> Optional[str]:
    """nvcc's release string ("13.0, V13.0.88"), or None when nvcc is missing."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([^\n]+)", out)
    lines = out.strip().splitlines()
    return m.group(1).strip() if m else (lines[-1] if lines else "unknown version")


@dataclass
class LoweredCuda:
    """A kernel lowered to CUDA C++ for one ``arch``: the source and its launch facts."""

    arch: str
    source: str
    entry: str                      # name of the __global__ function
    threads: int                    # threads per block
    dynamic_smem: int               # bytes of dynamic shared memory per block
    grid: dict = field(default_factory=dict)   # blockIdx.* extents (symbolic ones as text)
    warnings: list = field(default_factory=list)   # TileLang/TVM warning lines logged while lowering

    def sync_problems(self) -> list[str]:
        """Signs of a race or a lost optimisation in this lowering: TileLang's warnings that it
        could not place a barrier or vectorise a loop, barriers in thread-dependent control flow,
        single-thread sections writing shared memory. Empty when clean."""
        return ([_alarm(w) for w in self.warnings if any(s in w for s in LOWERING_ALARMS)]
                + barrier_problems(self.source, self.threads) + single_thread_shared_writes(self.source))


# TileLang warnings that mean the generated kernel races or lost a vectorisation.
LOWERING_ALARMS = ("[ThreadSync]", "lowered as a serial loop")


def _alarm(warning: str) -> str:
    """A TileLang warning shortened to what a table row can hold (the hoisting warning's
    condition is its useful part)."""
    text = warning[warning.find("Warning"):]
    if "[ThreadSync]" in text and "Condition:" in text:
        return f"TileLang ThreadSync could not place a barrier inside `if ({text.rsplit('Condition:', 1)[1].strip()})`"
    return text


@dataclass
class CubinReport:
    """What nvcc/ptxas say about one kernel built for one architecture (sizes in bytes)."""

    arch: str
    entry: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    static_smem: int
    dynamic_smem: int
    threads: int
    cubin: Path
    seconds: float                  # lowering + nvcc wall time
    sync_problems: list = field(default_factory=list)   # see LoweredCuda.sync_problems

    @property
    def smem(self) -> int:
        """Total shared memory per block (static + dynamic)."""
        return self.static_smem + self.dynamic_smem


class NvccError(RuntimeError):
    """nvcc failed; the message carries the command and the compiler's last lines."""


@contextlib.contextmanager
def native_stderr(sink: list):
    """Capture what native code writes to file descriptor 2 while the block runs (TVM's C++
    logging, which Python's sys.stderr never sees), append it to ``sink`` as one string, and
    write it on to the original stderr so it is still shown."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield sink
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sink.append(text)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


def _warning_lines(text: str) -> list[str]:
    """The warning lines of a TVM/TileLang log ("[hh:mm:ss] file:line: Warning: ...")."""
    return [ln.strip() for ln in text.splitlines() if "Warning" in ln]


def lower_cuda(func, arch: str, pass_configs: Optional[dict] = None) -> LoweredCuda:
    """Lower a TileLang CUDA-dialect ``func`` (a ``tvm.tirx.PrimFunc``) to CUDA C++ for ``arch``
    ("sm_80", "sm_90a", ...) without compiling it and without needing a GPU. ``pass_configs``
    are TileLang pass options (e.g. the generated module's PASS_CONFIGS)."""
    import tilelang
    from tvm.target import Target

    targets.check("tilelang", arch, "arch", gpu_only=True)
    target = Target({"kind": "cuda", "arch": arch})
    log: list = []
    with native_stderr(log), tilelang.transform.PassContext(opt_level=3, config=dict(pass_configs or {})), target:
        artifact = tilelang.lower(func, target=target, enable_device_compile=False)
    entries = [
        (gv.name_hint, fn.attrs) for gv, fn in artifact.device_mod.functions.items()
        if fn.attrs is not None and "thread_extent" in fn.attrs
    ]
    if not entries:
        raise RuntimeError(f"lowering for {arch} produced no device kernel")
    entry, attrs = entries[0]
    extent = {str(k): v for k, v in attrs["thread_extent"].items()}
    threads = 1
    for axis in ("threadIdx.x", "threadIdx.y", "threadIdx.z"):
        if axis in extent:
            threads *= int(extent[axis])
    # Plain Python values only (TVM's String objects are not safe to copy or pickle).
    grid = {k: (int(v) if hasattr(v, "value") or isinstance(v, int) else str(v).encode().decode())
            for k, v in extent.items() if k.startswith("blockIdx")}
    dyn = int(attrs["dyn_shared_memory_buf"]) if "dyn_shared_memory_buf" in attrs else 0
    return LoweredCuda(arch=arch, source=str(artifact.kernel_source), entry=str(entry).encode().decode(),
                       threads=threads, dynamic_smem=dyn, grid=grid, warnings=_warning_lines("".join(log)))


# ---------------------------------------------------------------- barrier placement, statically
_NOT_CODE = re.compile(r"/\*.*?\*/|//[^\n]*|^[ \t]*#[^\n]*", re.S | re.M)   # comments, preprocessor lines
_BARRIER = re.compile(r"__syncthreads\s*\(\s*\)|__sync_thread_partial\s*\(\s*\d+\s*,\s*(\d+)\s*\)")
_CONTROL = re.compile(r"(else\s+if|if|else|for|while|switch)\b")
# The guard TileLang puts around a loop with fewer iterations than threads: the first N threads.
_FIRST_N = re.compile(r"^\(*\s*\(int\)\s*threadIdx\.x\s*\)\s*<\s*(\d+)\s*\)*$")


@dataclass
class _Scope:
    """One open brace of the source: the control statement that opened it."""

    kind: str           # "if", "else if", "else", "for", "while", "switch" or "" (a plain block)
    cond: str           # its parenthesised condition ("" for else and plain blocks)
    line: int
    per_thread: bool    # whether the threads of a block may go different ways here

    def __str__(self) -> str:
        return f"`{self.kind} {self.cond}`".replace(" `", "`").strip() + f" (line {self.line})"


def _control(header: str, line: int, closed_chain: list) -> _Scope:
    """The scope a ``header {`` opens; ``closed_chain`` holds the if/else-if conditions just
    closed at this depth (an ``else`` goes the way those conditions send it)."""
    m = _CONTROL.match(header)
    if not m:
        return _Scope("", "", line, False)
    kind = " ".join(m.group(1).split())
    cond = header[m.end():].strip() if kind != "else" else ""
    per_thread = "threadIdx" in cond
    if kind.startswith("else"):
        per_thread = per_thread or any("threadIdx" in c for c in closed_chain)
    return _Scope(kind, cond, line, per_thread)


def barrier_problems(source: str, threads: Optional[int] = None) -> list[str]:
    """Barriers in generated CUDA ``source`` that not every thread meant to wait reaches.

    ``__syncthreads()`` must sit in control flow every thread of the block takes the same way:
    never inside an ``if``/``else``/loop whose condition reads ``threadIdx`` (the threads that
    skip it hang the block or, hoisted, the barrier separates nothing). TileLang's named partial
    barrier ``tl::__sync_thread_partial(id, n)`` is right inside ``if (threadIdx.x < n)`` with the
    same ``n`` (exactly the threads taking the branch) and no other thread-dependent condition;
    outside any, its ``n`` must be the block size ``threads`` (when given). Works on the braces
    of the source, comments and preprocessor lines blanked; one message per problem.
    """
    text = _NOT_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)
    problems: list[str] = []
    scopes: list[_Scope] = []
    chains: dict[int, list[str]] = {}          # depth -> if/else-if conditions of the chain just closed
    start = parens = 0
    line = 1
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "\n":
            line += 1
        elif ch == "(":
            parens += 1
        elif ch == ")":
            parens -= 1
        elif ch == "_" and (m := _BARRIER.match(text, pos)) and not (pos and (text[pos - 1].isalnum() or text[pos - 1] == "_")):
            around = [sc for sc in scopes if sc.per_thread]
            prefix = " ".join(text[start:pos].split())
            unbraced = _control(prefix, line, chains.get(len(scopes), [])) if prefix else None
            if unbraced is not None and unbraced.per_thread:
                around.append(unbraced)
            where = ", ".join(map(str, around))
            if m.group(1) is None:
                if around:
                    problems.append(f"line {line}: __syncthreads() inside thread-dependent control flow: {where}")
            else:
                count = int(m.group(1))
                firsts = [sc.kind == "if" and (f := _FIRST_N.match(sc.cond)) and int(f.group(1)) == count for sc in around]
                if around and not all(firsts):
                    problems.append(f"line {line}: __sync_thread_partial(.., {count}) inside control flow other "
                                    f"than `if (threadIdx.x < {count})`: {where}")
                elif not around and threads is not None and count != threads:
                    problems.append(f"line {line}: __sync_thread_partial(.., {count}) outside any thread branch "
                                    f"of a {threads}-thread block")
            pos = m.end()
            continue
        elif parens == 0 and ch in ";{}":
            depth = len(scopes)
            if ch == "{":
                sc = _control(" ".join(text[start:pos].split()), line, chains.get(depth, []))
                scopes.append(sc)
                if sc.kind == "if":
                    chains[depth] = [sc.cond]
                elif sc.kind == "else if":
                    chains[depth] = chains.get(depth, []) + [sc.cond]
                else:
                    chains[depth] = []
            elif ch == "}":
                if scopes:
                    scopes.pop()
                chains.pop(depth, None)       # the chains inside the closed block are over
            else:
                chains[depth] = []            # a statement ends any if/else chain at this depth
            start = pos + 1
        pos += 1
    return problems


_SHARED_DECL = re.compile(r"(\w+)\s*=\s*\(\(void\*\)\(\(char\*\)buf_dyn_shmem\b|__shared__[^;]*?\b(\w+)\s*\[")
_ONE_THREAD = re.compile(r"\bif\s*\(\(*\s*\(int\)\s*threadIdx\.x\s*\)\s*(?:<\s*1|==\s*0)\s*\)*\s*\{")


def single_thread_shared_writes(source: str) -> list[str]:
    """Sections of generated CUDA ``source`` where one thread (``if (threadIdx.x < 1)`` or
    ``== 0``) writes a shared-memory buffer, which the other threads then read: every such
    write needs a barrier after it outside the branch, and barriers the branch needs inside
    cannot be placed (TileLang hoists them out and warns of a race). One message per section."""
    text = _NOT_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)
    shared = {a or b for a, b in _SHARED_DECL.findall(text)}
    problems = []
    for m in _ONE_THREAD.finditer(text):
        depth, end = 1, m.end()
        while depth and end < len(text):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        body = text[m.end():end]
        written = sorted(n for n in shared if re.search(rf"\b{re.escape(n)}\)?\s*\[[^;]*?\]\s*=(?!=)", body))
        if written:
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"line {line}: one thread writes shared {', '.join(written)} for the others")
    return problems


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text: str) -> dict[str, dict[str, int]]:
    """ptxas ``-v`` output -> {entry name: {registers, spill_stores, spill_loads, stack, smem}}."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = out.setdefault(m.group(1), dict(registers=0, spill_stores=0, spill_loads=0,
                                                      stack=0, smem=0))
            continue
        if current is None:
            continue
        if m := _STACK.search(line):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        if m := _USED.search(line):
            current["registers"] = int(m.group(1))
            s = _SMEM.search(line)
            current["smem"] = int(s.group(1)) if s else 0
    return out


def compile_cubin(source: str, arch: str, out_dir: Path, stem: str,
                  nvcc: Optional[str] = None) -> tuple[Path, dict[str, dict[str, int]]]:
    """Compile CUDA C++ ``source`` with nvcc to ``out_dir/stem.<arch>.cubin``.

    Returns the cubin path and the parsed ptxas report (see :func:`parse_ptxas`). Raises
    NvccError when nvcc is missing or fails.
    """
    import tilelang.env as tl_env

    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise NvccError("nvcc not found (set $NVCC or put nvcc on PATH)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cu = out_dir / f"{stem}.{arch}.cu"
    cubin = out_dir / f"{stem}.{arch}.cubin"
    cu.write_text(source)
    cmd = [nvcc, "-cubin", f"-arch={arch}", *_NVCC_FLAGS, "-Xptxas", "-v",
           "-I", str(tl_env.TILELANG_TEMPLATE_PATH), "-I", str(tl_env.CUTLASS_INCLUDE_DIR),
           str(cu), "-o", str(cubin)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise NvccError(f"nvcc failed for {arch} (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return cubin, parse_ptxas(proc.stderr + proc.stdout)


def cross_build(func, arch: str, out_dir: Path, stem: str, nvcc: Optional[str] = None,
                pass_configs: Optional[dict] = None) -> CubinReport:
    """Lower ``func`` for ``arch`` and compile it to a cubin; registers/spills/smem per block."""
    t0 = time.perf_counter()
    return _compiled(lower_cuda(func, arch, pass_configs), out_dir, stem, nvcc, t0)


def _compiled(lowered: LoweredCuda, out_dir: Path, stem: str, nvcc: Optional[str], t0: float) -> CubinReport:
    """nvcc's report on ``lowered`` compiled to ``out_dir/stem.<arch>.cubin`` (``t0``: when the
    build began, for ``seconds``)."""
    cubin, report = compile_cubin(lowered.source, lowered.arch, out_dir, stem, nvcc=nvcc)
    if lowered.entry not in report:
        raise NvccError(f"ptxas reported on {sorted(report)}, not on the kernel {lowered.entry!r}")
    r = report[lowered.entry]
    return CubinReport(arch=lowered.arch, entry=lowered.entry, registers=r["registers"],
                       spill_stores=r["spill_stores"], spill_loads=r["spill_loads"], stack=r["stack"],
                       static_smem=r["smem"], dynamic_smem=lowered.dynamic_smem,
                       threads=lowered.threads, cubin=cubin, seconds=time.perf_counter() - t0,
                       sync_problems=lowered.sync_problems())


def lower_key(source: str, arch: str, pass_configs: Optional[dict]) -> str:
    """Hash of everything a lowering depends on: the generated TileLang source, the arch, the
    pass options and TileLang's version."""
    import tilelang

    payload = json.dumps({"source": source, "arch": arch, "pass_configs": pass_configs or {},
                          "tilelang": tilelang.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def build_key(source: str, arch: str, pass_configs: Optional[dict], nvcc: str) -> str:
    """Hash of everything a cross build's result depends on: the lowering's (``lower_key``),
    nvcc's version and flags."""
    payload = json.dumps({"lowered": lower_key(source, arch, pass_configs), "nvcc": nvcc_version(nvcc),
                          "flags": _NVCC_FLAGS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a private file renamed into place (concurrent writers
    of the same content never expose half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cached_lower(module, arch: str) -> tuple[LoweredCuda, bool]:
    """``lower_cuda`` of a generated TileLang CUDA module (``runtime.load``) for ``arch``, reused
    from ``$HOLA_CACHE_DIR/nvcc-lowered/<lower_key>.json`` when nothing it depends on changed:
    lowering a scan phase takes up to a minute, and the sync checks, the nvcc builds and `hola
    check` lower the same sources. Returns the lowering and whether it came from the cache."""
    path = source_cache.cache_dir("nvcc-lowered") / f"{lower_key(Path(module.__file__).read_text(), arch, module.PASS_CONFIGS)}.json"
    try:
        return LoweredCuda(**json.loads(path.read_text())), True
    except (OSError, ValueError, TypeError):
        pass
    lowered = lower_cuda(module.build(), arch, module.PASS_CONFIGS)
    _write_atomically(path, json.dumps(dataclasses.asdict(lowered), default=str))
    return lowered, False


def _cached_report(entry: Path) -> Optional[CubinReport]:
    """The CubinReport stored in cache folder ``entry``, or None when there is none (or its cubin
    is gone)."""
    try:
        fields = json.loads((entry / "report.json").read_text())
        fields["cubin"] = entry / fields["cubin"]
        report = CubinReport(**fields)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return report if report.cubin.is_file() else None


def _build_entry(module, arch: str, nvcc: str) -> Path:
    """The cache folder of ``module``'s cross build for ``arch`` (``build_key``)."""
    return source_cache.cache_dir("nvcc") / build_key(Path(module.__file__).read_text(), arch, module.PASS_CONFIGS, nvcc)


def cached_cross_build(module, arch: str, nvcc: str) -> tuple[CubinReport, bool]:
    """``cross_build`` of a generated TileLang CUDA module (``runtime.load``), reused
    from ``$HOLA_CACHE_DIR/nvcc/<build_key>`` when nothing it depends on changed: lowering and
    nvcc take seconds per kernel and `hola check` repeats them on unchanged sources (a new
    build reuses the lowering as well, ``cached_lower``). Returns the report and whether it came
    from the cache. A new entry is built in a private folder and renamed into place, so
    concurrent builds never see half of one."""
    entry = _build_entry(module, arch, nvcc)
    cached = _cached_report(entry)
    if cached is not None:
        return cached, True
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f"{entry.name}.tmp-"))
    try:
        t0 = time.perf_counter()
        lowered, _ = cached_lower(module, arch)
        report = _compiled(lowered, tmp, Path(module.__file__).stem, nvcc, t0)
        fields = dict(dataclasses.asdict(report), cubin=report.cubin.name)
        (tmp / "report.json").write_text(json.dumps(fields, indent=1, default=str))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)   # a stale entry whose cubin was removed
        os.replace(tmp, entry)
    except OSError:
        if _cached_report(entry) is None:           # not just a concurrent builder winning the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _cached_report(entry), False


# ---------------------------------------------------------------- several kernels at once
def build_jobs() -> int:
    """How many kernels are lowered (and compiled) at once: ``$HOLA_BUILD_JOBS``, else the CPUs
    this process may use. Lowering is single-threaded Python and C++, so a call with several
    kernels (the scan's phases) takes the time of its longest one, not of all of them."""
    text = os.environ.get("HOLA_BUILD_JOBS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"HOLA_BUILD_JOBS: expected a whole number >= 1, got {text!r:.40}")
        return int(text)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker(path: str, arch: str, nvcc: Optional[str], cache_root: str) -> Optional[str]:
    """In a worker process: ``cached_lower`` (``nvcc`` None) or ``cached_cross_build`` of the
    generated module at ``path`` into ``cache_root``. Returns None, or the failure as text (the
    caller's own build of that module then reports it in full)."""
    os.environ["HOLA_CACHE_DIR"] = cache_root
    try:
        module = source_cache.import_file(Path(path), f"hola_generated_{Path(path).stem}")
        if nvcc is None:
            cached_lower(module, arch)
        else:
            cached_cross_build(module, arch, nvcc)
        return None
    except Exception as exc:  # reported again, with its traceback, by the caller's build
        return f"{type(exc).__name__}: {exc}"


def _in_parallel(modules: Sequence, arch: str, nvcc: Optional[str]) -> list:
    """Lower (``nvcc`` None) or cross-build ``modules`` in worker processes, at most
    ``build_jobs()`` at a time, into the caches ``cached_lower``/``cached_cross_build`` read.
    Returns the modules sent to the workers: nothing when one process would do (a single
    module, one job, or no forkserver on this platform). Workers fork from a server that has
    imported this module and TileLang once, not from this process, whose threads (torch's,
    TVM's) a fork must not copy."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    jobs = min(len(modules), build_jobs())
    if jobs < 2 or "forkserver" not in multiprocessing.get_all_start_methods():
        return []
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "tilelang"])
    cache_root = str(source_cache.cache_dir("nvcc").parent)
    # Longest first (a source's length is a fair guess at its lowering's time), so that the
    # long scan phases do not start last and leave the other CPUs idle.
    paths = sorted((m.__file__ for m in modules), key=lambda p: -os.path.getsize(p))
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            list(pool.map(_worker, paths, [arch] * len(paths), [nvcc] * len(paths), [cache_root] * len(paths)))
    except BrokenProcessPool:       # a worker died (out of memory, say): the caller builds what is left
        return []
    return list(modules)


def prelower(modules: Sequence, arch: str) -> None:
    """Lower into the cache, ``build_jobs()`` at a time, the generated modules in ``modules`` whose
    lowering for ``arch`` is not cached yet; a failure is left for ``cached_lower`` to raise."""
    _in_parallel([m for m in modules if not _lowered_cached(m, arch)], arch, None)


def lower_all(modules: Sequence, arch: str) -> list[LoweredCuda]:
    """``cached_lower`` of every generated module in ``modules`` for ``arch``, the ones not cached
    lowered in parallel (``prelower``)."""
    prelower(modules, arch)
    return [cached_lower(m, arch)[0] for m in modules]


def _lowered_cached(module, arch: str) -> bool:
    """Whether ``cached_lower`` has ``module``'s lowering for ``arch``."""
    key = lower_key(Path(module.__file__).read_text(), arch, module.PASS_CONFIGS)
    return (source_cache.cache_dir("nvcc-lowered") / f"{key}.json").is_file()


def build(kernel: str, arch: str, config: Optional[dict] = None, dims: Optional[dict] = None,
          dtype: str = "bfloat16", out_dir: Optional[Path] = None, offsets: Optional[list] = None) -> list[BuildResult]:
    """Cross-build every DSL kernel of ``kernel`` in TileLang's CUDA dialect for ``arch`` with its
    default schedule (``config`` entries win): trace, emit (cached source), lower, nvcc (both
    cached, see ``cached_cross_build``; the kernels not cached are built ``build_jobs()`` at a
    time, the first row's seconds covering them all). Returns the rows of ``hola build``'s table
    (``extra["cached"]`` when reused); a failure is a row, not an exception. The cubins stay in
    the cache unless ``out_dir`` asks for copies. ``offsets``: the kernels of a packed call
    (cu_seqlens) instead, under the schedule such a call completes (``spec.packed_config``)."""
    sched = schedule(kernel, spec.packed_config(kernels.spec(kernel), config, offsets), arch, getattr(torch, dtype))
    nvcc = find_nvcc()
    fresh: Optional[set] = None          # modules built by the parallel pass, once it has run

    def build_one(kir) -> BuildResult:
        nonlocal fresh
        if nvcc is None:
            raise NvccError("nvcc not found (set $NVCC or put nvcc on PATH); nothing compiled")
        if fresh is None:
            try:
                fresh = set(_build_missing(kernel, sched, arch, dims, dtype, offsets, nvcc))
            except Exception:  # a speed-up only: each row's own build below reports what failed
                if os.environ.get("HOLA_DEBUG"):
                    raise
                fresh = set()
        module = runtime.load(kir, sched, arch, "cuda")
        r, cached = cached_cross_build(module, arch, nvcc)
        cached = cached and module.__file__ not in fresh
        cubin = r.cubin
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            cubin = Path(shutil.copy2(r.cubin, Path(out_dir) / r.cubin.name))
        return BuildResult(kir.name, arch, sched, True, registers=r.registers, spills=r.spill_stores + r.spill_loads,
                           shared=r.smem, extra={"threads": r.threads, "cubin": str(cubin), "source": module.__file__,
                                                 "sync_problems": r.sync_problems, "cached": cached})
    return each_kernel(kernel, arch, sched, dims, dtype, build_one, tail=True, offsets=offsets)


def _build_missing(kernel: str, sched: dict, arch: str, dims: Optional[dict], dtype: str,
                   offsets: Optional[list], nvcc: str) -> list[str]:
    """Cross-build, in parallel (``_in_parallel``), the kernels of ``kernel``'s plan that are not
    in the cache yet; the paths of the modules it built. A failure leaves the module out of the
    cache, for the row's own build to report."""
    traced = spec.trace(kernels.spec(kernel), sched, dims, getattr(torch, dtype), offsets=offsets)
    modules = [runtime.load(kir, sched, arch, "cuda") for kir in traced]
    missing = [m for m in modules if _cached_report(_build_entry(m, arch, nvcc)) is None]
    return [m.__file__ for m in _in_parallel(missing, arch, nvcc)]


def prebuild(calls: Sequence[tuple], arch: str, dtype: str = "bfloat16") -> list[str]:
    """Cross-build into the cache, ``build_jobs()`` at a time, every kernel not cached yet of
    each ``(kernel, config, dims)`` in ``calls`` (default schedules, ``config`` entries win), so
    that the ``build`` calls that follow find them: the work of several calls spread over the
    CPUs, not only of one call's phases. Returns the paths of the modules it built; a kernel that
    fails is left for its ``build`` to report."""
    nvcc = find_nvcc()
    if nvcc is None:
        return []
    modules = []
    for kernel, config, dims in calls:
        try:
            sched = schedule(kernel, config, arch, getattr(torch, dtype))
            traced = spec.trace(kernels.spec(kernel), sched, dims, getattr(torch, dtype))
            modules += [runtime.load(kir, sched, arch, "cuda") for kir in traced]
        except Exception:  # its own build reports it
            if os.environ.get("HOLA_DEBUG"):
                raise
    missing = [m for m in modules if _cached_report(_build_entry(m, arch, nvcc)) is None]
    return [m.__file__ for m in _in_parallel(missing, arch, nvcc)]


def sync_summary(problems: list) -> str:
    """The first sync problem of a build, and how many more there are."""
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0][:200]}{more}"


# Small static dims for the quick cross-build `hola check` and the tests run (nvcc's template
# work grows with tile sizes; the lowering does not depend on them).
CHECK_DIMS = {"K": 32, "V": 32, "W": 16, "C": 64}


def check_rows(arch: str = targets.CHECK_NVCC_ARCH, kernels: Sequence[str] = KERNELS) -> int:
    """Print one `hola check` row per DSL kernel of ``kernels``: its TileLang CUDA dialect built
    by nvcc for ``arch``. Returns the number of failures, sync problems included (0, with a
    note, when nvcc is missing)."""
    nvcc = find_nvcc()
    if nvcc is None:
        print("(tilelang nvcc build not checked: nvcc not found)")
        return 0
    failed = 0
    for kernel in kernels:
        for r in build(kernel, arch, dims=CHECK_DIMS):
            sync = r.extra.get("sync_problems") or []
            ok = r.ok and not sync
            failed += not ok
            what = (f"{r.registers} regs, {r.spills} B spilled, {r.shared} B smem" if r.ok else r.error)
            what += " (cached)" if r.extra.get("cached") else ""
            if sync:
                what = f"sync: {sync_summary(sync)}"
            print(f"{r.kernel:<13} {'tilelang':<10} {'nvcc ' + arch:>12} {'PASS' if ok else 'FAIL':>6} "
                  f"{r.seconds * 1e3:>8.1f}ms {what}")
    return failed
