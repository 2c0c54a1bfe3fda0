"""`hola bench`: a HOLA layer's prefill on the CPU, side by side in one process.

The layer's prefill is delta_scan -> cache_select (on the scan's scores m) -> cache_read. Each
implementation runs the three kernels on the same float32 inputs; repeats are interleaved across
implementations so that a change in machine load hits all of them alike. Backends are called
directly (validation skipped for all), so what is timed is the kernels. A DSL backend runs the
schedule ``hola_dsl.ops`` would pick (the tuning database's record for this shape and machine,
else the default). ``--threads`` sets torch's intra-op threads, which the TileLang CPU grid
follows too.

Implementations: "reference" (hola_dsl.reference.chunked, PyTorch), "compile" (the same functions under
torch.compile) and any DSL backend that runs CPU tensors ("tilelang", "eager").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from typing import Callable, Optional

import torch

from hola_dsl import backends
from hola_dsl.testing import Shape, rel_err, scan_inputs
from schedules.kernels import PREFILL, static_dims
from schedules.lookup import config_for
from tools import arguments


NAME = "bench"
HELP = "time a HOLA layer's prefill (scan + select + read) on the CPU: PyTorch reference, torch.compile, TileLang"

DEFAULT_SHAPE = "B=1,T=4096,H=4,K=128,V=128,W=64,C=256"
# Implementations that are PyTorch code rather than a DSL backend.
TORCH_IMPLS = ("reference", "compile")
DEFAULT_IMPLS = ("reference", "compile", "tilelang")
# What the first call of an implementation does besides running, said before the wait
# (the others start in well under a second).
WARM_UP = {"compile": "torch.compile traces and compiles it (tens of seconds)",
           "tilelang": "first call (TileLang compiles the C source unless cached)"}


def scan_flops(B: int, T: int, H: int, K: int, V: int, chunk: int = 64) -> float:
    """Floating-point operations of the chunked WY scan (2 per multiply-add), per docs/math.md section 1.

    Per chunk of BT tokens: K K^T and Q K^T (2 BT^2 K each), applying Tm to beta V and
    beta exp(G) K (2 BT^2 (V + K)), the causal (Q K^T) u (2 BT^2 V), and W S, (Q exp G) S,
    K^T u (2 BT K V each). Elementwise work and the triangular inverse are not counted.
    """
    n = math.ceil(T / chunk)
    per_chunk = 2 * chunk * chunk * (3 * K + 2 * V) + 6 * chunk * K * V
    return float(B * H * n * per_chunk)


def matmul_gflops(n: int = 1024, repeat: int = 5) -> float:
    """This machine's float32 matmul rate (torch.mm, torch's thread count), GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def _inputs(shape: Shape, seed: int) -> dict:
    x = scan_inputs(shape, seed=seed, initial_state=False)
    gen = torch.Generator().manual_seed(seed + 1)
    x["gamma_q"] = 1 + 0.1 * torch.randn(shape.K, generator=gen)
    x["gamma_k"] = 1 + 0.1 * torch.randn(shape.K, generator=gen)
    x["sink"] = torch.randn(shape.H, generator=gen)
    return x


def _layer(scan: Callable, select: Callable, read: Callable, shape: Shape) -> dict[str, Callable]:
    """Three stage callables that pass results along (state kept in a dict)."""
    state: dict = {}
    scale = shape.K ** -0.5

    def run_scan(x):
        state["o"], state["m"], _ = scan(x["q"], x["k"], x["v"], x["g"], x["beta"], scale=scale)

    def run_select(x):
        state["idx"] = select(state["m"], capacity=shape.W, block_size=shape.C)

    def run_read(x):
        state["oc"] = read(x["q"], x["k"], x["v"], state["idx"], x["gamma_q"], x["gamma_k"], x["sink"],
                           block_size=shape.C)
    return {"delta_scan": run_scan, "cache_select": run_select, "cache_read": run_read, "_state": state}


def _reference_impl(shape: Shape, compiled: bool) -> dict[str, Callable]:
    from hola_dsl.reference import chunked
    scan, select, read = chunked.chunked_delta_scan, chunked.blockwise_cache_select, chunked.batched_cache_read
    if compiled:
        scan, select, read = (torch.compile(f, dynamic=False) for f in (scan, select, read))
    return _layer(
        lambda q, k, v, g, beta, scale: scan(q, k, v, g, beta, scale=scale),
        lambda m, capacity, block_size: select(m, capacity=capacity, block_size=block_size, policy="hola"),
        lambda q, k, v, idx, gq, gk, s, block_size: read(q, k, v, idx, gq, gk, s, block_size=block_size, eps=1e-6),
        shape)


