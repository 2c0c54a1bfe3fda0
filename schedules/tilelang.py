"""Schedule spaces of backend "tilelang": the kernels' tile knobs plus the knobs of each dialect.

CPU dialect (target "cpu"): ``cpu_mr`` x ``cpu_nr`` is the register tile of the dot micro-kernel
(rows of A broadcast, a multiple of the SIMD width of B's columns streamed). How many threads
share the program grid is not a schedule knob: like any torch op, a launch uses torch's
intra-op thread count (``torch.get_num_threads()``), or a config's ``cpu_threads`` launch
setting (``LAUNCH``). A tuned record therefore carries no thread
count that would pin a 64-core machine to the 2 threads it was tuned with. The tile knobs (BV, BQ, BKV, BC, chunk_size)
set how much a program holds at once, i.e. what must fit the caches: on a CPU a program with the
whole V (BV = V) avoids recomputing the chunk's triangular solve once per V tile.
CUDA dialect (targets "sm_*"): ``threads`` per block and ``num_stages`` of ``T.Pipelined``.
Knobs of the other dialect are pinned to their defaults by a constraint, so a search on one
target never spends trials on knobs that do nothing there.
"""

from __future__ import annotations

from typing import Optional

from schedules import cache_read as _read, cache_read_backward as _read_bwd, cache_read_step as _read_step
from schedules import cache_select as _select
from schedules import delta_scan as _scan, delta_scan_backward as _scan_bwd, lola_select as _lola
from schedules.space import Knob, Setting, Space

CPU_MR = Knob("cpu_mr", (1, 2, 4, 8), "rows of the dot micro-kernel's register tile (CPU dialect)")
CPU_NR = Knob("cpu_nr", (16, 32, 64), "columns of the dot micro-kernel's register tile (CPU dialect)")
THREADS = Knob("threads", (64, 128, 256), "threads per block (CUDA dialect)")
STAGES = Knob("num_stages", (1, 2, 3), "T.Pipelined depth of a pipelined loop (CUDA dialect)")
# T.gemm's float32 operands run on TF32 tensor cores, which meet docs/tolerances.md's bf16 row, not float32's
# 1e-5: float32 inputs take FMA fp32 dots (exact, slower) unless a config asks for TF32.
PRECISION = Knob("dot_precision", ("tf32", "ieee"),
                 "float32 dots of the CUDA dialect: TF32 tensor cores (T.gemm) or FMA fp32 (exact, slower)")

CPU_KNOBS = (CPU_MR, CPU_NR)
# Launch settings a config may carry next to the knobs (see the module docstring). The bound is
# a sanity limit on what a shared record may ask for; a launch never uses more than the cores.
CPU_THREADS = Setting("cpu_threads", 1, 4096, "threads sharing the program grid")
LAUNCH = (CPU_THREADS,)
CUDA_KNOBS = (THREADS, STAGES, PRECISION)
# 8 x 16: eight broadcast rows against one 16-float (AVX-512) column vector, eight accumulator
# registers; measured on an AMD EPYC (Zen 4) at the bench shape it beat 4 x 32 by 20% on the
# scan (48 -> 38 ms) and the cache read (39 -> 31 ms), one thread.
_CPU_DEFAULT = {"cpu_mr": 8, "cpu_nr": 16}
_CUDA_DEFAULT = {"threads": 128, "num_stages": 2, "dot_precision": "tf32"}


def _one_dialect(config, target, dims):
    """Knobs of the other dialect stay at their defaults."""
    cpu = not target.startswith(("sm_", "gfx"))
    pinned = _CUDA_DEFAULT if cpu else _CPU_DEFAULT
    for name, value in pinned.items():
        if config.get(name, value) != value:
            return f"{name}: does nothing on {target}; keep it at {value}"
    return None


def _space(kernel: str, tiles: tuple, cpu_tiles: dict, cuda_tiles: dict, cuda_pins: Optional[dict] = None,
           overlays: tuple = ()) -> Space:
    """cuda_pins: CUDA-dialect knobs whose default differs for this kernel on every dtype;
    overlays: the kernel's own conditional defaults (``Space``), after the float32 one."""
    return Space(
        kernel, "tilelang", tiles + CPU_KNOBS + CUDA_KNOBS,
        defaults={
            "*": {**cpu_tiles, **_CPU_DEFAULT, **_CUDA_DEFAULT},
            "sm_": {**cuda_tiles, **_CPU_DEFAULT, **_CUDA_DEFAULT, **(cuda_pins or {})},
        },
        overlays=(({"dtype": "float32"}, {"sm_": {"dot_precision": "ieee"}}),) + overlays,
        constraints=(_one_dialect,),
        launch=LAUNCH,
    )


