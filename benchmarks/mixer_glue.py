"""The HOLA mixer's torch glue on the CPU: the plain-autograd formulations against model.fused's.

1. Each piece, forward + backward, at the small preset's shapes (B=8, T=256; conv over
   D = 384 channels, 4 taps; l2norm of [8, 256, 2, 64]; RMSNorm with weight of [8, 256, 2, 64]).
2. One mixer forward + backward (model/presets.py "small", layer 0) per backend, the glue
   swapped between the old formulations (F.conv1d, ops.l2norm, autograd RMSNorm, and
   hola_dsl.norms' row scale as linalg.vector_norm(x, inf), which the kernels' host steps use
   too) and the new.

Old and new run interleaved in one process (A, B, A, B, ...); medians and new/old ratios.
Usage: python benchmarks/mixer_glue.py [--threads 2 --repeats 9 --backends reference,tilelang --clock wall]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import types

import torch
import torch.nn.functional as F

from hola_dsl import norms, ops
from model import fused, mixer as mx, presets
from model.config import HOLAConfig
from model.lm import HOLALM

# Run as a script, this file's folder is on sys.path.
from timing import CLOCKS, interleaved_medians


def _old_rms(x, weight, eps):
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def _old_row_scale(x, floor=0.0):
    """hola_dsl.norms' row scale as it was: linalg.vector_norm(x, inf)."""
    s = torch.linalg.vector_norm(x.detach(), math.inf, dim=-1, keepdim=True)
    if floor > 0:
        s = s.clamp(min=floor)
    return torch.where(s > 0, s, torch.ones_like(s))


def _old_l2norm(x, eps):
    with _glue(None, _old_row_scale):
        return ops.l2norm(x, eps)


OLD = types.SimpleNamespace(
    depthwise_causal_conv=lambda xx, w: F.conv1d(xx.transpose(1, 2), w[:, None, :], groups=w.shape[0]).transpose(1, 2),
    l2norm=_old_l2norm,
    rms_norm=_old_rms,
)


@contextlib.contextmanager
def _glue(glue, row_scale):
    """model.mixer's glue module and hola_dsl.norms' row scale swapped in (None: kept)."""
    saved = mx.fused, norms._row_scale
    mx.fused, norms._row_scale = glue or mx.fused, row_scale or norms._row_scale
    try:
        yield
    finally:
        mx.fused, norms._row_scale = saved


def fwd_bwd(f, *inputs):
    """A closure running f(*inputs).backward(dy) on fresh leaves, dy random and dense."""
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    dy = torch.randn(f(*leaves).shape, generator=torch.Generator().manual_seed(1))
    return lambda: f(*leaves).backward(dy)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--backends", default="reference,tilelang")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="cpu: this process's CPU seconds (steadier on a loaded machine; with 1 thread)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = HOLAConfig(**presets.get("small")["model"])
    B, T, H, K = 8, 256, cfg.n_heads, cfg.head_k_dim
    D, S = 2 * H * K + H * cfg.head_v_dim, cfg.conv_size
    gen = torch.Generator().manual_seed(0)
    xx, w = torch.randn(B, T + S - 1, D, generator=gen), torch.randn(D, S, generator=gen)
    q, nw = torch.randn(B, T, H, K, generator=gen), torch.randn(K, generator=gen)
    print(f"{a.threads} threads, {a.clock} clock, median of {a.repeats}, old/new interleaved; ms per forward + backward")
    pieces = {
        f"causal conv [{B},{T},{D}] x{S}": (fwd_bwd(OLD.depthwise_causal_conv, xx, w), fwd_bwd(fused.depthwise_causal_conv, xx, w)),
        f"l2norm [{B},{T},{H},{K}]": (fwd_bwd(lambda x: OLD.l2norm(x, 1e-6), q), fwd_bwd(lambda x: fused.l2norm(x, 1e-6), q)),
        f"rms_norm [{B},{T},{H},{K}]": (fwd_bwd(lambda x, v: OLD.rms_norm(x, v, 1e-6), q, nw),
                                        fwd_bwd(lambda x, v: fused.rms_norm(x, v, 1e-6), q, nw)),
    }
    torch.manual_seed(0)
    mixer = HOLALM(cfg).blocks[0].mixer
    x = torch.randn(B, T, cfg.d_model, generator=gen, requires_grad=True)

    def run_mixer(glue, row_scale, backend):
        def f():
            with _glue(glue, row_scale):
                mixer(x, backend=backend).sum().backward()
        return f

    for be in a.backends.split(","):
        pieces[f"mixer fwd+bwd ({be})"] = (run_mixer(OLD, _old_row_scale, be), run_mixer(fused, None, be))
    for name, (old, new) in pieces.items():
        t = interleaved_medians({"old": old, "new": new}, a.repeats, a.clock)
        print(f"  {name:34s} old {t['old'] * 1e3:8.2f}   new {t['new'] * 1e3:8.2f}   new/old {t['new'] / t['old']:5.2f}")


if __name__ == "__main__":
    main()
