"""Backend lowerings of the tile IR, one module per backend (op name -> lowering)."""

import linecache


def source_comment(source: str, loc: str) -> str:
    """The comment a lowering writes above the code of kernel line ``loc`` ("file.py:LINE"):
    the location and, when the kernel's ``source`` file can be read, that line's text."""
    line_no = int(loc.rsplit(":", 1)[1])
    text = linecache.getline(source, line_no).strip() if source else ""
    return f"# {loc}: {text}" if text else f"# {loc}"
