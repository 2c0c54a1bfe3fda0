"""Sampling continuations from a ``HOLALM``: temperature, top-k, top-p, a stop token, a seed, and
prompts of different lengths in one batch.

Prompts of different lengths are neither left- nor right-padded: each length's prompts are
prefilled together, on their own, so no padding token ever enters a state, a cache or a
convolution tail; their memories are then joined into one batch (``MixerMemory.cat``) and
decoded together, each row at its own position (the decode kernels take per-row positions).
The softmax-attention baseline keeps a growing per-batch cache without per-row positions, so
for it the prompts must have one length.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from model.mixer import MixerMemory


def _check_prob(name: str, value, lo: float, hi: float, lo_open: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (lo < value if lo_open else lo <= value) \
        and value <= hi
    if not ok:
        raise ValueError(f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")


def sample(logits: torch.Tensor, *, temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row of ``logits`` [B, vocab]: argmax when ``temperature`` is 0, else a draw
    from softmax(logits / temperature) restricted to the ``top_k`` most likely tokens and to the
    smallest set whose probability reaches ``top_p`` (the most likely token always stays).
    Returns [B] int64."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs                  # mass of the strictly more likely tokens
        drop = before >= top_p
        drop[:, 0] = False
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _prompts(prompts) -> list[torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.dtype != torch.long:
            raise ValueError(f"prompts: expected a [B, T] int64 tensor or a list of 1-D ones, got "
                             f"{prompts.dtype} of shape {tuple(prompts.shape)}")
        return list(prompts)
    rows = list(prompts)
    if not rows:
        raise ValueError("prompts: expected at least one prompt, got none")
    for i, p in enumerate(rows):
        if not isinstance(p, torch.Tensor) or p.dim() != 1 or p.dtype != torch.long or p.numel() == 0:
            what = f"{p.dtype} of shape {tuple(p.shape)}" if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"prompts[{i}]: expected a non-empty 1-D int64 tensor of token ids, got {what}")
    return rows


def _prefill(lm, rows: list[torch.Tensor], backend: Optional[str]):
    """(last logits [B, vocab], per-layer memory of the batch in the rows' order)."""
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(rows):
        by_length.setdefault(p.numel(), []).append(i)
    if len(by_length) == 1:
        logits, memory = lm.prefill(torch.stack(rows), backend)
        return logits[:, -1], memory
    if lm.config.variant == "transformer":
        raise ValueError(f"prompts: the transformer baseline decodes one length per batch, got lengths "
                         f"{sorted(by_length)}")
    parts, order = [], []
    for n, idx in by_length.items():
        logits, memory = lm.prefill(torch.stack([rows[i] for i in idx]), backend)
        parts.append((logits[:, -1], memory))
        order += idx
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    inverse = inverse.to(parts[0][0].device)
    last = torch.cat([p[0] for p in parts]).index_select(0, inverse)
    memory = [MixerMemory.cat([p[1][layer] for p in parts]).rows(inverse) for layer in range(len(parts[0][1]))]
    return last, memory


@torch.no_grad()
def generate(lm, prompts: Union[torch.Tensor, Sequence[torch.Tensor]], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
             stop_token: Optional[int] = None, seed: Optional[int] = None, pad_token: int = -1,
             backend: Optional[str] = None) -> torch.Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    prompts: [B, T] int64, or a list of 1-D int64 tensors of any lengths. Sampling as
    :func:`sample` (``temperature=0`` is greedy); ``seed`` makes the draws reproducible (a
    generator of its own, torch's global one is left alone). A row that emits ``stop_token``
    keeps it and stops; the rest of its row is ``pad_token``; decoding ends when every row has
    stopped. Returns [B, max_new_tokens] int64.
    """
    rows = _prompts(prompts)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}")
    _check_prob("temperature", temperature, 0.0, float("inf"), lo_open=False)
    vocab = lm.config.vocab_size
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k: expected a positive int or None, got {top_k!r}")
    if top_p is not None:
        _check_prob("top_p", top_p, 0.0, 1.0, lo_open=True)
    if stop_token is not None and not (isinstance(stop_token, int) and 0 <= stop_token < vocab):
        raise ValueError(f"stop_token: expected a token id in [0, {vocab}), got {stop_token!r}")
    device = lm.embed.weight.device
    rows = [p.to(device) for p in rows]
    for i, p in enumerate(rows):
        if int(p.min()) < 0 or int(p.max()) >= vocab:
            raise ValueError(f"prompts[{i}]: token ids must lie in [0, {vocab}), got [{int(p.min())}, {int(p.max())}]")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    pick = lambda logits: sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    logits, memory = _prefill(lm, rows, backend)
    out = torch.full((len(rows), max_new_tokens), pad_token, dtype=torch.long, device=device)
    live = torch.ones(len(rows), dtype=torch.bool, device=device)
    token = pick(logits)
    for i in range(max_new_tokens):
        out[:, i] = torch.where(live, token, torch.full_like(token, pad_token))
        if stop_token is not None:
            live &= token != stop_token
        if i + 1 == max_new_tokens or not bool(live.any()):
            break
        logits, memory = lm.decode_step(token, memory, backend)
        token = pick(logits)
    return out
