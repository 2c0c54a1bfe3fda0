"""Ahead-of-time Triton builds for GPUs this machine does not have.

Every kernel is traced with its default schedule for the target, emitted, and compiled by
``triton.compile`` for a ``GPUTarget`` (no GPU needed). Resources come from the compiler's own
outputs: for CUDA, ``ptxas -v`` on the PTX (registers, spill bytes) and Triton's shared-memory
figure; for AMD, the kernel metadata in the AMDGCN assembly (VGPRs, SGPRs, spills, LDS).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from hola_dsl import ir, launch, registry, targets
from hola_dsl.kernels import get as get_kernel
from hola_dsl.lower import triton as lower_triton

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
    dtype: str = "bfloat16"               # the inputs' dtype it was specialised for


def gpu_target(name: str):
    """triton's GPUTarget for one of Triton's GPU targets ("sm_90", "gfx942", ...)."""
    from triton.backends.compiler import GPUTarget
    targets.check("triton", name, gpu_only=True)
    if name.startswith("sm_"):
        return GPUTarget("cuda", int(name[3:]), 32)
    return GPUTarget("hip", name, 64)


def default_schedule(kernel: str, target: str, config: Optional[dict] = None, dtype: str = "bfloat16") -> dict:
    """The completed Triton schedule of ``kernel`` for ``target`` and ``dtype`` inputs."""
    from hola_dsl.triton_backend import schedule
    return schedule(kernel, config, target, registry.TORCH_DTYPE[dtype])


def _meta(dtype: str, *shape: int) -> torch.Tensor:
    return torch.empty(shape, dtype=registry.TORCH_DTYPE[dtype], device="meta")


def pipeline(kernel: str, schedule: dict, dims: dict = None, dtype: str = "bfloat16") -> list[ir.Kernel]:
    """Every kernel the launcher runs for ``kernel`` under ``schedule`` (one, or the phases of a
    split scan), traced for the static ``dims`` and input ``dtype``: the launcher itself runs on
    meta tensors with a runner that records what it would launch, so a build is exactly what runs."""
    d = dict(DEFAULT_DIMS, **(dims or {}))
    K, V, W, C = d["K"], d["V"], d["W"], d["C"]
    traced: list[ir.Kernel] = []
    record = lambda kdef, consts, args: traced.append(launch.specialize(kdef, consts, args))
    B, T, H = 1, 2 * C, 1
    if kernel == "delta_scan":
        launch.delta_scan(record, schedule, _meta(dtype, B, T, H, K), _meta(dtype, B, T, H, K),
                          _meta(dtype, B, T, H, V), _meta("float32", B, T, H), _meta(dtype, B, T, H), scale=1.0,
                          initial_state=_meta("float32", B, H, K, V), output_final_state=True,
                          chunk_size=d["chunk_size"])
    elif kernel == "cache_select":
        launch.cache_select(record, schedule, _meta("float32", B, T, H), capacity=W, block_size=C, policy="hola")
    elif kernel == "cache_read":
        launch.cache_read(record, schedule, _meta(dtype, B, T, H, K), _meta(dtype, B, T, H, K),
                          _meta(dtype, B, T, H, V), _meta("int64", B, H, 2, W), _meta("float32", K),
                          _meta("float32", K), _meta("float32", H), block_size=C, eps=1e-6)
    else:
        get_kernel(kernel)                 # the error naming the known kernels
    return traced


def specialise(kernel: str, schedule: dict, dims: dict = None, dtype: str = "bfloat16",
               phase: Optional[str] = None) -> ir.Kernel:
    """The kernel of ``pipeline(kernel, ...)`` called ``phase`` (e.g. "delta_scan_recur"), or
    its only kernel; ValueError naming the phases when there are several and none is given."""
    kernels = pipeline(kernel, schedule, dims, dtype)
    names = [k.name for k in kernels]
    if phase is None and len(kernels) == 1:
        return kernels[0]
    if phase not in names:
        raise ValueError(f"phase: {kernel} under split {schedule.get('split')!r} runs {names}; got {phase!r}")
    return kernels[names.index(phase)]


def phases(kernel: str, schedule: dict, dims: dict = None, dtype: str = "bfloat16") -> list[Optional[str]]:
    """The ``phase`` arguments (of :func:`specialise`, :func:`build`) naming every kernel of the
    pipeline: [None] for a single kernel."""
    kernels = pipeline(kernel, schedule, dims, dtype)
    return [None] if len(kernels) == 1 else [k.name for k in kernels]


def pipeline_hash(kernel: str, schedule: dict, dims: dict = None, dtype: str = "bfloat16") -> str:
    """The IR hash of what ``kernel`` runs under ``schedule``: its kernel's, or one over every
    phase's."""
    hashes = [k.hash() for k in pipeline(kernel, schedule, dims, dtype)]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256(" ".join(hashes).encode()).hexdigest()[:16]


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


