"""Generated Triton sources on disk, loaded and launched.

Sources are written to ``$HOLA_CACHE_DIR/triton`` (default ``~/.cache/hola-dsl/triton``) under a
name keyed by a hash of the IR, the schedule, the target and the tool versions, so a change to
any of them makes a new file and an unchanged kernel is never regenerated. Triton's JIT needs
its functions in a real file (it reads their source), hence files rather than ``exec``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from hola_dsl import ir, source_cache
from hola_dsl.backends import codegen
from hola_dsl.backends.triton import lower, versions
from schedules import targets

_MODULES: dict[str, Any] = {}

# Let Triton fuse multiply-adds (FMA, and ptxas's --fmad): what Triton has always done by
# default. Said explicitly because Triton 3.9 warns that its default is about to change.
FP_FUSION = True


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreter_used() -> bool:
    """Whether this process has run (or is set to run) Triton's interpreter."""
    return interpreting() or any(key.endswith(":True") for key in _MODULES)


def cache_dir() -> Path:
    return source_cache.cache_dir("triton")


def tool_versions() -> dict[str, str]:
    """Versions that change generated code: triton, torch, and the emitter's own sources."""
    import triton
    return {"triton": triton.__version__, "torch": torch.__version__,
            "emitter": f"{lower.EMITTER_VERSION}+{source_cache.modules_hash(lower, codegen)}"}


def target_of(device: torch.device) -> str:
    """What tensors on ``device`` run as: "interpreter" (Triton's CPU interpreter), or the GPU's
    arch ("sm_90", "gfx942")."""
    if interpreting() or device.type != "cuda":
        return "interpreter"
    return targets.arch_of(device)


def source_key(kernel: ir.Kernel, schedule: dict, target: str) -> str:
    """Hash of IR text, schedule, target and tool versions (the cache key)."""
    payload = json.dumps({"ir": ir.format_kernel(kernel, locs=False), "schedule": schedule,
                          "target": target, "versions": tool_versions()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def source_path(kernel: ir.Kernel, schedule: dict, target: str) -> Path:
    """Write the generated source (if not already there) and return its path."""
    path = cache_dir() / f"{kernel.name}_{source_key(kernel, schedule, target)}.py"
    return source_cache.write_once(path, lambda: lower.emit(kernel, schedule, target))


def load(kernel: ir.Kernel, schedule: dict, target: str):
    """The generated module (imported once per process and interpreter mode)."""
    path = source_path(kernel, schedule, target)
    key = f"{path}:{interpreting()}"
    if key not in _MODULES:
        mode = "interp" if interpreting() else "jit"
        _MODULES[key] = source_cache.import_file(path, f"hola_generated_{path.stem}_{mode}")
    return _MODULES[key]


# (id of the IR kernel, schedule items, target, interpreting) -> (kernel, launch function, module):
# a repeated launch (decoding calls one kernel per token) costs a dict lookup, not a hash of the
# IR's text. The entry holds the kernel, so its id stays its own.
_LAUNCH_CACHE: dict[tuple, tuple] = {}


def _prepared(kernel: ir.Kernel, schedule: dict, target: str):
    key = (id(kernel), tuple(sorted(schedule.items())), target, interpreting())
    hit = _LAUNCH_CACHE.get(key)
    if hit is not None and hit[0] is kernel:
        return hit[1], hit[2]
    if (why := versions.problem(target)) is not None:
        raise RuntimeError(why)
    module = load(kernel, schedule, target)
    fn = getattr(module, lower.kernel_function_name(kernel))
    _LAUNCH_CACHE[key] = (kernel, fn, module)
    return fn, module


def launch(kernel: ir.Kernel, schedule: dict, args: Mapping[str, Any], target: str) -> None:
    """Run ``kernel`` with ``args`` ({param: tensor or number}) as generated for ``target``;
    outputs are written in place. An output may be the very tensor of an input (a state updated
    in place): the interpreter, which copies every argument in and back out, then gets a copy
    of that output, written back after the launch."""
    fn, module = _prepared(kernel, schedule, target)
    sizes = kernel.sizes_of(args)
    grid = kernel.grid_extents(sizes)
    if 0 in grid:
        return
    call, aliased = [], []
    inputs = {args[p.name].data_ptr() for p in kernel.params if p.kind == "in"} if interpreting() else ()
    for p in kernel.params:
        x = sizes[p.name] if p.kind == "size" else args[p.name]
        if p.kind == "out" and x.data_ptr() in inputs:
            aliased.append((x, x.clone()))
            x = aliased[-1][1]
        call.append(x)
    fn[grid](*call, num_warps=module.NUM_WARPS, num_stages=module.NUM_STAGES, enable_fp_fusion=FP_FUSION)
    for x, copy in aliased:
        x.copy_(copy)
