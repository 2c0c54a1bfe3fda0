"""Synthetic recall tasks that isolate the memory mechanism, with their own small vocabulary.

- MQAR (multi-query associative recall, as in Zoology): N key-value pairs, then the same keys
  asked again in random order at random places in a stretch of filler; the model must give
  each key's value. N is fixed by the task (more pairs than a small state holds), so a longer
  sequence only puts the questions further from the answers.
- Passkey: a repetitive filler text with a needle "<needle> d1 .. d5" at a random depth; at the
  end "<query>" and the model must say d1 .. d5.

Both return (inputs [B, L], targets [B, L], mask [B, L]); only masked positions are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

# Token layout shared by both tasks (vocabulary of VOCAB_SIZE ids).
PAD, FILLER, NEEDLE, QUERY = 0, 1, 2, 3
DIGITS = range(4, 14)            # passkey digits
TEXT = range(14, 30)             # passkey filler text: one fixed cycle of these
KEYS = range(32, 144)            # MQAR keys
VALUES = range(144, 256)         # MQAR values
VOCAB_SIZE = 256
TASKS = ("mqar", "passkey")


@dataclass(frozen=True)
class MQAR:
    """n_pairs key-value pairs, then every key asked once, spread over the rest of the length."""

    n_pairs: int = 24

    def min_length(self) -> int:
        return 4 * self.n_pairs

    def batch(self, batch_size: int, length: int, generator: torch.Generator):
        if length < self.min_length():
            raise ValueError(f"length: MQAR with {self.n_pairs} pairs needs >= {self.min_length()} tokens, got {length}")
        n = self.n_pairs
        x = torch.full((batch_size, length + 1), FILLER, dtype=torch.int64)
        mask = torch.zeros(batch_size, length + 1, dtype=torch.bool)
        for b in range(batch_size):
            keys = torch.tensor(KEYS)[torch.randperm(len(KEYS), generator=generator)[:n]]
            vals = torch.tensor(VALUES)[torch.randint(0, len(VALUES), (n,), generator=generator)]
            x[b, 0 : 2 * n : 2], x[b, 1 : 2 * n : 2] = keys, vals
            # Questions: n two-token slots (key, value) at random places among length - 2n positions.
            free = length + 1 - 2 * n
            slots = torch.sort(torch.randperm(free // 2, generator=generator)[:n]).values * 2 + 2 * n
            order = torch.randperm(n, generator=generator)
            x[b, slots], x[b, slots + 1] = keys[order], vals[order]
            mask[b, slots + 1] = True
        return x[:, :-1], x[:, 1:], mask[:, 1:]


@dataclass(frozen=True)
class Passkey:
    """A n_digits passkey hidden at a random depth in length tokens of cyclic filler text."""

    n_digits: int = 5

    def min_length(self) -> int:
        return 2 * (self.n_digits + 1) + 8

    def batch(self, batch_size: int, length: int, generator: torch.Generator):
        if length < self.min_length():
            raise ValueError(f"length: passkey needs >= {self.min_length()} tokens, got {length}")
        d = self.n_digits
        text = torch.tensor(TEXT)
        x = text[torch.arange(length + 1) % len(text)].repeat(batch_size, 1)
        mask = torch.zeros(batch_size, length + 1, dtype=torch.bool)
        q = length + 1 - (d + 1)                       # the query goes last
        for b in range(batch_size):
            key = torch.tensor(DIGITS)[torch.randint(0, len(DIGITS), (d,), generator=generator)]
            at = int(torch.randint(0, q - (d + 1) + 1, (1,), generator=generator))
            x[b, at], x[b, at + 1 : at + 1 + d] = NEEDLE, key
            x[b, q], x[b, q + 1 :] = QUERY, key
            mask[b, q + 1 :] = True
        return x[:, :-1], x[:, 1:], mask[:, 1:]


def get(name: str):
    """The task called ``name`` with its default settings."""
    if name == "mqar":
        return MQAR()
    if name == "passkey":
        return Passkey()
    raise ValueError(f"task: expected one of {list(TASKS)}, got {name!r}")


@torch.no_grad()
def accuracy(model, task, lengths: Sequence[int], *, samples: int = 64, batch_size: int = 16, seed: int = 1234,
             backend: Optional[str] = None) -> dict:
    """Per length: the fraction of scored tokens predicted right (argmax, teacher forced) and the
    fraction of sequences with every scored token right. Returns {length: (token_acc, seq_acc)}."""
    device = next(model.parameters()).device
    out = {}
    for length in lengths:
        gen = torch.Generator().manual_seed(seed + length)
        right = total = seq_right = seqs = 0
        for start in range(0, samples, batch_size):
            n = min(batch_size, samples - start)
            x, y, mask = task.batch(n, length, gen)
            pred = model(x.to(device), backend=backend).argmax(-1).cpu()
            ok = (pred == y) | ~mask
            right += int(((pred == y) & mask).sum())
            total += int(mask.sum())
            seq_right += int(ok.all(dim=1).sum())
            seqs += n
        out[length] = (right / total, seq_right / seqs)
    return out
