"""Schedule knobs of the delta_scan_backward kernel (hola_dsl/kernels/delta_scan_backward.py):
the forward's recomputing phases take the forward's knobs (V tile, chunk, prepare steps, warps);
the backward's own are the key pieces of the recurrences and the V step of the gradients.
The chunk is the schedule's on every backend, not the forward call's ``chunk_size`` (the
gradient kernel's work per token grows with it; any chunk gives the same gradients up to
rounding)."""

from __future__ import annotations

from schedules import delta_scan as _scan
from schedules.space import DOT_PRECISION, Knob, Space, dot_precision_accepted

KEY_COLS = Knob("key_cols", (16, 32, 64), "key columns per piece of the state in the recurrences and the gradients")
GRAD_COLS = Knob("grad_cols", (16, 32, 64), "value columns the gradient kernel takes per step")
KNOBS = _scan.TILES + (_scan.PREPARE_COLS, KEY_COLS, GRAD_COLS)
PROGRAM_WARPS = {"delta_scan_prepare": "prepare_warps"}

_ALL = {"BV": 32, "chunk_size": 64, "prepare_cols": 64, "key_cols": 64, "grad_cols": 32}
# GPUs: the gradient kernel holds dP, dTm and three [BT, key_cols] accumulators per key piece in
# registers through its V loop. K = V = 128, bfloat16 (`hola build --kernel delta_scan_backward`):
# 32-token chunks spill on sm_90 (164 to 1172 bytes with 4 or 8 warps, 32 or 64 key columns);
# 16-token chunks do not (241 registers with 8 warps on sm_90, 208 with 4 on gfx942). float32
# (3xTF32 dots on NVIDIA) takes 255 on sm_80 to sm_120 without spills; no knob helps there (32
# key columns, 4 or 16 warps, 32-token chunks, 2 stages all spill 128 to 13252 bytes on sm_90).
_GPU = {**_ALL, "chunk_size": 16, "grad_cols": 16, "num_warps": 8, "prepare_warps": 4, "num_stages": 1,
        "dot_precision": "tf32"}
_AMD = {**_GPU, "num_warps": 4}
TRITON = Space(
    "delta_scan_backward", "triton", KNOBS + (_scan.WARPS, _scan.PREPARE_WARPS, _scan.STAGES, DOT_PRECISION),
    defaults={
        "*": {**_ALL, "num_warps": 4, "prepare_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
        "sm_": _GPU,
        "gfx": _AMD,
        "gfx90a": {**_AMD, "dot_precision": "ieee"},
        "gfx950": {**_AMD, "dot_precision": "ieee"},
    },
    constraints=(dot_precision_accepted,),
    overlays=(({"dtype": "float32"}, {"sm_": {"prepare_cols": 16, "BV": 16}, "gfx": {"prepare_cols": 16, "BV": 16}}),),
)
EAGER = Space("delta_scan_backward", "eager", KNOBS, defaults={"*": {**_ALL, "BV": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
