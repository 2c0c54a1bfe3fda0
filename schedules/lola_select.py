"""Schedule knobs of the lola_select kernel (policy "lola"'s selection): block tokens scored and
merged per step, warps."""

from __future__ import annotations

from schedules.space import Knob, Space

TILES = (Knob("BC", (16, 32, 64, 128), "block tokens scored and merged into the cache per step"),)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")

TRITON = Space("lola_select", "triton", TILES + (WARPS,),
               defaults={"*": {"BC": 32, "num_warps": 4}, "sm_": {"BC": 32, "num_warps": 4},
                         "gfx": {"BC": 32, "num_warps": 4}})
EAGER = Space("lola_select", "eager", TILES, defaults={"*": {"BC": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
