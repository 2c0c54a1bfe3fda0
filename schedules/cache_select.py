"""Schedule knobs of the cache_select kernel: how it is split into kernels, tokens merged per
step, warps."""

from __future__ import annotations

from schedules.space import Knob, Space

# How the selection is cut into kernels (hola_dsl/kernels/cache_select.py).
SPLITS = ("serial", "blocks+merge")
SPLIT = Knob("split", SPLITS,
             "serial: one program per (b, h) walks every token (the CPU's choice); blocks+merge: each "
             "cache block's top-w in parallel over (block, b, h), then one program per (b, h) merges "
             "w winners per block (GPUs)")
TILES = (Knob("BC", (16, 32, 64, 128, 256), "block tokens merged into the cache per step"),)
KNOBS = TILES + (SPLIT,)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")

# The CPU keeps the serial kernel: TileLang's C dialect, W = 64, C = 256, float32 scores, one
# thread, process CPU time side by side (median of 7): B=1,T=4096,H=4 serial 0.82 ms, blocks+merge
# 1.23 ms; B=2,T=16384,H=16 11.3 ms against 21.2 ms. The merge's [W, W] ranks are work the serial
# kernel never does, and a CPU has no idle SMs for the block phase to fill. GPUs take
# blocks+merge: B*H programs leave most SMs idle (32 of an H100's 132 at B=2, H=16).
TRITON = Space("cache_select", "triton", KNOBS + (WARPS,),
               defaults={"*": {"BC": 64, "split": "serial", "num_warps": 4},
                         "sm_": {"BC": 64, "split": "blocks+merge", "num_warps": 8},
                         # 64-token merges spill in the block phase on gfx942 (9 spills; the serial
                         # kernel does not); 32 do not
                         "gfx": {"BC": 32, "split": "blocks+merge", "num_warps": 8}})
EAGER = Space("cache_select", "eager", KNOBS, defaults={"*": {"BC": 128, "split": "serial"}})
SPACES = {"triton": TRITON, "eager": EAGER}