def _ratio(r: float) -> str:
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def schedules_for(name: str, shape: Shape) -> dict[str, tuple[dict, str]]:
    """{kernel: (config, where it came from)}: what ``hola_dsl.ops`` would use for this shape on
    this CPU (a tuned record, else {} for the backend's default)."""
    out = {}
    for kernel in PREFILL:
        tuned = config_for(kernel, name, torch.device("cpu"), torch.float32, static_dims(kernel, shape), shape.T)
        out[kernel] = (dict(tuned or {}), "tuned" if tuned else "default")
    return out


def _backend_impl(name: str, shape: Shape, chosen: dict[str, tuple[dict, str]]) -> dict[str, Callable]:
    """The three stages on DSL backend ``name`` with the schedules ``chosen`` (``schedules_for``)."""
    b = backends.get(name)
    cfg = {k: c for k, (c, _) in chosen.items()}
    return _layer(
        lambda q, k, v, g, beta, scale: b.run("delta_scan", q, k, v, g, beta, scale=scale, initial_state=None,
                                              output_final_state=False, chunk_size=64,
                                              config=cfg["delta_scan"] or None),
        lambda m, capacity, block_size: b.run("cache_select", m, capacity=capacity, block_size=block_size,
                                              policy="hola", config=cfg["cache_select"] or None),
        lambda q, k, v, idx, gq, gk, s, block_size: b.run("cache_read", q, k, v, idx, gq, gk, s, block_size=block_size,
                                                          eps=1e-6, config=cfg["cache_read"] or None),
        shape)


def _pool_line() -> str:
    """How the TileLang CPU launches of the timed runs shared out their programs."""
    from hola_dsl.backends.tilelang import cpu_parallel, runtime as tilelang_runtime
    modes = tilelang_runtime.LAUNCH_MODES
    words = {"serial": "one thread", "omp": "an OpenMP team", "python": "host threads"}
    parts = [f"{modes[m]} on {words[m]}" for m in ("omp", "python", "serial") if modes[m]]
    line = ", ".join(parts) or "no launches"
    if modes["omp"]:
        shared = cpu_parallel.shares_torch_pool()
        line += {True: " (torch's own)", False: " (a libgomp other than torch's)"}.get(shared, "")
    if modes["python"] and tilelang_runtime.cpu_pool() == "python":
        line += "; HOLA_CPU_POOL=python"
    return line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", default=DEFAULT_SHAPE, help=f"problem size (default {DEFAULT_SHAPE})")
    parser.add_argument("--impl", action="append",
                        help="implementation to time (repeatable): reference, compile, or a backend that runs "
                             "CPU tensors (tilelang, eager; triton with TRITON_INTERPRET=1); "
                             "default: reference, compile, tilelang")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per implementation (default 7)")
    parser.add_argument("--seed", type=int, default=0, help="input seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads, used by every implementation (the TileLang CPU grid "
                             "follows torch's count); 0 or not given: torch's setting")
    parser.add_argument("--json", help="also write the results to this JSON file (checked before timing)")


def implementations(requested: Optional[list[str]]) -> tuple[list[str], dict[str, str]]:
    """(implementations to time, {skipped: why}) for --impl; unknown names and a list with
    nothing that runs here are errors naming --impl."""
    known = list(dict.fromkeys([*TORCH_IMPLS, *backends.names()]))
    impls, skipped = [], {}
    for name in dict.fromkeys(requested or DEFAULT_IMPLS):
        if name not in known:
            raise ValueError(f"--impl: unknown implementation {name!r}; expected one of {known}")
        reason = None if name in TORCH_IMPLS else backends.runs_on(name, "cpu")
        if reason is None:
            impls.append(name)
        else:
            skipped[name] = reason
    if not impls:
        raise ValueError("--impl: nothing to time here: " + "; ".join(f"{n} cannot run CPU tensors here ({r})"
                                                                     for n, r in skipped.items()))
    return impls, skipped


def _set_up(name: str, shape: Shape, x: dict) -> tuple[dict, int]:
    """The layer of implementation ``name``, warmed up (compiled, cached), and its scan chunk.
    Says what it is doing first: torch.compile and TileLang's C compiler take a minute or more."""
    if name in TORCH_IMPLS:
        layer, chunk = _reference_impl(shape, compiled=(name == "compile")), 64
    else:
        chosen = schedules_for(name, shape)
        layer, chunk = _backend_impl(name, shape, chosen), int(chosen["delta_scan"][0].get("chunk_size", 64))
        for kernel, (cfg, where) in chosen.items():
            print(f"  {name} {kernel}: " + (f"tuned schedule {json.dumps(cfg)}" if where == "tuned"
                                           else "backend default schedule"))
    for k in PREFILL:                           # warm-up: compiles, caches
        t0 = time.perf_counter()
        if name in WARM_UP:
            print(f"  {name} {k}: {WARM_UP[name]} ...", end="", flush=True)
        layer[k](x)
        if name in WARM_UP:
            print(f" {time.perf_counter() - t0:.1f}s", flush=True)
    return layer, chunk


