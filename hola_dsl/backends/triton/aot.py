"""Ahead-of-time Triton builds for GPUs this machine does not have.

Every DSL kernel of a kernel's plan is traced (on ``meta`` tensors) with its default schedule
for the target, emitted, and compiled by ``triton.compile`` for a ``GPUTarget`` (no GPU needed).
Resources come from the compiler's own outputs: for CUDA, ``ptxas -v`` on the PTX (registers,
spill bytes) and Triton's shared-memory figure; for AMD, the kernel metadata in the AMDGCN
assembly (VGPRs, SGPRs, spills, LDS).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from typing import Optional

import torch

from hola_dsl import ir, kernels, spec
from hola_dsl.backends.builds import BuildResult, each_kernel
from hola_dsl.backends.triton import lower, runtime, schedule, versions
from schedules import targets


def gpu_target(name: str):
    """triton's GPUTarget for one of Triton's GPU targets ("sm_90", "gfx942", ...)."""
    from triton.backends.compiler import GPUTarget
    targets.check("triton", name, gpu_only=True)
    if name.startswith("sm_"):
        return GPUTarget("cuda", int(name[3:]), 32)
    return GPUTarget("hip", name, 64)


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


def _build_in_subprocess(kernel: str, target: str, config, dims, dtype, offsets=None) -> list[BuildResult]:
    """Triton's interpreter patches triton.language in-process and compiling afterwards fails;
    a fresh interpreter-free process builds cleanly."""
    import json
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys; from hola_dsl.backends.triton import aot; a = json.loads(sys.argv[1]); "
            "print(json.dumps([r.__dict__ for r in aot.build(**a)]))")
    payload = json.dumps(dict(kernel=kernel, target=target, config=config, dims=dims, dtype=dtype, offsets=offsets))
    out = subprocess.run([sys.executable, "-c", code, payload], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return [BuildResult(kernel, target, {}, False, error=f"build subprocess failed: {out.stderr.strip()[-400:]}")]
    return [BuildResult(**fields) for fields in json.loads(out.stdout.strip().splitlines()[-1])]


def _compile(kir: ir.Kernel, sched: dict, target: str) -> BuildResult:
    import triton
    from triton.compiler import ASTSource

    if (why := versions.problem(target)) is not None:
        raise RuntimeError(why)
    module = runtime.load(kir, lower.source_schedule(sched, kir.name), target)
    fn = getattr(module, lower.kernel_function_name(kir))
    gt = gpu_target(target)
    sig = lower.signature(kir)
    # As the JIT would specialise: torch allocations are 16-byte aligned.
    attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")}
    compiled = triton.compile(ASTSource(fn, sig, attrs=attrs), target=gt,
                              options={"num_warps": module.NUM_WARPS, "num_stages": module.NUM_STAGES,
                                       "enable_fp_fusion": runtime.FP_FUSION})
    if gt.backend == "cuda":
        r = _ptxas_resources(compiled.asm["ptx"], gt.arch)
    else:
        r = _amdgcn_resources(compiled.asm["amdgcn"])    # LDS is dynamic: metadata.shared stands
    # The threads of this kernel's own warps (a phase may have warps of its own).
    extra = {**r.get("extra", {}), "threads": gt.warp_size * module.NUM_WARPS}
    return BuildResult(kir.name, target, sched, True, registers=r["registers"], spills=r["spills"],
                       shared=int(compiled.metadata.shared), extra=extra)


def build(kernel: str, target: str, config: Optional[dict] = None, dims: Optional[dict] = None,
          dtype: str = "bfloat16", offsets: Optional[list] = None) -> list[BuildResult]:
    """Compile every DSL kernel of ``kernel`` for ``target`` with its default schedule for
    ``dtype`` inputs (``config`` entries win), for static ``dims`` (default
    ``spec.DEFAULT_DIMS``): one row each (each phase of a split scan). ``offsets``: the kernels
    of a packed call (cu_seqlens) instead, under the schedule such a call completes
    (``spec.packed_config``)."""
    if runtime.interpreter_used():
        return _build_in_subprocess(kernel, target, config, dims, dtype, offsets)
    sched = schedule(kernel, spec.packed_config(kernels.spec(kernel), config, offsets), target, getattr(torch, dtype))
    return each_kernel(kernel, target, sched, dims, dtype, lambda kir: _compile(kir, sched, target), offsets=offsets)
