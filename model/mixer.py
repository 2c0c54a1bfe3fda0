"""The HOLA token mixer (SPEC.md sections 2-4): a Gated DeltaNet layer with an exact cache.

One class serves every recurrent variant: ``gdn`` (no cache), ``hola`` (cache scored by the
scan's surprise m), ``hola-recency`` (the w most recent tokens), ``ahn`` (the recency cache
plus a state that has absorbed only the tokens older than the cache) and ``lola`` (the cache
rescored at every block boundary by LoLA's self-recall error against the state there). Prefill runs the three
kernels through ``hola_dsl.ops`` with the caller's backend; ``step`` advances one token holding
only a ``MixerMemory`` whose size does not depend on how many tokens were seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hola_dsl import ops, validate
from hola_dsl.reference.oracle import ranked_scores
from model.config import HOLAConfig

CACHE_EPS = 1e-6  # SPEC.md section 3: the cache read's RMSNorm epsilon


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dim, times ``weight`` when given."""
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def causal_conv(x: torch.Tensor, weight: torch.Tensor, tail: torch.Tensor):
    """Depthwise causal convolution continuing from ``tail``.

    x: [B, T, D]; weight: [D, S]; tail: [B, S-1, D], the S-1 inputs before x (zeros at the
    start of a sequence). Returns (y [B, T, D], new tail [B, S-1, D]).
    """
    xx = torch.cat([tail.to(x.dtype), x], dim=1)
    y = F.conv1d(xx.transpose(1, 2), weight[:, None, :], groups=weight.shape[0]).transpose(1, 2)
    return y, xx[:, xx.shape[1] - tail.shape[1]:]


def packed_causal_conv(x: torch.Tensor, weight: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """:func:`causal_conv` of each packed sequence from a zero tail, in one call: every sequence
    gets its own S-1 zero rows in front, so no window reaches into the sequence before it.
    x: [1, T, D]; offsets: cu_seqlens as ints. Returns y [1, T, D]."""
    S1 = weight.shape[1] - 1
    T, D = x.shape[1], x.shape[2]
    lengths = torch.tensor([e - s for s, e in zip(offsets[:-1], offsets[1:])], device=x.device)
    seq = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), lengths)    # [T]
    row = torch.arange(T, device=x.device) + S1 * (seq + 1)     # each token's row in the padded copy
    padded = x.new_zeros(1, T + S1 * len(lengths), D)
    padded[:, row] = x
    y = F.conv1d(padded.transpose(1, 2), weight[:, None, :], groups=D).transpose(1, 2)   # [1, rows - S1, D]
    return y[:, row - S1]


@dataclass
class Entries:
    """Exact token copies held per batch element and head, along dim 2 (n entries).

    k: [B, H, n, K] (unit L2, as the scan sees it); v: [B, H, n, V]; score, g, beta: [B, H, n];
    pos: [B, H, n] int64 absolute positions, -1 marks an empty slot (score -inf, k = v = 0).
    g and beta are kept so that ``ahn`` can later absorb the entry into its state.
    """

    k: torch.Tensor
    v: torch.Tensor
    score: torch.Tensor
    pos: torch.Tensor
    g: torch.Tensor
    beta: torch.Tensor

    @staticmethod
    def empty(B: int, H: int, n: int, K: int, V: int, device, dtype) -> "Entries":
        return Entries(
            k=torch.zeros(B, H, n, K, device=device, dtype=dtype),
            v=torch.zeros(B, H, n, V, device=device, dtype=dtype),
            score=torch.full((B, H, n), -math.inf, device=device),
            pos=torch.full((B, H, n), -1, dtype=torch.long, device=device),
            g=torch.zeros(B, H, n, device=device),
            beta=torch.zeros(B, H, n, device=device),
        )

    def cat(self, other: "Entries") -> "Entries":
        return Entries(*(torch.cat([a, b], dim=2) for a, b in zip(self.fields(), other.fields())))

    def take(self, index: torch.Tensor) -> "Entries":
        """Entries at ``index`` [B, H, m] along dim 2."""
        def gather(x):
            i = index if x.dim() == 3 else index[..., None].expand(-1, -1, -1, x.shape[-1])
            return x.gather(2, i)
        return Entries(*(gather(x) for x in self.fields()))

    def fields(self):
        return (self.k, self.v, self.score, self.pos, self.g, self.beta)

    @property
    def size(self) -> int:
        return self.k.shape[2]


