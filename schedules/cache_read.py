"""Schedule knobs of the cache_read kernel: query tile, key tile, warps, stages."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space, dot_precision_accepted

TILES = (
    Knob("BQ", (16, 32, 64, 128), "queries per program (within one cache block)"),
    Knob("BKV", (16, 32, 64, 128), "block tokens per step of the online softmax"),
)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the key loop")

# GPU defaults: zero spills for K = V = 128, W = 64 on every target of `hola build` (which fails a
# build that spills); TF32 dots stay within the bf16 tolerance (checked by emulating TF32 rounding
# in the eager interpreter). On AMD 64-query tiles spill (121 on gfx942): 32 do not, and
# gfx90a and gfx950 take FMA fp32 dots (Triton rejects TF32 there) with 16-token key steps.
TRITON = Space("cache_read", "triton", TILES + (WARPS, STAGES, DOT_PRECISION),
               defaults={"*": {"BQ": 64, "BKV": 32, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
                         "sm_": {"BQ": 64, "BKV": 32, "num_warps": 8, "num_stages": 1, "dot_precision": "tf32"},
                         "sm_80": {"BQ": 16, "BKV": 32, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
                         "gfx": {"BQ": 32, "BKV": 32, "num_warps": 8, "num_stages": 1, "dot_precision": "tf32"},
                         "gfx90a": {"BQ": 32, "BKV": 16, "num_warps": 8, "num_stages": 1, "dot_precision": "ieee"},
                         "gfx950": {"BQ": 32, "BKV": 16, "num_warps": 8, "num_stages": 1, "dot_precision": "ieee"}},
               # float32 operands take twice the registers: 16 x 16 tiles on AMD. On NVIDIA 3xTF32
               # float32 spills at every tile size (the gathered cache is held whole): the
               # FlashAttention-style rewrite is what fixes it.
               overlays=(({"dtype": "float32"}, {"gfx": {"BQ": 16, "BKV": 16}}),),
               constraints=(dot_precision_accepted,))
EAGER = Space("cache_read", "eager", TILES, defaults={"*": {"BQ": 64, "BKV": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
