"""GPU timing of the generated Triton delta_scan against flash-linear-attention's
``chunk_gated_delta_rule`` (and the chunked PyTorch reference), with their agreement.

Run on a machine with a CUDA GPU:

    python3 benchmarks/gpu_scan_vs_fla.py [--B 4 --T 4096 --H 16 --K 128 --V 128 --dtype bfloat16]

Without a GPU it says so and exits 0 (nothing to measure). flash-linear-attention is optional;
without it only our kernel and the reference are timed. Timings are medians of CUDA-event
timed runs after warm-up (first call compiles).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch


def _time_ms(fn, warmup: int = 3, reps: int = 20) -> tuple[float, float]:
    """(median, spread as max-min) in milliseconds of ``fn()`` on the current CUDA stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), max(times) - min(times)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--H", type=int, default=16)
    p.add_argument("--K", type=int, default=128)
    p.add_argument("--V", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--config", default=None, help="Triton schedule as JSON (default: the target's default)")
    args = p.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_scan_vs_fla: no CUDA GPU on this machine; nothing to time (run it where a GPU exists).")
        return 0

    import json

    from hola_dsl import ops
    from hola_dsl.testing import Shape, scan_inputs

    dtype = getattr(torch, args.dtype)
    shape = Shape(B=args.B, T=args.T, H=args.H, K=args.K, V=args.V)
    x = scan_inputs(shape, dtype, seed=0, device="cuda")
    x["g"] = x["g"].float()
    x["beta"] = x["beta"].to(dtype)
    config = json.loads(args.config) if args.config else None
    flops = 2 * args.B * args.H * args.T * (4 * args.K * args.V + 2 * 64 * (args.K + args.V))

    rows = []
    ours = ops.delta_scan(**x, output_final_state=True, backend="triton", config=config)
    ms, spread = _time_ms(lambda: ops.delta_scan(**x, output_final_state=True, backend="triton", config=config))
    rows.append(("hola triton", ms, spread, ours))
    ref = ops.delta_scan(**x, output_final_state=True, backend="reference")
    ms, spread = _time_ms(lambda: ops.delta_scan(**x, output_final_state=True, backend="reference"), reps=5)
    rows.append(("reference (PyTorch chunked)", ms, spread, ref))
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError as exc:
        print(f"gpu_scan_vs_fla: flash-linear-attention not importable ({exc}); timing ours and the reference only")
    else:
        def fla_call():
            return chunk_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], scale=args.K ** -0.5,
                                          initial_state=x["initial_state"].float(), output_final_state=True)
        fo, fs = fla_call()
        ms, spread = _time_ms(fla_call)
        rows.append(("fla chunk_gated_delta_rule", ms, spread, (fo, None, fs)))

    name = torch.cuda.get_device_name()
    print(f"delta_scan on {name}: B={args.B} T={args.T} H={args.H} K={args.K} V={args.V} {args.dtype}")
    print(f"{'implementation':<30} {'median ms':>10} {'spread':>8} {'~TFLOP/s':>9} {'o rel err vs ref':>17} {'state rel err':>14}")
    for label, ms, spread, out in rows:
        o_err = _rel(out[0], ref[0])
        s_err = _rel(out[2], ref[2]) if out[2] is not None else float("nan")
        print(f"{label:<30} {ms:>10.3f} {spread:>8.3f} {flops / ms / 1e9:>9.2f} {o_err:>17.2e} {s_err:>14.2e}")
    fla_rows = [r for r in rows if r[0].startswith("fla")]
    if fla_rows:
        print(f"hola triton / fla time ratio: {rows[0][1] / fla_rows[0][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
