"""Schedule knobs of the cache_read_step kernel (decoding): pending-block tokens per step of the
online softmax, warps."""

from __future__ import annotations

from schedules.space import Knob, Space

TILES = (Knob("BKV", (16, 32, 64, 128), "pending-block tokens per step of the online softmax"),)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")

TRITON = Space("cache_read_step", "triton", TILES + (WARPS,), defaults={"*": {"BKV": 32, "num_warps": 4}})
EAGER = Space("cache_read_step", "eager", TILES, defaults={"*": {"BKV": 32}})
SPACES = {"triton": TRITON, "eager": EAGER}
