"""Golden generated sources: any change to the code a kernel lowers to (Triton, and TileLang's C
and CUDA dialects) shows up here, in review, as a diff of tests/golden/*.py. After an intended
change regenerate them with

    HOLA_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden.py
"""

import difflib
import os
from pathlib import Path

import pytest

from hola_dsl.emit import emit_sources

GOLDEN = Path(__file__).parent / "golden"
KERNELS = ("delta_scan", "cache_select", "cache_read", "lola_select")
# (backend, kernel, target, dtype of the inputs, config): the C dialect's float32 dots take other
# paths (C micro-kernels) than its bfloat16 ones. On GPU targets the scan's default split is its
# phases (delta_scan_prepare/_recur/_output_<target>.py); a config pins its fused kernel
# (delta_scan_<target>.py), the CPU's default.
CASES = [("triton", kernel, "sm_90", "bfloat16", None) for kernel in KERNELS]
CASES += [("triton", "cache_read", "gfx942", "bfloat16", None)]
CASES += [("tilelang", kernel, target, dtype, None) for target, dtype in (("cpu", "bfloat16"), ("cpu", "float32"),
                                                                          ("sm_90a", "bfloat16")) for kernel in KERNELS]
CASES += [(backend, kernel, target, "bfloat16", {"split": split})
          for backend, target in (("triton", "sm_90"), ("tilelang", "sm_90a"))
          for kernel, split in (("delta_scan", "fused"), ("cache_select", "serial"))]
IDS = ["-".join(str(x) for x in case[:4]) + (f"-{case[4]['split']}" if case[4] else "") for case in CASES]


def _golden_name(name: str, dtype: str) -> str:
    return name if dtype == "bfloat16" else name.replace(".py", f"_{dtype}.py")


@pytest.mark.parametrize("backend,kernel,target,dtype,config", CASES, ids=IDS)
def test_generated_source_matches_golden(backend, kernel, target, dtype, config):
    for name, text in emit_sources(kernel, backend, target, config, dtype=dtype)[0]:    # one per DSL kernel
        path = GOLDEN / _golden_name(name, dtype)
        if os.environ.get("HOLA_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"no golden file {path}; create it with HOLA_UPDATE_GOLDEN=1"
        expected = path.read_text()
        if text != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                str(path), "generated", n=2))
            pytest.fail(f"generated {backend} source {name} changed; if intended, rerun with "
                        f"HOLA_UPDATE_GOLDEN=1 and commit tests/golden/\n{diff[:6000]}")


@pytest.mark.parametrize("backend,kernel,target,dtype,config", CASES, ids=IDS)
def test_generated_source_is_valid_python(backend, kernel, target, dtype, config):
    for name, text in emit_sources(kernel, backend, target, config, dtype=dtype)[0]:
        compile(text, name, "exec")
