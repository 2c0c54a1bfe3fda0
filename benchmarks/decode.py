"""Decoding speed on the CPU: the scan's decode step per token, and whole-model tokens per second.

1. The recurrent step (``hola_dsl.decode.delta_step``, one token, state in place, outputs
   preallocated, checks off: the model's call) at B = 1, K = V = 128, H = 4 and 16, on 1 and 2
   threads: reference (PyTorch) vs TileLang, and ggml's fused ``ggml_gated_delta_net`` (the op
   llama.cpp decodes Qwen3-Next with) when a build of it is at hand: ``--ggml-lib`` (or
   $HOLA_GGML_LIB) names the wrapper library, which ``--build-ggml SRC`` builds from a local ggml
   source tree (e.g. the ``vendor/ggml`` folder of PyPI's ggml-py sdist) with cmake, CPU only,
   into ``--ggml-out``. Nothing is downloaded; without a library that row is skipped.
2. ``HOLALM`` decode steps of the "small" preset after a 4096-token context, batch 1 and 8,
   reference vs TileLang (every decode kernel on the backend; the projections are PyTorch).

Times are the best of ``--reps`` runs of ``--iters`` steps each (this machine is shared: the
best run is the one least disturbed). Run: python3 benchmarks/decode.py [--help].
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hola_dsl import backends, decode, ops  # noqa: E402
from model import HOLAConfig, HOLALM  # noqa: E402
from model.mixer import MixerMemory  # noqa: E402
from model.presets import get as preset  # noqa: E402

HERE = Path(__file__).resolve().parent
WRAPPER = HERE / "ggml_gdn.c"
LIB_NAME = "libhola_ggml_gdn.so"


def best_us(fn, iters: int, reps: int, clock=time.perf_counter) -> float:
    """Best over ``reps`` of the mean microseconds of ``iters`` calls of ``fn`` by ``clock``."""
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        for _ in range(iters):
            fn()
        best = min(best, (clock() - t0) / iters * 1e6)
    return best


def build_ggml(src: Path, out: Path) -> Path:
    """Build ggml (CPU backend only) from the local source tree ``src`` and the wrapper
    (benchmarks/ggml_gdn.c) into ``out``; returns the wrapper library's path."""
    if not (src / "CMakeLists.txt").is_file() or not (src / "include" / "ggml.h").is_file():
        raise SystemExit(f"--build-ggml: {src} is not a ggml source tree (no CMakeLists.txt and include/ggml.h)")
    for tool in ("cmake", "make", "cc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"--build-ggml: {tool} not found")
    out.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="ggml-build-"))
    subprocess.run(["cmake", str(src), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=ON",
                    "-DGGML_BUILD_TESTS=OFF", "-DGGML_BUILD_EXAMPLES=OFF"], cwd=build, check=True)
    subprocess.run(["make", f"-j{os.cpu_count() or 1}", "ggml", "ggml-base", "ggml-cpu"], cwd=build, check=True)
    libs = sorted(build.glob("**/libggml*.so*"))
    for lib in libs:
        shutil.copy2(lib, out / lib.name)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(WRAPPER), f"-I{src / 'include'}", f"-L{out}",
                    "-lggml", "-lggml-base", "-lggml-cpu", f"-Wl,-rpath,{out}", "-o", str(out / LIB_NAME)], check=True)
    shutil.rmtree(build, ignore_errors=True)
    return out / LIB_NAME


def load_ggml(path: str | None):
    """The wrapper's ``hola_gdn_step_us`` or (None, why not)."""
    if not path:
        return None, f"no ggml library (pass --ggml-lib, set HOLA_GGML_LIB, or build one with --build-ggml)"
    try:
        lib = ctypes.CDLL(path)
        fn = lib.hola_gdn_step_us
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}"
    fn.argtypes = [ctypes.c_int] * 7
    fn.restype = ctypes.c_double
    return fn, None