def run(args: argparse.Namespace) -> int:
    shape = arguments.shape(args.shape)
    arguments.positive(args.repeat, "--repeat")
    json_path = arguments.output_file(args.json, "--json")
    impls, skipped = implementations(args.impl)
    arguments.set_threads(args.threads)
    x = _inputs(shape, arguments.seed(args.seed))
    print(f"hola bench: HOLA layer prefill, float32 on the CPU, {shape}; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for name, reason in skipped.items():
        print(f"  ({name} skipped: {reason})")
    layers, setup, chunks = {}, {}, {}
    for name in impls:
        t0 = time.perf_counter()
        layers[name], chunks[name] = _set_up(name, shape, x)
        setup[name] = time.perf_counter() - t0
    times = {n: {k: [] for k in PREFILL} for n in layers}
    if "tilelang" in layers:
        from hola_dsl.backends.tilelang import runtime as tilelang_runtime
        tilelang_runtime.LAUNCH_MODES.clear()             # count the timed launches only
    cpu = {n: [] for n in layers}          # process CPU seconds per layer (all threads)
    for _ in range(args.repeat):
        for name, layer in layers.items():
            c0 = time.process_time()
            for k in PREFILL:
                t0 = time.perf_counter()
                layer[k](x)
                times[name][k].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    for n in med:
        med[n]["layer"] = sum(med[n][k] for k in PREFILL)
    base = "reference" if "reference" in med else next(iter(med))
    cols = PREFILL + ("layer",)
    header = (f"{'implementation':<15}" + "".join(f"{c:>14}" for c in cols) + f"{'vs ' + base:>16}"
              f"{'cpu-time':>12}{'setup':>9}")
    print(header)
    print("-" * len(header))
    for n, m in med.items():
        print(f"{n:<15}" + "".join(f"{m[c] * 1e3:>12.2f}ms" for c in cols)
              + f"{_ratio(med[base]['layer'] / m['layer']):>15}x{statistics.median(cpu[n]) * 1e3:>10.1f}ms"
              f"{setup[n]:>8.1f}s")
    peak = matmul_gflops()
    print(f"\ndelta_scan in the chunked WY form (each implementation's own chunk size); machine float32 "
          f"matmul {peak:.1f} GFLOP/s (torch.mm 1024^2, {torch.get_num_threads()} threads)")
    for n, m in med.items():
        flops = scan_flops(shape.B, shape.T, shape.H, shape.K, shape.V, chunk=chunks[n])
        print(f"  {n:<13} {flops / m['delta_scan'] / 1e9:>7.1f} GFLOP/s ({flops / m['delta_scan'] / 1e9 / peak:.0%} "
              f"of matmul; chunk {chunks[n]}, {flops / 1e9:.2f} GFLOP)")
    ref_state = layers[base]["_state"]
    print(f"\nagreement with {base} (relative error): ")
    for n, layer in layers.items():
        st = layer["_state"]
        print(f"  {n:<13} o {rel_err(st['o'], ref_state['o']):.1e}  m {rel_err(st['m'], ref_state['m']):.1e}  "
              f"idx mismatches {int((st['idx'] != ref_state['idx']).sum())}  o_cache {rel_err(st['oc'], ref_state['oc']):.1e}")
    if "tilelang" in layers:
        print(f"\nTileLang CPU launches: {_pool_line()}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}; wall times are medians of interleaved runs, "
          f"cpu-time is the process's CPU seconds per layer (all threads), which other work on the machine "
          f"inflates less")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"shape": vars(shape) if hasattr(shape, "__dict__") else str(shape), "median_seconds": med,
                       "setup_seconds": setup, "cpu_seconds_per_layer": {n: statistics.median(c) for n, c in cpu.items()},
                       "threads": args.threads, "scan_gflop": {n: scan_flops(shape.B, shape.T, shape.H, shape.K, shape.V, chunk=c) / 1e9
                                      for n, c in chunks.items()}, "matmul_gflops": peak,
                       "torch_threads": torch.get_num_threads()}, f, indent=2)
    return 0
