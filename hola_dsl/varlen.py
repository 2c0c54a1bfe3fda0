"""Packed variable-length batches (``cu_seqlens``, docs/api.md): the layout, the host
tables the kernels read, and a per-sequence loop for the PyTorch implementations.

N sequences are packed along T of a batch of one: sequence i holds the packed positions
[cu[i], cu[i + 1]). States are per sequence ([N, H, K, V]). Cache blocks restart at each
sequence start: block n of sequence i covers positions cu[i] + nC .. cu[i] + nC + C - 1, and
idx is ``[1, H, NB, W]`` with NB = sum_i ceil(len_i / C): the blocks of sequence 0 first, then
those of sequence 1, and so on (``block_offsets``). Entries of idx are *packed* positions (a
sequence's own position plus cu[i]), so a read gathers them from the packed tensors as they
are; -1 still marks an empty slot.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch


def bounds(offsets: Sequence[int]) -> list[tuple[int, int]]:
    """[(bos, eos)] of each sequence from checked offsets (``validate.cu_seqlens``)."""
    return list(zip(offsets[:-1], offsets[1:]))


def num_blocks(offsets: Sequence[int], block_size: int) -> list[int]:
    """ceil(len_i / block_size) for each sequence: its rows of idx."""
    return [-(-(e - s) // block_size) for s, e in bounds(offsets)]


def block_offsets(offsets: Sequence[int], block_size: int) -> list[int]:
    """[N + 1] first idx row of each sequence (and the total NB last)."""
    rows = [0]
    for nb in num_blocks(offsets, block_size):
        rows.append(rows[-1] + nb)
    return rows


def block_table(offsets: Sequence[int], block_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(start [NB], end [NB]) int32: the first packed position of each idx row's block and the
    end (exclusive) of its sequence, as the cache read's programs look them up."""
    start, end = [], []
    for (s, e), nb in zip(bounds(offsets), num_blocks(offsets, block_size)):
        start += [s + n * block_size for n in range(nb)]
        end += [e] * nb
    return (torch.tensor(start, dtype=torch.int32, device=device),
            torch.tensor(end, dtype=torch.int32, device=device))


def _shift(idx: torch.Tensor, by: int) -> torch.Tensor:
    """idx with every position (entries >= 0) moved by ``by``; -1 stays."""
    return torch.where(idx >= 0, idx + by, idx)


def scan(fn: Callable, q, k, v, g, beta, offsets: Sequence[int], *, initial_state: Optional[torch.Tensor],
         output_final_state: bool, **options):
    """``fn`` (a scan with delta_scan's signature, no cu_seqlens) run on each sequence alone:
    (o [1, T, H, V], m [1, T, H], final_state [N, H, K, V] or None). An empty sequence's final
    state is its initial state (zeros without one)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    os, ms, finals = [], [], []
    for i, (s, e) in enumerate(bounds(offsets)):
        h0 = None if initial_state is None else initial_state[i:i + 1]
        if e == s:      # filled in below, in the dtype the others' states have
            finals.append(torch.zeros(1, H, K, V, device=q.device) if h0 is None else h0)
            continue
        o, m, final = fn(q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], beta[:, s:e], initial_state=h0,
                         output_final_state=output_final_state, **options)
        os.append(o)
        ms.append(m)
        finals.append(final)
    o = torch.cat(os, 1) if os else v.new_zeros(1, 0, H, V)
    m = torch.cat(ms, 1) if ms else torch.zeros(1, 0, H, dtype=torch.float32, device=q.device)
    if not output_final_state:
        return o, m, None
    dtype = os[0].dtype if os and os[0].dtype == torch.float64 else torch.float32   # the oracle's, else float32
    return o, m, torch.cat([f.to(dtype) for f in finals], 0)


def select(fn: Callable, scores: torch.Tensor, offsets: Sequence[int], *, capacity: int, block_size: int,
           **options) -> torch.Tensor:
    """``fn`` (cache_select's signature, no cu_seqlens) on each sequence alone, rows stacked and
    positions made packed: idx [1, H, NB, capacity]."""
    H = scores.shape[2]
    rows = [_shift(fn(scores[:, s:e], capacity=capacity, block_size=block_size, **options), s)
            for s, e in bounds(offsets) if e > s]
    if not rows:
        return torch.full((1, H, 0, capacity), -1, dtype=torch.int64, device=scores.device)
    return torch.cat(rows, 2)


def read(fn: Callable, q, k, v, idx, gamma_q, gamma_k, sink, offsets: Sequence[int], *, block_size: int,
         **options) -> torch.Tensor:
    """``fn`` (cache_read's signature, no cu_seqlens) on each sequence alone with its rows of
    ``idx`` made sequence-local: o_cache [1, T, H, V]."""
    rows = block_offsets(offsets, block_size)
    outs = []
    for i, (s, e) in enumerate(bounds(offsets)):
        if e > s:
            local = _shift(idx[:, :, rows[i]:rows[i + 1]], -s)
            outs.append(fn(q[:, s:e], k[:, s:e], v[:, s:e], local, gamma_q, gamma_k, sink,
                           block_size=block_size, **options))
    if not outs:
        return v.new_zeros(1, 0, v.shape[2], v.shape[3])
    return torch.cat(outs, 1)