def _build_in_subprocess(kernel: str, target: str, config, dims, dtype, phase) -> BuildResult:
    """Triton's interpreter patches triton.language in-process and compiling afterwards fails;
    a fresh interpreter-free process builds cleanly."""
    import json
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys; from hola_dsl import aot; a = json.loads(sys.argv[1]); "
            "print(json.dumps(aot.build(**a).__dict__))")
    payload = json.dumps(dict(kernel=kernel, target=target, config=config, dims=dims, dtype=dtype, phase=phase))
    out = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return BuildResult(kernel, target, {}, False, error=f"build subprocess failed: {out.stderr.strip()[-400:]}")
    return BuildResult(**json.loads(out.stdout.strip().splitlines()[-1]))


def build(kernel: str, target: str, config: Optional[dict] = None, dims: dict = None,
          dtype: str = "bfloat16", phase: Optional[str] = None) -> BuildResult:
    """Compile ``kernel`` (its kernel called ``phase`` when its schedule splits it, see
    :func:`specialise`) for ``target`` with its default schedule (``config`` entries win)."""
    from hola_dsl import triton_runtime
    from hola_dsl.triton_backend import code_schedule
    if triton_runtime.interpreter_used():
        return _build_in_subprocess(kernel, target, config, dims, dtype, phase)
    import triton
    from triton.compiler import ASTSource

    sched = default_schedule(kernel, target, config, dtype)
    t0 = time.perf_counter()
    name = phase or kernel
    try:
        kir = specialise(kernel, sched, dims, dtype, phase)
        module = triton_runtime.load(kir, code_schedule(kernel, sched, kir.name), target)
        fn = getattr(module, lower_triton.kernel_function_name(kir))
        gt = gpu_target(target)
        sig = lower_triton.signature(kir)
        # As the JIT would specialise: torch allocations are 16-byte aligned.
        attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")}
        compiled = triton.compile(ASTSource(fn, sig, attrs=attrs), target=gt,
                                  options={"num_warps": module.NUM_WARPS, "num_stages": module.NUM_STAGES,
                                           "enable_fp_fusion": triton_runtime.FP_FUSION})
        res = BuildResult(name, target, sched, True, shared=int(compiled.metadata.shared), dtype=dtype)
        if gt.backend == "cuda":
            r = _ptxas_resources(compiled.asm["ptx"], gt.arch)
        else:
            r = _amdgcn_resources(compiled.asm["amdgcn"])    # LDS is dynamic: metadata.shared stands
        res.registers, res.spills, res.extra = r["registers"], r["spills"], r.get("extra", {})
        res.extra["threads"] = gt.warp_size * module.NUM_WARPS      # a phase may have warps of its own
    except Exception as exc:  # a failed build is a row of the table, not a crash
        if os.environ.get("HOLA_DEBUG"):
            raise
        res = BuildResult(name, target, sched, False, error=f"{type(exc).__name__}: {str(exc).strip()[:400]}",
                          dtype=dtype)
    res.seconds = time.perf_counter() - t0
    return res


def build_pipeline(kernel: str, target: str, config: Optional[dict] = None, dims: dict = None,
                   dtype: str = "bfloat16") -> list[BuildResult]:
    """One :func:`build` per kernel that ``kernel`` runs under its default schedule for
    ``target`` (``config`` entries win): one row, or one per phase of a split scan."""
    sched = default_schedule(kernel, target, config, dtype)
    return [build(kernel, target, config, dims, dtype, phase) for phase in phases(kernel, sched, dims, dtype)]