# The fused scan on CUDA (`hola build --backend tilelang --config '{"split": "fused"}'`, sm_90a,
# bfloat16, K = V = 128): with 64-token chunks its pipelined loop (cp.async, 2 stages) needed
# 286720 bytes of shared memory and spilled 616 bytes; 32-token chunks 129408 (16-column V
# tiles: 117248), over the 113 KB that lets two blocks share an SM. 16-token chunks keep the
# pipeline: 78528 bytes, 156 registers, no spills. (Unpipelined 32-token chunks need 73728
# bytes but spill 108 with 128 threads, and take 182 registers with 256: one block per SM.)
_FUSED_CUDA = ({"split": "fused"}, {"sm_": {"chunk_size": 16}})

SPACES = {
    "delta_scan": _space("delta_scan", _scan.KNOBS, {"BV": 128, "chunk_size": 64, "split": "fused", "prepare_cols": 64},
                         {"BV": 32, "chunk_size": 64, "split": "prepare+recur+output", "prepare_cols": 64},
                         overlays=(_FUSED_CUDA,)),
    # CPU: 32-token chunks. The gradient kernel's [BT, BT] products cost BT per token; measured
    # (AMD EPYC, one thread, float32, chunk 32 against 64): 18 against 27 ms at B=8 T=256 H=2
    # K=V=64, 151 against 171 ms of launches at B=1 T=4096 H=4 K=V=128. BV = V: one program
    # holds all of V (no recomputed solve per V tile).
    "delta_scan_backward": _space("delta_scan_backward", _scan_bwd.KNOBS,
                                  {"BV": 128, "chunk_size": 32, "prepare_cols": 64, "key_cols": 64, "grad_cols": 64},
                                  {"BV": 32, "chunk_size": 32, "prepare_cols": 64, "key_cols": 64, "grad_cols": 16}),
    "cache_select": _space("cache_select", _select.KNOBS, {"BC": 64, "split": "serial"},
                           {"BC": 64, "split": "blocks+merge"}),
    # CUDA: BQ = BKV = 64 needs 198 KB of shared memory per block (over an A100's 164 KB);
    # 32 x 32 needs 132 KB. CPU: 64 x 64 re-measured on the keys-major kernel (AMD EPYC, bench
    # shape, one thread): 25.8 ms against 25.9 (BKV 32), 26.0 (32 x 32), 28.7 (BQ 128).
    "cache_read": _space("cache_read", _read.TILES, {"BQ": 64, "BKV": 64}, {"BQ": 32, "BKV": 32}),
    # CUDA, K = V = 128, bfloat16 (nvcc, sm_80): 16 x 16 holds 77 KB (query pass), 63 KB (key
    # pass) and 22 KB (the forward a call without saved o/lse runs) of shared memory per block,
    # no spills: under the 99 KB of sm_86/sm_89 (and an A100's 163 KB). 32 x 32 held 130 and
    # 121 KB (sm_90a); one pipeline stage instead of two changed nothing.
    # CPU: 64 x 64 measured against 32 x 32, 32 x 64, 64 x 32 and 128 x 64 at the bench shape
    # (B=1, T=4096, H=4, K=V=128, W=64, C=256, one thread): the others took 1.03-1.22x as long.
    "cache_read_backward": _space("cache_read_backward", _read_bwd.TILES, {"BQ": 64, "BKV": 64}, {"BQ": 16, "BKV": 16}),
    # Scores rank the candidates: TF32 dots would reorder near ties, so FMA fp32 for every dtype.
    "lola_select": _space("lola_select", _lola.TILES, {"BC": 64}, {"BC": 32}, {"dot_precision": "ieee"}),
    # Decoding: one program per (query, b, h) holds a head's state or one query's softmax.
    "delta_step": _space("delta_step", (), {}, {}),
    "cache_read_step": _space("cache_read_step", _read_step.TILES, {"BKV": 32}, {"BKV": 32}),
}
