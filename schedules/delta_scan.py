"""Schedule knobs of the delta_scan kernel: how it is split into kernels, V tile, warps, stages,
dot precision, chunk size."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space

TILES = (
    Knob("BV", (16, 32, 64, 128), "value columns per program (the state tile is [BV, K])"),
    Knob("chunk_size", (16, 32, 64, 128), "scan chunk BT (on GPUs the schedule's; in the interpreter only when a config gives it)"),
)
# How the scan is cut into kernels (hola_dsl/kernels/delta_scan.py and delta_scan_phases.py).
SPLITS = ("fused", "prepare+recur+output", "prepare+recur_output")
SPLIT = Knob("split", SPLITS,
             "fused: one kernel per (V tile, b, h) does everything chunk by chunk (the CPU's choice: a "
             "program holds the whole V); prepare+recur+output: chunk-parallel W/U preparation, a "
             "two-dot sequential recurrence, chunk-parallel output (GPUs); prepare+recur_output: the "
             "recurrence writes the output itself")
KNOBS = TILES + (SPLIT,)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the chunk loop")
PRECISION = DOT_PRECISION

# The phases run on GPUs; the CPU keeps the fused kernel (it does not recompute the chunk's solve
# when a program holds all of V, and writes no per-chunk states).
_PHASES = "prepare+recur+output"

# GPU defaults: the smallest tiles keep the fused chunk (solve, u, o, state update) in registers
# with zero spills on sm_90 for K = V = 128 (see `hola build`); TF32 dots stay within the bf16
# tolerance (checked by emulating TF32 rounding in the eager interpreter).
TRITON = Space(
    "delta_scan", "triton", KNOBS + (WARPS, STAGES, PRECISION),
    defaults={
        "*": {"BV": 32, "chunk_size": 64, "split": "fused", "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
        "sm_": {"BV": 32, "chunk_size": 64, "split": _PHASES, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
        "gfx": {"BV": 32, "chunk_size": 64, "split": _PHASES, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
    },
)
EAGER = Space("delta_scan", "eager", KNOBS, defaults={"*": {"BV": 64, "chunk_size": 64, "split": "fused"}})
SPACES = {"triton": TRITON, "eager": EAGER}
