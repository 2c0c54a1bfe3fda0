"""Which Triton versions generate correct code for which targets.

Datacenter Blackwell (sm_100 family: tcgen05 MMAs with the accumulator in tensor memory)
miscompiles two dots chained through one accumulator, ``acc = dot(a1, b1, acc); acc = dot(a2,
b2, acc)``, in Triton up to 3.8 (wrong, deterministic results; Triton issue 10821, fixed by
pull request 10988 in July 2026, first released in 3.9). The scan's output is that pattern
(``o = q S^T + (causal Q K^T) u`` accumulated in one tile), and so is any later kernel
that sums two products, so building or launching for those targets needs Triton 3.9 or newer.
Consumer Blackwell (sm_120) has no tcgen05 and is not affected.
"""

from __future__ import annotations

import re
from typing import Optional

BLACKWELL_FIXED = (3, 9)


def _version(text: str) -> Optional[tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def problem(target: str, version: Optional[str] = None) -> Optional[str]:
    """None when Triton ``version`` (default: the installed one) compiles our kernels correctly
    for ``target`` ("sm_100", "gfx942", ...), else why not (a sentence naming the fix)."""
    if version is None:
        import triton
        version = triton.__version__
    if not re.fullmatch(r"sm_1[01]\d[a-z]?", target):
        return None
    v = _version(version)
    if v is not None and v >= BLACKWELL_FIXED:
        return None
    need = ".".join(map(str, BLACKWELL_FIXED))
    return (f"Triton {version} miscompiles two dots chained through one accumulator on {target} (datacenter "
            f"Blackwell; Triton issue 10821), which the scan's output does; install triton>={need}")
