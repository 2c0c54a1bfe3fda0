"""Schedule space of backend "reference" (chunked PyTorch, hola_dsl/backends/reference).

Only the scan has a knob: the chunk size trades the O(BT^2) intra-chunk work (the triangular
solve and the masked Q K^T) against the number of sequential inter-chunk steps, so its best
value depends on T, K, V and the machine. Selection and read have no schedule here.
"""

from __future__ import annotations

from schedules.space import Knob, Space

SPACES = {
    "delta_scan": Space(
        kernel="delta_scan",
        backend="reference",
        knobs=(Knob("chunk_size", (16, 32, 64, 128), "tokens per chunk of the WY/UT form (a power of two)"),),
        defaults={"*": {"chunk_size": 64}},
    ),
    "cache_select": Space(kernel="cache_select", backend="reference", knobs=(), defaults={"*": {}}),
    "cache_read": Space(kernel="cache_read", backend="reference", knobs=(), defaults={"*": {}}),
    "lola_select": Space(kernel="lola_select", backend="reference", knobs=(), defaults={"*": {}}),
    "delta_step": Space(kernel="delta_step", backend="reference", knobs=(), defaults={"*": {}}),
    "cache_read_step": Space(kernel="cache_read_step", backend="reference", knobs=(), defaults={"*": {}}),
}
