"""Schedule knobs of the delta_scan kernel: V tile, warps, stages, dot precision, chunk size."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space

TILES = (
    Knob("BV", (16, 32, 64, 128), "value columns per program (the state tile is [BV, K])"),
    Knob("chunk_size", (16, 32, 64, 128), "scan chunk BT (on GPUs the schedule's; in the interpreter only when a config gives it)"),
)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the chunk loop")
PRECISION = DOT_PRECISION


# GPU defaults: the smallest tiles keep the fused chunk (solve, u, o, state update) in registers
# with zero spills on sm_90 for K = V = 128 (see `hola build`); TF32 dots stay within the bf16
# tolerance (checked by emulating TF32 rounding in the eager interpreter).
TRITON = Space(
    "delta_scan", "triton", TILES + (WARPS, STAGES, PRECISION),
    defaults={
        "*": {"BV": 32, "chunk_size": 64, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
        "sm_": {"BV": 16, "chunk_size": 16, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
        "gfx": {"BV": 16, "chunk_size": 16, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
    },
)
EAGER = Space("delta_scan", "eager", TILES, defaults={"*": {"BV": 64, "chunk_size": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
