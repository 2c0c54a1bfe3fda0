"""Backend lowerings of the tile IR, one module per backend (op name -> lowering)."""

import linecache
import os


def source_comment(source: str, loc: str) -> str:
    """The comment a lowering writes above the code of kernel line ``loc`` ("file.py:LINE"):
    the location and, when it can be read, that line's text. ``loc`` names the kernel's
    ``source`` file or a helper module beside it (a function the kernel calls)."""
    name, _, line = loc.rpartition(":")
    path = os.path.join(os.path.dirname(source), name) if source else ""
    text = linecache.getline(path, int(line)).strip() if path else ""
    return f"# {loc}: {text}" if text else f"# {loc}"