def recall_errors(held: Entries, S: torch.Tensor) -> Entries:
    """``held`` scored as policy "lola" scores (SPEC.md section 2): the squared self-recall error
    ||v - S^T k||^2 in float32 (the order of sre; what ``lola_select`` ranks), -inf for empty
    slots. S: [B, H, K, V], the state at the block start."""
    e = held.v.float() - held.k.float() @ S.float()
    score = torch.where(held.pos >= 0, (e * e).sum(-1), torch.full_like(e[..., 0], -math.inf))
    return replace(held, score=score)


def top_entries(entries: Entries, capacity: int, policy: str) -> Entries:
    """The ``capacity`` best entries, best first: SPEC.md section 2's order (higher score, then
    later position; policy "recency" scores by position; NaN counts as -inf). Empty slots sort
    last."""
    by_pos = torch.sort(entries.pos, dim=-1, descending=True, stable=True).indices
    if policy == "recency":
        order = by_pos
    else:
        s = ranked_scores(entries.score).gather(-1, by_pos)
        order = by_pos.gather(-1, torch.sort(s, dim=-1, descending=True, stable=True).indices)
    n = min(capacity, entries.size)
    best = entries.take(order[..., :n])
    if n < capacity:
        B, H, _ = entries.pos.shape
        pad = Entries.empty(B, H, capacity - n, entries.k.shape[-1], entries.v.shape[-1],
                            entries.k.device, entries.k.dtype)
        best = best.cat(pad)
    return best


@dataclass
class MixerMemory:
    """Everything one sequence's mixer needs to continue: constant size in the tokens seen.

    pos: tokens seen; conv: [B, S-1, D] the short convolution's input tail; state: [B, H, K, V]
    float32 (for ``ahn``: the state after the first ``absorbed`` tokens only); cache: w slots
    (the exact set for the current block, best first); block: the current block's tokens so
    far (<= C, in position order).
    """

    pos: int
    conv: torch.Tensor
    state: torch.Tensor
    cache: Optional[Entries]
    block: Optional[Entries]
    absorbed: int = 0


