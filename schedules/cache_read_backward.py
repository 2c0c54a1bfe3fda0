"""Schedule knobs of the cache_read backward (two launches: query tiles, then key tiles)."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space, dot_precision_accepted

TILES = (
    Knob("BQ", (16, 32, 64, 128), "queries per program of the query pass, and per step of the key pass"),
    Knob("BKV", (16, 32, 64, 128), "keys per program of the key pass, and per step of the query pass"),
)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the loops")

# GPU defaults: no spills at K = V = 128, W = 64, bf16 (`hola build`) with 8 warps on NVIDIA
# (sm_80, sm_90, sm_100; at 4 warps the query pass, which also applies the RMSNorm's backward,
# spills 368-424 bytes on sm_80/sm_90 and the key pass 16 on sm_80), gfx942 at 16 x 16 with 4.
# Not timed on a GPU yet. float32 with 3xTF32 spills on sm_80 (as the forward's does) and has no
# overlay yet.
TRITON = Space("cache_read_backward", "triton", TILES + (WARPS, STAGES, DOT_PRECISION),
               defaults={"*": {"BQ": 32, "BKV": 32, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
                         "sm_": {"BQ": 32, "BKV": 32, "num_warps": 8, "num_stages": 1, "dot_precision": "tf32"},
                         "sm_100": {"BQ": 32, "BKV": 32, "num_warps": 8, "num_stages": 1, "dot_precision": "tf32"},
                         "gfx": {"BQ": 16, "BKV": 16, "num_warps": 4, "num_stages": 1, "dot_precision": "tf32"},
                         "gfx90a": {"BQ": 16, "BKV": 16, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
                         "gfx950": {"BQ": 16, "BKV": 16, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"}},
               constraints=(dot_precision_accepted,))
EAGER = Space("cache_read_backward", "eager", TILES, defaults={"*": {"BQ": 64, "BKV": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
