"""The cost model (hola_dsl.cost) against counts made by hand for small kernels, and its scaling
laws on the real kernels (work linear in T, the sequential path the number of chunks)."""

import pytest
import torch

from hola_dsl import cost, lang as hl
from hola_dsl.kernels import cache_read, cache_select, delta_scan
import schedules


@hl.kernel
def _chunked(x: hl.In("T", "K"), w: hl.In("K", "N"), y: hl.Out("T", "N"), *, K: int, N: int, BT: int):
    """One program per N tile... of width N (one), walking T in chunks of BT in order."""
    (i,) = hl.grid(1)
    wt = w[hl.tile(0, K), hl.tile(0, N)].to("float32")

    @hl.loop(0, hl.cdiv(hl.dim("T"), BT))
    def step(c):
        rows = hl.tile(c * BT, BT)
        xa = x[rows, hl.tile(0, K)].to("float32")
        y[rows, hl.tile(0, N)] = hl.exp(hl.dot(xa, wt)) + 1.0


@hl.kernel
def _triangle(x: hl.In("T"), y: hl.Out("T"), *, BT: int):
    """Program p sums chunks 0..p (a loop bound that reads the program id) and, per chunk c, an
    inner loop of c + 1 steps (a bound that reads the outer loop's variable)."""
    (p,) = hl.grid(hl.cdiv(hl.dim("T"), BT))

    @hl.loop(0, p + 1, carry=hl.zeros((BT,)))
    def acc(c, a):
        @hl.loop(0, c + 1, carry=a)
        def inner(j, b):
            return b + x[hl.tile(j * BT, BT)].to("float32")
        return inner

    y[hl.tile(p * BT, BT)] = acc


