"""The softmax-attention baseline: causal multi-head attention with rotary positions.

Same interface as ``HOLAMixer`` so that ``HOLALM`` can swap it in (variant "transformer") for
the perplexity comparison at equal width, depth and training budget. Its decode memory is a KV
cache that grows with the sequence, unlike the HOLA mixers'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import HOLAConfig


def rotary(x: torch.Tensor, start: int, base: float) -> torch.Tensor:
    """Rotate pairs of channels of x [B, H, T, D] by position (start + t) * base^(-2i/D)."""
    B, H, T, D = x.shape
    inv = base ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    ang = torch.arange(start, start + T, device=x.device, dtype=torch.float32)[:, None] * inv
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


@dataclass
class AttentionMemory:
    """pos tokens seen; k, v: [B, H, pos, D] (grows by one per token)."""

    pos: int
    k: torch.Tensor
    v: torch.Tensor


class AttentionMixer(nn.Module):
    """Causal softmax attention. x: [B, T, d_model] -> [B, T, d_model]."""

    def __init__(self, config: HOLAConfig):
        super().__init__()
        self.config = config
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.qkv_proj = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def _qkv(self, x: torch.Tensor, start: int):
        B, T, _ = x.shape
        q, k, v = self.qkv_proj(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        base = self.config.rope_base
        return rotary(q, start, base), rotary(k, start, base), v

    def forward(self, x: torch.Tensor, backend: str = "reference", return_memory: bool = False):
        """Prefill (``backend`` is accepted for a uniform interface; attention has no kernel here)."""
        B, T, _ = x.shape
        q, k, v = self._qkv(x, 0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = self.o_proj(o.transpose(1, 2).reshape(B, T, -1))
        return (y, AttentionMemory(T, k, v)) if return_memory else y

    def init_memory(self, batch_size: int, device=None, dtype=torch.float32) -> AttentionMemory:
        device = device or self.o_proj.weight.device
        empty = torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        return AttentionMemory(0, empty, empty.clone())

    def step(self, x: torch.Tensor, memory: AttentionMemory, backend: str = "reference"):
        """One token x [B, 1, d_model] -> (y [B, 1, d_model], memory with one more key/value)."""
        B = x.shape[0]
        q, k, v = self._qkv(x, memory.pos)
        k, v = torch.cat([memory.k, k], 2), torch.cat([memory.v, v], 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(o.transpose(1, 2).reshape(B, 1, -1)), AttentionMemory(memory.pos + 1, k, v)
