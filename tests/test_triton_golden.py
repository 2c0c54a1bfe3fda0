"""Golden generated sources: any change to the Triton code a kernel lowers to shows up here, in
review, as a diff of tests/golden/*.py. After an intended change regenerate them with

    HOLA_UPDATE_GOLDEN=1 python3 -m pytest tests/test_triton_golden.py
"""

import difflib
import os
from pathlib import Path

import pytest

from hola_dsl.emit import emit_source

GOLDEN = Path(__file__).parent / "golden"
# (kernel, target, config): delta_scan's default on GPUs is its phases (one file, kernel after
# kernel); its fused kernel is pinned by a config.
CASES = [("delta_scan", "sm_90", None), ("delta_scan", "sm_90", {"split": "fused"}), ("cache_select", "sm_90", None),
         ("cache_read", "sm_90", None), ("cache_read", "gfx942", None)]


@pytest.mark.parametrize("kernel,target,config", CASES)
def test_generated_source_matches_golden(kernel, target, config):
    name, text, _ = emit_source(kernel, "triton", target, config)
    if config:
        name = name.replace(f"_{target}", "".join(f"_{v}" for v in config.values()) + f"_{target}")
    path = GOLDEN / name
    if os.environ.get("HOLA_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; create it with HOLA_UPDATE_GOLDEN=1"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            str(path), "generated", n=2))
        pytest.fail(f"generated Triton source for {kernel}/{target} changed; if intended, rerun with "
                    f"HOLA_UPDATE_GOLDEN=1 and commit tests/golden/\n{diff[:6000]}")


def test_generated_source_is_valid_python():
    for kernel, target, config in CASES:
        _, text, _ = emit_source(kernel, "triton", target, config)
        compile(text, f"{kernel}.py", "exec")