def test_hand_counted_sequential_kernel():
    T, K, N, BT = 100, 32, 16, 16
    k = _chunked.trace({"x": "bfloat16", "w": "bfloat16", "y": "float32"}, K=K, N=N, BT=BT)
    c = cost.kernel_cost(k, {"T": T})
    chunks = -(-T // BT)
    # per chunk: a BT x K by K x N dot, then exp and + 1 over BT x N
    assert c.programs == 1
    assert c.dot_flops == chunks * 2 * BT * K * N
    assert c.flops == c.dot_flops + chunks * 2 * BT * N
    # w once (bf16), per chunk x's tile (bf16) and y's tile (float32), as addressed (masked tail included)
    assert c.bytes == K * N * 2 + chunks * (BT * K * 2 + BT * N * 4)
    assert (c.sequential, c.dots_per_step, c.step_flops) == (chunks, 1, 2 * BT * K * N + 2 * BT * N)


def test_loop_bounds_reading_program_ids_and_loop_variables():
    T, BT = 80, 16
    k = _triangle.trace({"x": "float32", "y": "float32"}, BT=BT)
    c = cost.kernel_cost(k, {"T": T})
    P = T // BT
    # program p runs sum_{c<=p} (c + 1) inner steps, each one add over BT and a BT-float load
    steps = sum((p + 1) * (p + 2) // 2 for p in range(P))
    assert c.programs == P
    assert c.flops == steps * BT
    assert c.bytes == steps * BT * 4 + P * BT * 4
    # its loop bound reads the program id: parallel over the grid, not a sequential path
    assert c.sequential == 0


def test_missing_size_is_an_error():
    k = _chunked.trace({"x": "float32", "w": "float32", "y": "float32"}, K=16, N=16, BT=16)
    with pytest.raises(ValueError, match=r"sizes \['T'\]"):
        cost.kernel_cost(k, {})


@pytest.mark.parametrize("B", [0, -1, 2.0, True])
def test_report_refuses_bad_shape(B):
    sched = schedules.space("delta_scan", "triton").check(None, "sm_90")
    with pytest.raises(ValueError, match="B: expected a positive int"):
        cost.report(delta_scan.SPEC, sched, {}, torch.bfloat16, B, 64, 1)


@pytest.mark.parametrize("kspec", [delta_scan.SPEC, cache_select.SPEC, cache_read.SPEC], ids=lambda s: s.name)
def test_real_kernels_scale_with_the_sequence(kspec):
    """Work grows linearly in T and in B (bytes affinely in T: a state is read and written once
    per program); a sequential loop walks T / chunk steps whose size does not depend on T."""
    sched = schedules.space(kspec.name, "triton").check(None, "sm_90")
    t1, t2, t3 = (cost.report(kspec, sched, {}, torch.bfloat16, 2, T, 4) for T in (4096, 8192, 12288))
    wide = cost.report(kspec, sched, {}, torch.bfloat16, 4, 4096, 4)
    assert [c.kernel for c in t1] == [c.kernel for c in t2] == [c.kernel for c in wide]
    for a, b, c, w in zip(t1, t2, t3, wide):
        assert a.flops > 0 or a.kernel in ("cache_select", "cache_select_blocks")     # compares, selects
        assert b.flops == 2 * a.flops and c.flops == 3 * a.flops
        assert c.bytes - b.bytes == b.bytes - a.bytes > 0
        assert w.flops == 2 * a.flops and w.bytes == 2 * a.bytes and w.programs == 2 * a.programs
        assert b.sequential == 2 * a.sequential and b.step_flops == a.step_flops


def test_fused_scan_counts():
    """The fused scan at the issue's shape: one program per (V tile, b, h), every chunk walked in
    order with its seven dots (A, W·K^T... as in hola_dsl/kernels/delta_scan.py)."""
    sched = schedules.space("delta_scan", "triton").check({"split": "fused"} if "split" in {
        k.name for k in schedules.space("delta_scan", "triton").knobs} else None, "sm_90")
    (c,) = [x for x in cost.report(delta_scan.SPEC, sched, {}, torch.bfloat16, 2, 16384, 16)
            if x.kernel == "delta_scan"]
    BT, BV = sched["chunk_size"], sched["BV"]
    assert c.programs == (128 // BV) * 2 * 16
    assert c.sequential == 16384 // BT
    assert c.dots_per_step == 7


def test_build_report_cli(capsys):
    """`hola build --report` compiles nothing and prints one JSON row per launch and shape."""
    import json

    from tools.cli import main

    assert main(["build", "--report", "--kernel", "delta_scan", "--kernel", "cache_select", "--targets", "sm_90,gfx942",
                 "--shape", "1,512,2", "--shape", "2,512,2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["op"], r["target"], r["B,T,H"]) for r in rows} >= {("delta_scan", "gfx942", "2,512,2"),
                                                                  ("cache_select", "sm_90", "1,512,2")}
    one = {(r["op"], r["target"], r["split"], r["kernel"]): r for r in rows if r["B,T,H"] == "1,512,2"}
    two = {(r["op"], r["target"], r["split"], r["kernel"]): r for r in rows if r["B,T,H"] == "2,512,2"}
    assert one.keys() == two.keys()
    for key in one:
        assert two[key]["programs"] == 2 * one[key]["programs"]


@pytest.mark.parametrize("argv, message", [
    (["--report", "--shape", "2,3"], "--shape: expected B,T,H"),
    (["--shape", "2,3,4"], "--shape: only --report uses it"),
    (["--report", "--shape", "2,0,4"], "--shape: expected comma-separated positive integers"),
])
def test_build_report_bad_flags(argv, message, capsys):
    from tools.cli import main

    assert main(["build", *argv]) == 2
    assert message in capsys.readouterr().err


def test_build_report_follows_dtype(capsys):
    """--dtype reaches the report's schedules: float32 inputs take cache_read's 32-query tiles on
    NVIDIA (schedules/cache_read.py), twice the programs of bf16's 64."""
    import json

    from tools.cli import main

    programs = {}
    for dtype in ("bfloat16", "float32"):
        assert main(["build", "--report", "--dtype", dtype, "--kernel", "cache_read", "--targets", "sm_90",
                     "--shape", "1,512,2", "--json"]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        programs[dtype] = row["programs"]
    assert programs["float32"] == 2 * programs["bfloat16"]
