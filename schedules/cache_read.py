"""Schedule knobs of the cache_read kernel: query tile, key tile, logits layout, warps, stages."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space, dot_precision_accepted

TILES = (
    Knob("BQ", (16, 32, 64, 128), "queries per program (within one cache block)"),
    Knob("BKV", (16, 32, 64, 128), "keys per step of the online softmax (block tokens, and cached entries)"),
)
LAYOUT = Knob("layout", ("queries", "keys"),
              "logits as queries x keys (FlashAttention's: P feeds P @ V as it stands) or keys x queries "
              "(the queries' operand is transposed once per program; reductions run down the keys)")
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the key loops")

# GPU defaults: zero spills for K = V = 128, W = 64 in bfloat16 and float32 on every target of
# `hola build` (which fails a build that spills). bf16/fp16 inputs take operands of their dtype:
# 64 x 64 steps with 8 warps on sm_90 and sm_100 (222 registers on sm_90), 64 x 32 on the
# 255-register-capped sm_8x and sm_120 (4 warps spill there). float32 inputs take 3xTF32 on
# NVIDIA (hola_dsl.backends.triton.schedule), which splits every operand in two: 32 x 32 with 8
# warps (244 registers on sm_90; 4 warps spill), two stages on sm_120 (three need 104 KB of its
# 99 KB of shared memory). Loads are pipelined where the target has
# cp.async or TMA (sm_80 on); AMD keeps one stage and FMA fp32 dots where Triton rejects TF32.
_SM = {"layout": "queries", "num_warps": 8, "num_stages": 3, "dot_precision": "tf32"}
_GFX = {"BQ": 64, "BKV": 32, "layout": "queries", "num_warps": 4, "num_stages": 1}
TRITON = Space("cache_read", "triton", TILES + (LAYOUT, WARPS, STAGES, DOT_PRECISION),
               defaults={"*": {"BQ": 64, "BKV": 32, "layout": "queries", "num_warps": 4, "num_stages": 1,
                               "dot_precision": "ieee"},
                         "sm_": {"BQ": 64, "BKV": 64, **_SM},
                         "sm_8": {"BQ": 64, "BKV": 32, **_SM},
                         "sm_12": {"BQ": 64, "BKV": 32, **_SM},
                         "gfx": {**_GFX, "dot_precision": "tf32"},
                         "gfx90a": {**_GFX, "dot_precision": "ieee"},
                         "gfx950": {**_GFX, "dot_precision": "ieee"}},
               overlays=(({"dtype": "float32"}, {"sm_": {"BQ": 32, "BKV": 32},
                                                 "sm_12": {"BQ": 32, "BKV": 32, "num_stages": 2}}),),
               constraints=(dot_precision_accepted,))
# The eager interpreter runs the GPU form by default (its tests check what GPUs run).
EAGER = Space("cache_read", "eager", TILES + (LAYOUT,), defaults={"*": {"BQ": 64, "BKV": 64, "layout": "queries"}})
SPACES = {"triton": TRITON, "eager": EAGER}
