"""Schedule knobs of the delta_scan kernel: V tile, warps, stages, dot precision, chunk size."""

from __future__ import annotations

from schedules.space import DOT_PRECISION, Knob, Space

TILES = (
    Knob("BV", (16, 32, 64, 128), "value columns per program (the state tile is [K, BV])"),
    Knob("chunk_size", (16, 32, 64, 128), "scan chunk BT; used only when given in a config"),
)
WARPS = Knob("num_warps", (1, 2, 4, 8), "warps per program")
STAGES = Knob("num_stages", (1, 2, 3, 4), "software pipelining depth of the chunk loop")
PRECISION = DOT_PRECISION


def _state_fits(config, target, dims):
    k = max(16, 1 << (int(dims.get("K", 128)) - 1).bit_length())
    if k * config["BV"] > 128 * 64 and config["num_warps"] < 8:
        return f"state tile {k}x{config['BV']} needs num_warps=8 to stay in registers"
    return None


TRITON = Space(
    "delta_scan", "triton", TILES + (WARPS, STAGES, PRECISION),
    defaults={
        "*": {"BV": 32, "chunk_size": 64, "num_warps": 4, "num_stages": 1, "dot_precision": "ieee"},
        "sm_": {"BV": 32, "chunk_size": 64, "num_warps": 4, "num_stages": 2, "dot_precision": "ieee"},
        "gfx": {"BV": 32, "chunk_size": 64, "num_warps": 4, "num_stages": 2, "dot_precision": "ieee"},
    },
    constraints=(_state_fits,),
)
EAGER = Space("delta_scan", "eager", TILES, defaults={"*": {"BV": 64, "chunk_size": 64}})
SPACES = {"triton": TRITON, "eager": EAGER}
