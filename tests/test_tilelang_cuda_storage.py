"""Where the TileLang CUDA dialect keeps tiles (emitted source only, no compile): global tile
loads are T.copy (cp.async inside T.Pipelined), gemm results stay in register fragments unless
a consumer needs shared memory, loaded 16-bit tiles stay 16-bit. The compiled side (cp.async in
the CUDA source, shared bytes per block) is checked by tests/test_tilelang_cuda_sync.py."""

from __future__ import annotations

import re

from hola_dsl.backends.tilelang import lower_cuda
from hola_dsl.emit import emit_sources


def _sources(kernel: str, config=None, dtype: str = "bfloat16") -> dict[str, str]:
    sources, _ = emit_sources(kernel, "tilelang", "sm_90a", config, dtype=dtype)
    return {re.search(r"from kernel '(\w+)'", src).group(1): src for _, src in sources}


def _declared(source: str, kind: str) -> dict[str, str]:
    """name -> dtype of the tiles declared with ``T.alloc_<kind>``."""
    return {m.group(1): m.group(2) for m in re.finditer(rf'(\w+) = T\.alloc_{kind}\(\([^)]*\), "(\w+)"\)', source)}


def test_pipelined_loop_loads_tiles_with_t_copy():
    recur = _sources("delta_scan")["delta_scan_recur"]
    body = recur[recur.index("T.Pipelined("):]
    assert "T.copy(w[" in body and "T.copy(k[" in body          # the gemm operands, as cp.async
    assert lower_cuda.PASS_CONFIGS["tl.disable_tma_lower"] is True


def test_gemm_results_stay_in_fragments():
    """Every accumulator is a fragment; one is copied to shared memory only to be a later gemm's
    operand (the scan's output phase and the cache read consume theirs in registers)."""
    for name, src in {**_sources("delta_scan"), **_sources("cache_read")}.items():
        frags = _declared(src, "fragment")
        accs = set(re.findall(r"T\.gemm\(\w+, \w+, (\w+),", src))
        assert accs and accs <= set(frags), (name, accs - set(frags))
        for acc, dst in re.findall(r"T\.copy\((\w+), (\w+)\)", src):
            if acc in accs:
                assert re.search(rf"T\.gemm\(({dst}, \w+|\w+, {dst}),", src), (name, acc, dst)
    output = _sources("delta_scan")["delta_scan_output"]
    assert not [f for f, _ in re.findall(r"T\.copy\((\w+), (\w+)\)", output) if f in _declared(output, "fragment")]


def test_loaded_tiles_keep_the_input_dtype():
    fused = _sources("delta_scan", {"split": "fused"})["delta_scan"]
    shared = _declared(fused, "shared")
    loads = re.findall(r"T\.copy\((?:q|k)\[[^\]]*\], (\w+)\)", fused)
    assert loads and all(shared[t] == "bfloat16" for t in loads), loads
