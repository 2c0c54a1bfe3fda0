"""Schedule knobs of the cache_read kernel: query tile, key tile, warps, stages."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space

TILES = (
    Knob("BQ", (16, 32, 64, 128), "queries per program (within one cache block)"),
    Knob("BKV", (16, 32, 64, 128), "block tokens per step of the online softmax"),
)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the key loop")

# GPU defaults: zero spills on sm_90 for K = V = 128, W = 64 (see `hola build`); TF32 dots stay
# within the bf16 tolerance (checked by emulating TF32 rounding in the eager interpreter).
TRITON = Space("cache_read", "triton", TILES + (WARPS, STAGES, DOT_PRECISION),
               defaults={"*": {"BQ": 64, "BKV": 32, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
                         "sm_": {"BQ": 64, "BKV": 32, "num_warps": 8, "num_stages": 1, "dot_precision": "tf32"},
                         "sm_80": {"BQ": 16, "BKV": 32, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
                         "gfx": {"BQ": 64, "BKV": 32, "num_warps": 8, "num_stages": 1, "dot_precision": "tf32"}})
EAGER = Space("cache_read", "eager", TILES, defaults={"*": {"BQ": 64, "BKV": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
