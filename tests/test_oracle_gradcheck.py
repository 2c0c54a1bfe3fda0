"""The float64 oracle's autograd against finite differences (torch.autograd.gradcheck).

Every backend's gradients are compared with the oracle's (hola_dsl.reference.oracle, through
autograd), so the oracle's own gradients are checked here: the delta scan (o, m and the final
state; with and without the in-scan l2norm, packed sequences) and the cache read (every
differentiable input, caches with empty slots and a large sink). Small shapes, T = 5-9.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from hola_dsl.reference import oracle


def _leaf(gen: torch.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).requires_grad_(True)


def _scan_inputs(B: int, T: int, H: int, K: int, V: int, seed: int) -> tuple:
    """q, k (norm about 1), v, g < 0, beta in (0, 1), initial state: the oracle's whole domain
    except m's kink at u = 0 (random inputs keep away from it)."""
    gen = torch.Generator().manual_seed(seed)
    q, k = _leaf(gen, B, T, H, K, scale=K ** -0.5), _leaf(gen, B, T, H, K, scale=K ** -0.5)
    v = _leaf(gen, B, T, H, V)
    g = (-torch.rand(B, T, H, generator=gen, dtype=torch.float64) - 0.05).requires_grad_(True)
    beta = (torch.rand(B, T, H, generator=gen, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    return q, k, v, g, beta, _leaf(gen, B, H, K, V, scale=0.5)


@pytest.mark.parametrize("l2norm", [False, True])
def test_delta_scan_gradcheck(l2norm):
    inputs = _scan_inputs(B=1, T=6, H=2, K=3, V=2, seed=int(l2norm))

    def f(q, k, v, g, beta, s0):
        o, m, s = oracle.naive_delta_scan(q, k, v, g, beta, initial_state=s0, output_final_state=True,
                                          use_qk_l2norm=l2norm)
        return o, m, s

    assert gradcheck(f, inputs)


def test_packed_delta_scan_gradcheck():
    q, k, v, g, beta, _ = _scan_inputs(B=1, T=7, H=1, K=2, V=2, seed=2)
    s0 = _leaf(torch.Generator().manual_seed(3), 3, 1, 2, 2, scale=0.5)
    cu = torch.tensor([0, 3, 3, 7])      # an empty sequence in the middle

    def f(q, k, v, g, beta, s0):
        o, m, s = oracle.naive_delta_scan(q, k, v, g, beta, initial_state=s0, output_final_state=True,
                                          cu_seqlens=cu)
        return o, m, s

    assert gradcheck(f, (q, k, v, g, beta, s0))


@pytest.mark.parametrize("T,sink", [(8, 0.3), (7, 4.0)])
def test_cache_read_gradcheck(T, sink):
    """Block size 3, capacity 2: block 0 has an empty cache, block 1 one entry and a -1 slot,
    later blocks a full cache (idx from the oracle's own selection)."""
    B, H, K, V, C, W = 1, 1, 3, 2, 3, 2
    gen = torch.Generator().manual_seed(T)
    q, k, v = _leaf(gen, B, T, H, K), _leaf(gen, B, T, H, K), _leaf(gen, B, T, H, V)
    gamma_q, gamma_k = _leaf(gen, K, scale=0.3, shift=1.0), _leaf(gen, K, scale=0.3, shift=1.0)
    sinks = _leaf(gen, H, scale=0.1, shift=sink)
    idx = oracle.naive_cache_select(torch.randn(B, T, H, generator=gen), capacity=W, block_size=C)
    idx[:, :, 1, 1] = -1
    assert (idx[:, :, 0] == -1).all() and (idx[:, :, 2:] >= 0).all()

    def f(q, k, v, gamma_q, gamma_k, sinks):
        return oracle.naive_cache_read(q, k, v, idx, gamma_q, gamma_k, sinks, block_size=C, eps=1e-6)

    assert gradcheck(f, (q, k, v, gamma_q, gamma_k, sinks))
