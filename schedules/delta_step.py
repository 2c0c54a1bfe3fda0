"""Schedule knobs of the delta_step kernel (decoding): warps only. A program holds its head's
whole state, so there is no tile to choose."""

from __future__ import annotations

from schedules.space import Knob, Space

WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")

TRITON = Space("delta_step", "triton", (WARPS,), defaults={"*": {"num_warps": 4}})
EAGER = Space("delta_step", "eager", (), defaults={"*": {}})
SPACES = {"triton": TRITON, "eager": EAGER}
