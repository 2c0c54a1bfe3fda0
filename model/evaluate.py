"""Perplexity and bits per byte of a language model on a token stream."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, token_bytes: Optional[Sequence[int]] = None, *, seq_len: int = 256,
               batch_size: int = 8, backend: Optional[str] = None, max_tokens: Optional[int] = None) -> dict:
    """Mean next-token loss over ``tokens`` [N] cut into consecutive windows of ``seq_len``.

    Every token after the first is predicted exactly once, from at most ``seq_len`` tokens of
    context in its window (the last window may be shorter). ``token_bytes`` (UTF-8 length per
    id) gives bits per byte = total loss in bits / bytes of the predicted tokens. Returns a dict:
    loss (nats per token), perplexity, bits_per_byte (or None), tokens, bytes.
    """
    if max_tokens is not None:
        tokens = tokens[: max_tokens + 1]
    if tokens.numel() < 2:
        raise ValueError(f"tokens: expected at least 2 tokens, got {tokens.numel()}")
    device = next(model.parameters()).device
    n_pred = tokens.numel() - 1
    starts = list(range(0, n_pred, seq_len))
    full = [s for s in starts if s + seq_len <= n_pred]
    rest = [s for s in starts if s + seq_len > n_pred]
    nll, count = 0.0, 0
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)] + [[s] for s in rest]
    for group in groups:
        length = min(seq_len, n_pred - group[0])
        win = torch.stack([tokens[s : s + length + 1] for s in group]).to(device)
        # float64 log-softmax over float32 logits, chunk by chunk (model.loss): the logits of a
        # batch of windows are never held.
        loss = model(win[:, :-1], backend=backend, targets=win[:, 1:], reduction="sum", softmax_dtype=torch.float64)
        nll += loss.item()
        count += win[:, 1:].numel()
    loss = nll / count
    n_bytes = None
    if token_bytes is not None:
        table = torch.as_tensor(token_bytes, dtype=torch.int64)
        n_bytes = int(table[tokens[1:]].sum())
    return dict(loss=loss, perplexity=math.exp(loss), tokens=count, bytes=n_bytes,
                bits_per_byte=(nll / math.log(2) / n_bytes) if n_bytes else None)