def scan_step(args, ggml) -> None:
    print(f"\n1. recurrent step per token (B = 1, K = V = 128, float32; best of {args.reps} x {args.iters}); "
          f"wall clock, and with one thread also the thread's CPU time (what the step costs on a "
          f"machine that others share)")
    have = {b: backends.runs_on(b, "cpu") is None for b in ("reference", "tilelang")}
    cols = [b for b in ("reference", "tilelang") if have[b]] + (["ggml"] if ggml else [])
    print(f"{'H':>3} {'threads':>8} {'clock':>6}" + "".join(f"{c + ' us':>15}" for c in cols) + f"{'tilelang/ggml':>15}")
    for H in args.heads:
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(1, 1, H, 128, generator=gen)
        k = ops.l2norm(torch.randn(1, 1, H, 128, generator=gen))
        v = torch.randn(1, 1, H, 128, generator=gen)
        g, beta = -0.1 * torch.rand(1, 1, H, generator=gen), torch.rand(1, 1, H, generator=gen)
        state = torch.randn(1, H, 128, 128, generator=gen)
        o, m = torch.empty(1, 1, H, 128), torch.empty(1, 1, H)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for cpu in ((False, True) if threads == 1 else (False,)):
                row = {}
                for b in cols:
                    if b == "ggml":
                        row[b] = ggml(1, H, 128, threads, args.iters, args.reps, int(cpu))
                    else:
                        row[b] = best_us(lambda: decode.delta_step(q, k, v, g, beta, state, in_place=True, o=o, m=m,
                                                                   backend=b, check=False),
                                         args.iters, args.reps, time.thread_time if cpu else time.perf_counter)
                ratio = f"{row['tilelang'] / row['ggml']:.2f}" if "tilelang" in row and "ggml" in row else "-"
                print(f"{H:>3} {threads:>8} {'cpu' if cpu else 'wall':>6}" + "".join(f"{row[c]:>15.1f}" for c in cols)
                      + f"{ratio:>15}")


def model_tokens(args) -> None:
    cfg = preset("small")["model"]
    lm = HOLALM(HOLAConfig(**cfg, variant="hola")).eval()
    print(f"\n2. HOLALM 'small' (d_model {cfg['d_model']}, {cfg['n_layers']} layers, {cfg['n_heads']} heads of "
          f"{cfg['head_k_dim']}, w {cfg['cache_capacity']}, C {cfg['cache_block']}), decode after a "
          f"{args.context}-token context, {args.threads[0]} thread(s)")
    torch.set_num_threads(args.threads[0])
    prompt = torch.randint(0, cfg["vocab_size"], (1, args.context), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, memory = lm.prefill(prompt, backend="reference")
    names = [b for b in ("reference", "tilelang") if backends.runs_on(b, "cpu") is None]
    print(f"{'batch':>6}" + "".join(f"{n + ' tok/s':>18}" for n in names))
    for B in args.batches:
        rates = []
        for name in names:
            mem = [MixerMemory.cat([m] * B) for m in memory]
            token = torch.zeros(B, dtype=torch.long)
            steps = args.model_steps

            def run():
                nonlocal mem
                for _ in range(steps):
                    _, mem = lm.decode_step(token, mem, backend=name)
            with torch.no_grad():
                run()                                    # warm-up: compiles, caches
                best = float("inf")
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    run()
                    best = min(best, time.perf_counter() - t0)
            rates.append(B * steps / best)
        print(f"{B:>6}" + "".join(f"{r:>18.0f}" for r in rates))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    p.add_argument("--heads", default="4,16", help="head counts of the scan step (default 4,16)")
    p.add_argument("--iters", type=int, default=200, help="steps per timed run (default 200)")
    p.add_argument("--reps", type=int, default=5, help="timed runs; the best counts (default 5)")
    p.add_argument("--ggml-lib", default=os.environ.get("HOLA_GGML_LIB"),
                   help=f"path of {LIB_NAME} (default $HOLA_GGML_LIB)")
    p.add_argument("--build-ggml", type=Path, help="build the ggml wrapper from this local ggml source tree first")
    p.add_argument("--ggml-out", type=Path, default=Path(tempfile.gettempdir()) / "hola-ggml",
                   help="where --build-ggml puts the libraries")
    p.add_argument("--context", type=int, default=4096, help="context before the timed decode steps (default 4096)")
    p.add_argument("--batches", default="1,8", help="batch sizes of the model rows (default 1,8)")
    p.add_argument("--model-steps", type=int, default=64, help="decode steps per timed model run (default 64)")
    p.add_argument("--skip-model", action="store_true", help="only the scan step")
    args = p.parse_args(argv)
    try:
        args.threads = [int(x) for x in args.threads.split(",")]
        args.heads = [int(x) for x in args.heads.split(",")]
        args.batches = [int(x) for x in args.batches.split(",")]
    except ValueError:
        p.error("--threads, --heads, --batches: expected comma-separated integers")
    if min(args.threads + args.heads + args.batches + [args.iters, args.reps, args.context, args.model_steps]) < 1:
        p.error("every count must be at least 1")
    os.environ.setdefault("HOLA_CHECK_VALUES", "1")
    if args.build_ggml:
        args.ggml_lib = str(build_ggml(args.build_ggml.resolve(), args.ggml_out.resolve()))
    ggml, why = load_ggml(args.ggml_lib)
    print(f"benchmarks/decode.py: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if ggml is None:
        print(f"  (ggml skipped: {why})")
    scan_step(args, ggml)
    if not args.skip_model:
        model_tokens(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
