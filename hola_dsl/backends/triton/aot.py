"""Ahead-of-time Triton builds for GPUs this machine does not have.

Every kernel is traced with its default schedule for the target, emitted, and compiled by
``triton.compile`` for a ``GPUTarget`` (no GPU needed). Resources come from the compiler's own
outputs: for CUDA, ``ptxas -v`` on the PTX (registers, spill bytes) and Triton's shared-memory
figure; for AMD, the kernel metadata in the AMDGCN assembly (VGPRs, SGPRs, spills, LDS).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from hola_dsl import launch, lang
from hola_dsl.kernels import get as get_kernel
from hola_dsl.backends.triton import lower as lower_triton
from schedules import targets

# Static problem the AOT build specialises for: GDN's usual head dims and the default cache.
# (The scan's chunk comes from the schedule, which has one for every target.)
DEFAULT_DIMS = {"K": 128, "V": 128, "W": 64, "C": 256, "chunk_size": 64}


@dataclass
class BuildResult:
    """Resources of one kernel compiled for one target (None where the target does not say)."""

    kernel: str
    target: str
    schedule: dict
    ok: bool
    registers: Optional[int] = None
    spills: Optional[int] = None          # bytes of spill stores + loads (CUDA), spill count (AMD)
    shared: Optional[int] = None          # bytes of shared memory / LDS
    seconds: float = 0.0
    error: str = ""
    extra: dict = field(default_factory=dict)


def gpu_target(name: str):
    """triton's GPUTarget for one of Triton's GPU targets ("sm_90", "gfx942", ...)."""
    from triton.backends.compiler import GPUTarget
    targets.check("triton", name, gpu_only=True)
    if name.startswith("sm_"):
        return GPUTarget("cuda", int(name[3:]), 32)
    return GPUTarget("hip", name, 64)


def default_schedule(kernel: str, target: str, config: Optional[dict] = None) -> dict:
    from hola_dsl.backends.triton import schedule
    return schedule(kernel, config, target)


def specialise(kernel: str, schedule: dict, dims: dict = None, dtype: str = "bfloat16"):
    """Trace ``kernel`` for the static ``dims`` and ``dtype`` the way the launcher would."""
    d = dict(DEFAULT_DIMS, **(dims or {}))
    kdef: lang.KernelDef = get_kernel(kernel)
    if kernel == "delta_scan":
        consts = launch.delta_scan_consts(d["K"], d["V"], d["chunk_size"], schedule, has_h0=True, store_final=True)
        dtypes = dict(q=dtype, k=dtype, v=dtype, g="float32", beta=dtype, h0="float32", o=dtype)
    elif kernel == "cache_select":
        consts = launch.cache_select_consts(d["W"], d["C"], "hola", None, schedule)
        dtypes = dict(scores="float32")
    else:
        consts = launch.cache_read_consts(d["K"], d["V"], d["W"], d["C"], 1e-6, schedule)
        dtypes = dict(q=dtype, k=dtype, v=dtype, gamma_q="float32", gamma_k="float32", sink="float32", o=dtype)
    return kdef.trace(dtypes, **consts)


def _ptxas_resources(ptx: str, arch: int) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        out = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}",
                              src, "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True)
    log = out.stderr + out.stdout
    regs = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    return {"registers": int(regs.group(1)) if regs else None,
            "spills": (int(stores.group(1)) if stores else 0) + (int(loads.group(1)) if loads else 0)}


def _amdgcn_resources(asm: str) -> dict:
    def field(name):
        m = re.search(rf"\.{name}:\s+(\d+)", asm)
        return int(m.group(1)) if m else None
    return {"registers": field("vgpr_count"), "spills": (field("vgpr_spill_count") or 0) + (field("sgpr_spill_count") or 0),
            "extra": {"sgprs": field("sgpr_count"), "lds": field("group_segment_fixed_size")}}


def _build_in_subprocess(kernel: str, target: str, config, dims, dtype) -> BuildResult:
    """Triton's interpreter patches triton.language in-process and compiling afterwards fails;
    a fresh interpreter-free process builds cleanly."""
    import json
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys; from hola_dsl.backends.triton import aot; a = json.loads(sys.argv[1]); "
            "print(json.dumps(aot.build(**a).__dict__))")
    payload = json.dumps(dict(kernel=kernel, target=target, config=config, dims=dims, dtype=dtype))
    out = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return BuildResult(kernel, target, {}, False, error=f"build subprocess failed: {out.stderr.strip()[-400:]}")
    return BuildResult(**json.loads(out.stdout.strip().splitlines()[-1]))


def build(kernel: str, target: str, config: Optional[dict] = None, dims: dict = None,
          dtype: str = "bfloat16") -> BuildResult:
    """Compile ``kernel`` for ``target`` with its default schedule (``config`` entries win)."""
    from hola_dsl.backends.triton import runtime as triton_runtime
    if triton_runtime.interpreter_used():
        return _build_in_subprocess(kernel, target, config, dims, dtype)
    import triton
    from triton.compiler import ASTSource

    sched = default_schedule(kernel, target, config)
    t0 = time.perf_counter()
    try:
        kir = specialise(kernel, sched, dims, dtype)
        launch_sched = {k: sched[k] for k in ("num_warps", "num_stages", "dot_precision") if k in sched}
        module = triton_runtime.load(kir, launch_sched, target)
        fn = getattr(module, lower_triton.kernel_function_name(kir))
        gt = gpu_target(target)
        sig = lower_triton.signature(kir)
        # As the JIT would specialise: torch allocations are 16-byte aligned.
        attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")}
        compiled = triton.compile(ASTSource(fn, sig, attrs=attrs), target=gt,
                                  options={"num_warps": module.NUM_WARPS, "num_stages": module.NUM_STAGES,
                                           "enable_fp_fusion": triton_runtime.FP_FUSION})
        res = BuildResult(kernel, target, sched, True, shared=int(compiled.metadata.shared))
        if gt.backend == "cuda":
            r = _ptxas_resources(compiled.asm["ptx"], gt.arch)
        else:
            r = _amdgcn_resources(compiled.asm["amdgcn"])    # LDS is dynamic: metadata.shared stands
        res.registers, res.spills, res.extra = r["registers"], r["spills"], r.get("extra", {})
    except Exception as exc:  # a failed build is a row of the table, not a crash
        if os.environ.get("HOLA_DEBUG"):
            raise
        res = BuildResult(kernel, target, sched, False, error=f"{type(exc).__name__}: {str(exc).strip()[:400]}")
    res.seconds = time.perf_counter() - t0
    return res