class HOLAMixer(nn.Module):
    """Gated DeltaNet mixer with HOLA's exact cache. x: [B, T, d_model] -> [B, T, d_model]."""

    def __init__(self, config: HOLAConfig):
        super().__init__()
        c = config
        self.config = c
        H, K, V = c.n_heads, c.head_k_dim, c.head_v_dim
        self.dims = (H * K, H * K, H * V)
        self.qkv_proj = nn.Linear(c.d_model, sum(self.dims), bias=False)
        self.conv_weight = nn.Parameter(torch.empty(sum(self.dims), c.conv_size))
        self.a_proj = nn.Linear(c.d_model, H, bias=False)
        self.b_proj = nn.Linear(c.d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.gate_proj = nn.Linear(c.d_model, H * V, bias=False)
        self.o_norm_weight = nn.Parameter(torch.ones(V))
        self.o_proj = nn.Linear(H * V, c.d_model, bias=False)
        self.policy = c.cache_policy
        if self.policy is not None:
            self.gamma_q = nn.Parameter(torch.ones(K))
            self.gamma_k = nn.Parameter(torch.ones(K))
            self.sink = nn.Parameter(torch.zeros(H))
            self.cache_gate = nn.Parameter(torch.full((H,), float(c.gate_init)))
        self.reset_gdn_parameters()

    @torch.no_grad()
    def reset_gdn_parameters(self) -> None:
        """Gated DeltaNet's initialisation of the decay and the short convolution."""
        H = self.config.n_heads
        nn.init.uniform_(self.conv_weight, -1 / math.sqrt(self.config.conv_size), 1 / math.sqrt(self.config.conv_size))
        self.A_log.copy_(torch.empty(H).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1))).clamp(min=1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    # ---- per-token quantities shared by prefill and decode ----

    def _features(self, x: torch.Tensor, tail: Optional[torch.Tensor], offsets: Optional[list[int]] = None):
        """q, k (unit L2) [B, T, H, K], v [B, T, H, V], g, beta [B, T, H] and the new conv tail
        (None for packed sequences, ``offsets``, each convolved from a zero tail)."""
        c = self.config
        B, T, _ = x.shape
        if offsets is None:
            y, tail = causal_conv(self.qkv_proj(x), self.conv_weight, tail)
        else:
            y = packed_causal_conv(self.qkv_proj(x), self.conv_weight, offsets)
        q, k, v = F.silu(y).split(self.dims, dim=-1)
        q = ops.l2norm(q.reshape(B, T, c.n_heads, c.head_k_dim))
        k = ops.l2norm(k.reshape(B, T, c.n_heads, c.head_k_dim))
        v = v.reshape(B, T, c.n_heads, c.head_v_dim)
        beta = torch.sigmoid(self.b_proj(x).float())
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        return q, k, v, g, beta, tail

    def _output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Per-head RMSNorm gated by silu(W_g x), then the output projection. o: [B, T, H, V]."""
        B, T = x.shape[:2]
        gate = F.silu(self.gate_proj(x)).reshape(o.shape)
        o = rms_norm(o, self.o_norm_weight, self.config.norm_eps) * gate
        return self.o_proj(o.reshape(B, T, -1))

    def _tail0(self, B: int, device, dtype) -> torch.Tensor:
        return torch.zeros(B, self.config.conv_size - 1, sum(self.dims), device=device, dtype=dtype)

    def _absorb_points(self, T: int) -> list[int]:
        """ahn: a_n = max(0, nC - w), the tokens the state has absorbed when block n starts."""
        C, w = self.config.cache_block, self.config.cache_capacity
        return [max(0, n * C - w) for n in range(-(-T // C))]

    # ---- prefill ----

    def forward(self, x: torch.Tensor, backend: str = "reference", return_memory: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None):
        """Prefill from an empty memory. x: [B, T, d_model] -> y [B, T, d_model]
        (and the ``MixerMemory`` after the last token when ``return_memory``).

        cu_seqlens (int offsets [N + 1], B = 1): N prompts packed along T, each computed as if
        alone (its own short convolution, state and cache blocks; hola_dsl.varlen). ``ahn``
        runs the sequences one at a time; ``return_memory`` is not offered for packed prompts."""

        c = self.config
        B, T, _ = x.shape
        if cu_seqlens is not None:
            return self._forward_packed(x, backend, return_memory, cu_seqlens)
        q, k, v, g, beta, tail = self._features(x, self._tail0(B, x.device, x.dtype))
        scan = dict(chunk_size=c.chunk_size, backend=backend)
        S, absorbed = None, 0
        states = None
        if c.variant == "ahn":
            o, S, absorbed = self._ahn_state_read(q, k, v, g, beta, scan, return_memory)
            scores = torch.zeros_like(g)
        elif self.policy == "lola":
            o, states, S = self._block_states_scan(q, k, v, g, beta, scan)
            scores = torch.zeros_like(g)   # rescored at every block boundary instead
        else:
            o, m, S = ops.delta_scan(q, k, v, g, beta, output_final_state=return_memory, **scan)
            scores = m.detach()  # selection uses the scores as numbers (SPEC.md section 2)
        if states is not None:
            idx = ops.lola_select(k, v, states, capacity=c.cache_capacity, block_size=c.cache_block,
                                  backend=backend)
        elif self.policy is not None:
            idx = ops.cache_select(scores, capacity=c.cache_capacity, block_size=c.cache_block,
                                   policy=self.policy, backend=backend)
        if self.policy is not None:
            o_cache = ops.cache_read(q, k, v, idx, self.gamma_q, self.gamma_k, self.sink,
                                     block_size=c.cache_block, eps=CACHE_EPS, backend=backend)
            o = o + torch.sigmoid(self.cache_gate).view(1, 1, -1, 1).to(o.dtype) * o_cache
        y = self._output(x, o)
        if not return_memory:
            return y
        tokens = Entries(k=k.transpose(1, 2), v=v.transpose(1, 2), score=scores.transpose(1, 2).float(),
                         pos=torch.arange(T, device=x.device).expand(B, c.n_heads, T),
                         g=g.transpose(1, 2), beta=beta.transpose(1, 2))
        return y, self._memory_after_prefill(tokens, tail, S, absorbed, T, idx if states is not None else None)

    def _block_states_scan(self, q, k, v, g, beta, scan: dict):
        """lola: the scan one cache block at a time, so that the state at every block start is
        at hand. Returns (o [B, T, H, V], states [B, H, NB, K, V] float32 (row n: the state after
        the first nC tokens), the final state). Costs NB scan calls instead of one (the same
        arithmetic; on a GPU the chunk-parallel phases then see C tokens a call)."""
        c = self.config
        B, T, H, K = q.shape
        C = c.cache_block
        S = torch.zeros(B, H, K, c.head_v_dim, device=q.device, dtype=torch.float32)
        outs, states = [], []
        for lo in range(0, T, C):
            states.append(S)
            blk = slice(lo, lo + C)
            o, _, S = ops.delta_scan(q[:, blk], k[:, blk], v[:, blk], g[:, blk], beta[:, blk],
                                     initial_state=S, output_final_state=True, **scan)
            outs.append(o)
        # The states only rank candidates (SPEC.md section 2: selection is not differentiated).
        return torch.cat(outs, dim=1), torch.stack(states, 2).detach(), S

    def _forward_packed(self, x: torch.Tensor, backend: str, return_memory: bool, cu_seqlens: torch.Tensor):
        """``forward`` for packed prompts (see there)."""
        c = self.config
        offsets = validate.cu_seqlens(cu_seqlens, x.shape[0], x.shape[1])
        if return_memory:
            raise ValueError("return_memory: not offered with cu_seqlens; prefill each prompt for its memory")
        if c.variant == "ahn" or self.policy == "lola":   # per-block states of one sequence
            # (_ahn_state_read, _block_states_scan): each prompt alone
            outs = [self.forward(x[:, s:e], backend) for s, e in zip(offsets[:-1], offsets[1:]) if e > s]
            return torch.cat(outs, 1) if outs else x.new_zeros(x.shape)
        q, k, v, g, beta, _ = self._features(x, None, offsets)
        o, m, _ = ops.delta_scan(q, k, v, g, beta, chunk_size=c.chunk_size, backend=backend, cu_seqlens=cu_seqlens)
        if self.policy is not None:
            idx = ops.cache_select(m.detach(), capacity=c.cache_capacity, block_size=c.cache_block,
                                   policy=self.policy, backend=backend, cu_seqlens=cu_seqlens)
            o_cache = ops.cache_read(q, k, v, idx, self.gamma_q, self.gamma_k, self.sink, block_size=c.cache_block,
                                     eps=CACHE_EPS, backend=backend, cu_seqlens=cu_seqlens)
            o = o + torch.sigmoid(self.cache_gate).view(1, 1, -1, 1).to(o.dtype) * o_cache
        return self._output(x, o)

    def _ahn_state_read(self, q, k, v, g, beta, scan: dict, want_state: bool):
        """o_state for ahn: block n's queries read the state after its first a_n tokens."""

        c = self.config
        B, T, H, K = q.shape
        C = c.cache_block
        points = self._absorb_points(T)
        if want_state and T % C == 0:  # the next token opens a new block: absorb up to its a_n too
            points.append(max(0, T - c.cache_capacity))
        S = torch.zeros(B, H, K, c.head_v_dim, device=q.device, dtype=torch.float32)
        outs, done = [], 0
        for n, a in enumerate(points):
            if a > done:
                _, _, S = ops.delta_scan(q[:, done:a], k[:, done:a], v[:, done:a], g[:, done:a], beta[:, done:a],
                                         initial_state=S, output_final_state=True, **scan)
                done = a
            if n * C < T:
                qb = q[:, n * C:(n + 1) * C].float() * K ** -0.5
                outs.append(torch.einsum("bthk,bhkv->bthv", qb, S))
        return torch.cat(outs, dim=1).to(v.dtype), S, done

    def _memory_after_prefill(self, tokens: Entries, tail, S, absorbed: int, T: int,
                              idx: Optional[torch.Tensor] = None) -> MixerMemory:
        c = self.config
        B, H = tokens.pos.shape[:2]
        if S is None:
            S = torch.zeros(B, H, c.head_k_dim, c.head_v_dim, device=tail.device)
        if self.policy is None:
            return MixerMemory(pos=T, conv=tail, state=S, cache=None, block=None)
        start = (T // c.cache_block) * c.cache_block  # first position of the block holding token T
        before = tokens.take(torch.arange(start, device=tail.device).expand(B, H, start))
        block = tokens.take(torch.arange(start, T, device=tail.device).expand(B, H, T - start))
        if idx is None:
            cache = top_entries(before, c.cache_capacity, self.policy)
        elif start < T:   # lola: the selection's own row for the block holding token T
            cache = self._cache_row(tokens, idx[:, :, start // c.cache_block])
        else:             # the next token opens a block: merge the last one at the final state
            last = start - c.cache_block
            cache = self._cache_row(tokens, idx[:, :, last // c.cache_block]).cat(
                tokens.take(torch.arange(last, start, device=tail.device).expand(B, H, c.cache_block)))
            cache = top_entries(recall_errors(cache, S), c.cache_capacity, self.policy)
        return MixerMemory(pos=T, conv=tail, state=S, cache=cache, block=block, absorbed=absorbed)

    @staticmethod
    def _cache_row(tokens: Entries, row: torch.Tensor) -> Entries:
        """The entries one row of cache indices names ([B, H, W], -1 = empty slot)."""
        held = tokens.take(row.clamp(min=0))
        empty = row < 0
        return Entries(k=held.k.masked_fill(empty[..., None], 0), v=held.v.masked_fill(empty[..., None], 0),
                       score=held.score.masked_fill(empty, -math.inf), pos=row.masked_fill(empty, -1),
                       g=held.g.masked_fill(empty, 0), beta=held.beta.masked_fill(empty, 0))

    # ---- decode ----

    def init_memory(self, batch_size: int, device=None, dtype=torch.float32) -> MixerMemory:
        """The memory of an empty sequence."""
        c = self.config
        device = device or self.o_proj.weight.device
        H, K, V = c.n_heads, c.head_k_dim, c.head_v_dim
        S = torch.zeros(batch_size, H, K, V, device=device)
        cache = block = None
        if self.policy is not None:
            cache = Entries.empty(batch_size, H, c.cache_capacity, K, V, device, dtype)
            block = Entries.empty(batch_size, H, 0, K, V, device, dtype)
        return MixerMemory(pos=0, conv=self._tail0(batch_size, device, dtype), state=S, cache=cache, block=block)

    def step(self, x: torch.Tensor, memory: MixerMemory, backend: str = "reference"):
        """One token. x: [B, 1, d_model]. Returns (y [B, 1, d_model], the next MixerMemory)."""

        c = self.config
        B = x.shape[0]
        q, k, v, g, beta, tail = self._features(x, memory.conv)
        if c.variant == "ahn":
            o = torch.einsum("bthk,bhkv->bthv", q.float() * c.head_k_dim ** -0.5, memory.state).to(v.dtype)
            S, score = memory.state, torch.zeros_like(g)
        else:
            o, m, S = ops.delta_scan(q, k, v, g, beta, initial_state=memory.state, output_final_state=True,
                                     chunk_size=c.chunk_size, backend=backend)
            score = m.detach()
        mem = replace(memory, pos=memory.pos + 1, conv=tail, state=S)
        if self.policy is not None:
            new = Entries(k=k.transpose(1, 2), v=v.transpose(1, 2), score=score.transpose(1, 2).float(),
                          pos=torch.full((B, c.n_heads, 1), memory.pos, dtype=torch.long, device=x.device),
                          g=g.transpose(1, 2), beta=beta.transpose(1, 2))
            mem.block = memory.block.cat(new)
            o_cache = self._read(q[:, 0], mem.cache.cat(mem.block))
            o = o + torch.sigmoid(self.cache_gate).view(1, 1, -1, 1).to(o.dtype) * o_cache[:, None]
            if mem.pos % c.cache_block == 0:
                mem = self._end_block(mem, backend)
        return self._output(x, o), mem

    def _read(self, q: torch.Tensor, held: Entries) -> torch.Tensor:
        """SPEC.md section 3 for one query per (b, h). q: [B, H, K] -> o_cache [B, H, V]."""
        K = q.shape[-1]
        qc = rms_norm(q.float(), self.gamma_q.float(), CACHE_EPS)
        kc = rms_norm(held.k.float(), self.gamma_k.float(), CACHE_EPS)
        logits = torch.einsum("bhk,bhnk->bhn", qc, kc) / math.sqrt(K)
        logits = logits.masked_fill(held.pos < 0, -math.inf)
        sink = self.sink.float().view(1, -1, 1).expand(q.shape[0], -1, 1)
        p = torch.softmax(torch.cat([sink, logits], dim=-1), dim=-1)[..., 1:]  # the sink's value is 0
        return torch.einsum("bhn,bhnv->bhv", p, held.v.float()).to(held.v.dtype)

    def _end_block(self, mem: MixerMemory, backend: str) -> MixerMemory:
        """Merge the finished block into the cache; ahn first absorbs what leaves the window."""

        c = self.config
        held = mem.cache.cat(mem.block)
        absorbed = mem.absorbed
        if c.variant == "ahn":
            target = max(0, mem.pos - c.cache_capacity)
            if target > absorbed:
                # Positions are the same in every (b, h) row for recency, so one row orders all.
                row = held.pos[0, 0]
                ids = [int(i) for i in torch.argsort(row) if absorbed <= int(row[i]) < target]
                seg = held.take(torch.tensor(ids, device=row.device).expand(*held.pos.shape[:2], len(ids)))
                k = seg.k.transpose(1, 2)
                _, _, mem.state = ops.delta_scan(k, k, seg.v.transpose(1, 2), seg.g.transpose(1, 2),
                                                 seg.beta.transpose(1, 2), initial_state=mem.state,
                                                 output_final_state=True, chunk_size=c.chunk_size, backend=backend)
                absorbed = target
        if self.policy == "lola":   # rescored against the state at the new block's start
            held = recall_errors(held, mem.state)
        cache = top_entries(held, c.cache_capacity, self.policy)
        B, H = held.pos.shape[:2]
        block = Entries.empty(B, H, 0, c.head_k_dim, c.head_v_dim, held.k.device, held.k.dtype)
        return replace(mem, cache=cache, block=block, absorbed=absorbed)
