"""Golden generated sources: any change to the code a kernel lowers to (Triton, and TileLang's C
and CUDA dialects) shows up here, in review, as a diff of tests/golden/*.py. After an intended
change regenerate them with

    HOLA_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py
"""

import difflib
import os
from pathlib import Path

import pytest

from hola_dsl.emit import emit_source

GOLDEN = Path(__file__).parent / "golden"
CASES = [("triton", "delta_scan", "sm_90"), ("triton", "cache_select", "sm_90"), ("triton", "cache_read", "sm_90"),
         ("triton", "cache_read", "gfx942")]
CASES += [("tilelang", kernel, target) for target in ("cpu", "sm_90a")
          for kernel in ("delta_scan", "cache_select", "cache_read")]


@pytest.mark.parametrize("backend,kernel,target", CASES)
def test_generated_source_matches_golden(backend, kernel, target):
    name, text, _ = emit_source(kernel, backend, target)
    path = GOLDEN / name
    if os.environ.get("HOLA_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; create it with HOLA_UPDATE_GOLDEN=1"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            str(path), "generated", n=2))
        pytest.fail(f"generated {backend} source for {kernel}/{target} changed; if intended, rerun with "
                    f"HOLA_UPDATE_GOLDEN=1 and commit tests/golden/\n{diff[:6000]}")


@pytest.mark.parametrize("backend,kernel,target", CASES)
def test_generated_source_is_valid_python(backend, kernel, target):
    _, text, _ = emit_source(kernel, backend, target)
    compile(text, f"{kernel}.py", "exec")
