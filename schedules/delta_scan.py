"""Schedule knobs of the delta_scan kernel: how it is split into kernels, V tile, warps, stages,
dot precision, chunk size."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space, dot_precision_accepted

TILES = (
    Knob("BV", (16, 32, 64, 128), "value columns per program (the state tile is [BV, K])"),
    Knob("chunk_size", (16, 32, 64, 128), "scan chunk BT (on GPUs the schedule's; in the interpreter only when a config gives it)"),
)
# How the scan is cut into kernels (hola_dsl/kernels/delta_scan.py and delta_scan_phases.py).
SPLITS = ("fused", "prepare+recur+output", "prepare+recur_output")
SPLIT = Knob("split", SPLITS,
             "fused: one kernel per (V tile, b, h) does everything chunk by chunk (the CPU's choice: a "
             "program holds the whole V); prepare+recur+output: chunk-parallel W/U preparation, a "
             "two-product sequential recurrence, chunk-parallel output (GPUs); prepare+recur_output: the "
             "recurrence writes the output itself")
PREPARE_COLS = Knob("prepare_cols", (16, 32, 64),
                    "key and value columns the prepare phase loads per step (its 16 x 16 blocks are "
                    "register-bound: float32 operands on GPUs want 16)")
KNOBS = TILES + (SPLIT, PREPARE_COLS)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
PREPARE_WARPS = Knob("prepare_warps", (1, 2, 4, 8), "warps per program of the prepare phase (Triton)")
# Phase kernels whose warps a knob of their own sets (the others take num_warps; read through
# ``schedules.warps_knob``).
PROGRAM_WARPS = {"delta_scan_prepare": "prepare_warps"}
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the chunk loop")
PRECISION = DOT_PRECISION

# The phases run on GPUs; the CPU keeps the fused kernel (it does not recompute the chunk's solve
# when a program holds all of V, and writes no per-chunk states).
_PHASES = "prepare+recur+output"

# GPU defaults (`hola build`, K = V = 128): every kernel of the split without register spills on
# sm_80, sm_90, sm_100 and gfx942 in bfloat16 and float32. float32 operands (and 3xTF32's split of
# each into two) take twice the registers: float32 inputs get 32-token chunks, 16-column prepare
# steps and 16-column V tiles. On NVIDIA the bf16 prepare (its float32 -> bf16 casts rounded to
# nearest even, hola_dsl/backends/triton/lower.py) takes eight warps. The recurrence that also writes the
# output does four products a chunk: eight warps on NVIDIA, and 32-token chunks (its prepare then
# stores a smaller Q K^T block) with 64-column V tiles in bf16, 16-token chunks in float32. TF32
# dots stay within the bf16 tolerance; float32 inputs get the target's float32 precision
# (hola_dsl.backends.triton.schedule, schedules.space.float32_dot_precision).
# `hola build --dtype float32` / `--config '{"split": ...}'` shows each.
_GPU = {"BV": 32, "chunk_size": 64, "split": _PHASES, "prepare_cols": 64, "num_warps": 4, "prepare_warps": 4,
        "num_stages": 1, "dot_precision": "tf32"}
TRITON = Space(
    "delta_scan", "triton", KNOBS + (WARPS, PREPARE_WARPS, STAGES, PRECISION),
    defaults={
        "*": {"BV": 32, "chunk_size": 64, "split": "fused", "prepare_cols": 64, "num_warps": 4, "prepare_warps": 4,
              "num_stages": 1, "dot_precision": "ieee"},
        "sm_": {**_GPU, "prepare_warps": 8},
        "gfx": _GPU,
        # Triton rejects TF32 on these (schedules.targets.dot_precision_problem)
        "gfx90a": {**_GPU, "dot_precision": "ieee"},
        "gfx950": {**_GPU, "dot_precision": "ieee"},
    },
    constraints=(dot_precision_accepted,),
    overlays=(
        ({"dtype": "float32"}, {"sm_": {"chunk_size": 32, "prepare_cols": 16, "BV": 16, "prepare_warps": 4},
                                "gfx": {"chunk_size": 32, "prepare_cols": 16, "BV": 16}}),
        ({"split": "prepare+recur_output"}, {"sm_": {"num_warps": 8, "chunk_size": 32, "BV": 64}}),
        ({"split": "prepare+recur_output", "dtype": "float32"}, {"sm_": {"chunk_size": 16, "BV": 32},
                                                                  "gfx": {"chunk_size": 16, "BV": 32}}),
        # The fused kernel holds the whole chunk (solve, u, o, update) in registers: the smallest tiles.
        ({"split": "fused"}, {"sm_": {"BV": 16, "chunk_size": 16}, "gfx": {"BV": 16, "chunk_size": 16}}),
    ),
)
EAGER = Space("delta_scan", "eager", KNOBS, defaults={"*": {"BV": 64, "chunk_size": 64, "split": "fused", "prepare_cols": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
