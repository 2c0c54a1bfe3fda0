"""Schedule knobs of the cache_select kernel: tokens merged per step, warps."""

from __future__ import annotations

from schedules.space import Knob, Space

TILES = (Knob("BC", (16, 32, 64, 128, 256), "block tokens merged into the cache per step"),)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")

TRITON = Space("cache_select", "triton", TILES + (WARPS,),
               defaults={"*": {"BC": 64, "num_warps": 4}, "sm_": {"BC": 64, "num_warps": 8},
                         "gfx": {"BC": 64, "num_warps": 8}})
EAGER = Space("cache_select", "eager", TILES, defaults={"*": {"BC": 128}})
SPACES = {"triton": TRITON, "eager": EAGER}
