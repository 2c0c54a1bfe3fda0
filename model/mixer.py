"""The HOLA token mixer (docs/math.md sections 2-4): a Gated DeltaNet layer with an exact cache.

One class serves every recurrent variant: ``gdn`` (no cache), ``hola`` (cache scored by the
scan's surprise m), ``hola-recency`` (the w most recent tokens), ``ahn`` (the recency cache
plus a state that has absorbed only the tokens older than the cache) and ``lola`` (the cache
rescored at every block boundary by LoLA's self-recall error against the state there). Prefill
runs the kernels through ``hola_dsl.ops`` with the caller's backend; ``step`` advances one token
per row (rows at different positions) through ``hola_dsl.decode``'s kernels, holding only a
``MixerMemory`` whose size does not depend on how many tokens were seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hola_dsl import decode, ops, validate
from hola_dsl.reference.oracle import ranked_scores
from model import fused
from model.config import HOLAConfig

CACHE_EPS = 1e-6  # docs/math.md section 3: the cache read's RMSNorm epsilon


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dim, times ``weight`` when given (fused
    backward: ``model.fused``)."""
    return fused.rms_norm(x, weight, eps)


def causal_conv(x: torch.Tensor, weight: torch.Tensor, tail: torch.Tensor):
    """Depthwise causal convolution continuing from ``tail``.

    x: [B, T, D]; weight: [D, S]; tail: [B, S-1, D], the S-1 inputs before x (zeros at the
    start of a sequence). Returns (y [B, T, D], new tail [B, S-1, D]).
    """
    xx = torch.cat([tail.to(x.dtype), x], dim=1)
    return fused.depthwise_causal_conv(xx, weight), xx[:, xx.shape[1] - tail.shape[1]:]


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
    y = fused.depthwise_causal_conv(padded, weight)        # [1, rows - S1, D]
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
    """``held`` scored as policy "lola" scores (docs/math.md section 2): the squared self-recall error
    ||v - S^T k||^2 in float32 (the order of sre; what ``lola_select`` ranks), -inf for empty
    slots. S: [B, H, K, V], the state at the block start."""
    e = held.v.float() - held.k.float() @ S.float()
    score = torch.where(held.pos >= 0, (e * e).sum(-1), torch.full_like(e[..., 0], -math.inf))
    return replace(held, score=score)


def top_entries(entries: Entries, capacity: int, policy: str) -> Entries:
    """The ``capacity`` best entries, best first: docs/math.md section 2's order (higher score, then
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
    """Everything a batch of sequences' mixer needs to continue: constant size in the tokens seen.

    Rows may be at different positions. pos: [B] int64 tokens seen per row; conv: [B, S-1, D] the
    short convolution's input tail; state: [B, H, K, V] float32 (for ``ahn``: the state after
    the first ``absorbed[b]`` tokens only); slots: w + C entries per (b, h), slots [0, w) the
    cache (the exact set for the row's current block, best first), slots [w, w + C) the row's
    current block so far, pos[b] mod C tokens in position order (later slots are stale);
    absorbed: [B] int64 (``ahn``). ``step`` updates a memory in place.
    """

    pos: torch.Tensor
    conv: torch.Tensor
    state: torch.Tensor
    slots: Optional[Entries]
    absorbed: Optional[torch.Tensor] = None

    def rows(self, index: torch.Tensor) -> "MixerMemory":
        """The memory of rows ``index`` ([n] int64) only (copies)."""
        pick = lambda x: None if x is None else x.index_select(0, index)
        slots = None if self.slots is None else Entries(*(pick(f) for f in self.slots.fields()))
        return MixerMemory(pick(self.pos), pick(self.conv), pick(self.state), slots, pick(self.absorbed))

    @staticmethod
    def cat(memories: list["MixerMemory"]) -> "MixerMemory":
        """One batch of the rows of ``memories``, in order (e.g. prompts prefilled one by one)."""
        join = lambda xs: None if xs[0] is None else torch.cat(xs, 0)
        first = memories[0]
        slots = None if first.slots is None else Entries(
            *(join(list(fs)) for fs in zip(*(m.slots.fields() for m in memories))))
        return MixerMemory(join([m.pos for m in memories]), join([m.conv for m in memories]),
                           join([m.state for m in memories]), slots, join([m.absorbed for m in memories]))


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
        q = fused.l2norm(q.reshape(B, T, c.n_heads, c.head_k_dim), ops.L2NORM_EPS)   # ops.l2norm's
        k = fused.l2norm(k.reshape(B, T, c.n_heads, c.head_k_dim), ops.L2NORM_EPS)
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
            scores = m.detach()  # selection uses the scores as numbers (docs/math.md section 2)
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
        # The states only rank candidates (docs/math.md section 2: selection is not differentiated).
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
        dev = tail.device
        if S is None:
            S = torch.zeros(B, H, c.head_k_dim, c.head_v_dim, device=dev)
        pos = torch.full((B,), T, dtype=torch.long, device=dev)
        if self.policy is None:
            return MixerMemory(pos=pos, conv=tail, state=S, slots=None)
        start = (T // c.cache_block) * c.cache_block  # first position of the block holding token T
        before = tokens.take(torch.arange(start, device=dev).expand(B, H, start))
        block = tokens.take(torch.arange(start, T, device=dev).expand(B, H, T - start))
        if idx is None:
            cache = top_entries(before, c.cache_capacity, self.policy)
        elif start < T:   # lola: the selection's own row for the block holding token T
            cache = self._cache_row(tokens, idx[:, :, start // c.cache_block])
        else:             # the next token opens a block: merge the last one at the final state
            last = start - c.cache_block
            cache = self._cache_row(tokens, idx[:, :, last // c.cache_block]).cat(
                tokens.take(torch.arange(last, start, device=dev).expand(B, H, c.cache_block)))
            cache = top_entries(recall_errors(cache, S), c.cache_capacity, self.policy)
        pad = Entries.empty(B, H, c.cache_block - (T - start), c.head_k_dim, c.head_v_dim, dev, tokens.k.dtype)
        slots = Entries(*(x.contiguous() for x in cache.cat(block).cat(pad).fields()))
        return MixerMemory(pos=pos, conv=tail, state=S.contiguous(), slots=slots,
                           absorbed=torch.full((B,), absorbed, dtype=torch.long, device=dev))

    @staticmethod
    def _cache_row(tokens: Entries, row: torch.Tensor) -> Entries:
        """The entries one row of cache indices names ([B, H, W], -1 = empty slot)."""
        held = tokens.take(row.clamp(min=0))
        empty = row < 0
        return Entries(k=held.k.masked_fill(empty[..., None], 0), v=held.v.masked_fill(empty[..., None], 0),
                       score=held.score.masked_fill(empty, -math.inf), pos=row.masked_fill(empty, -1),
                       g=held.g.masked_fill(empty, 0), beta=held.beta.masked_fill(empty, 0))

    # ---- decode ----
    # One token per row per step, every kernel through hola_dsl.decode on the caller's backend.
    # A variant's decoding is three hooks: ``_state_step`` (the recurrent part's output and the
    # token's cache score), ``_absorb`` (what a block boundary does to the state; ahn only) and
    # the shared cache step (write the token into its row's block, read, merge at a boundary).

    def init_memory(self, batch_size: int, device=None, dtype=torch.float32) -> MixerMemory:
        """The memory of ``batch_size`` empty sequences."""
        c = self.config
        device = device or self.o_proj.weight.device
        H, K, V = c.n_heads, c.head_k_dim, c.head_v_dim
        S = torch.zeros(batch_size, H, K, V, device=device)
        pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        slots = absorbed = None
        if self.policy is not None:
            slots = Entries.empty(batch_size, H, c.cache_capacity + c.cache_block, K, V, device, dtype)
            absorbed = torch.zeros(batch_size, dtype=torch.long, device=device)
        return MixerMemory(pos=pos, conv=self._tail0(batch_size, device, dtype), state=S, slots=slots,
                           absorbed=absorbed)

    def step(self, x: torch.Tensor, memory: MixerMemory, backend: str = "reference"):
        """One token per row, each row at its own position (``memory.pos``). x: [B, 1, d_model].
        Returns (y [B, 1, d_model], ``memory``, updated in place)."""

        q, k, v, g, beta, memory.conv = self._features(x, memory.conv)
        o, score = self._state_step(q, k, v, g, beta, memory, backend)
        if self.policy is not None:
            o_cache = self._cache_step(q, k, v, g, beta, score, memory, backend)
            o = o + torch.sigmoid(self.cache_gate).view(1, 1, -1, 1).to(o.dtype) * o_cache
        memory.pos += 1
        if self.policy is not None:
            self._end_blocks(memory, backend)
        return self._output(x, o), memory

    def _state_step(self, q, k, v, g, beta, memory: MixerMemory, backend: str):
        """(o_state [B, 1, H, V], the token's cache score [B, 1, H] float32); the state advances
        in place. ahn reads its state without adding the token (it is absorbed later): the step
        with beta = 0 and g = 0 leaves the state as it is."""
        if self.config.variant == "ahn":
            zero = torch.zeros_like(g)
            o, _, _ = decode.delta_step(q, k, v, zero, zero, memory.state, in_place=True, backend=backend,
                                        check=False)
            return o, zero
        o, m, _ = decode.delta_step(q, k, v, g, beta, memory.state, in_place=True, backend=backend, check=False)
        return o, m.detach()

    def _cache_step(self, q, k, v, g, beta, score, memory: MixerMemory, backend: str) -> torch.Tensor:
        """Write the token into slot w + (pos mod C) of its row and read the cache for it:
        o_cache [B, 1, H, V]."""
        c = self.config
        B, H = memory.state.shape[:2]
        pending = memory.pos % c.cache_block                                   # [B] before this token
        at = (c.cache_capacity + pending).view(B, 1, 1).expand(B, H, 1)
        new = (k.transpose(1, 2), v.transpose(1, 2), score.transpose(1, 2).float(),
               memory.pos.view(B, 1, 1).expand(B, H, 1), g.transpose(1, 2), beta.transpose(1, 2))
        for field, value in zip(memory.slots.fields(), new):
            index = at if field.dim() == 3 else at[..., None].expand(B, H, 1, field.shape[-1])
            field.scatter_(2, index, value.to(field.dtype))
        s = memory.slots
        return decode.cache_read_step(q, s.k, s.v, s.pos, (pending + 1).to(torch.int32), self.gamma_q,
                                      self.gamma_k, self.sink, capacity=c.cache_capacity, eps=CACHE_EPS,
                                      backend=backend, check=False)

    def _end_blocks(self, memory: MixerMemory, backend: str) -> None:
        """Rows whose block just filled merge it into their cache (cache_select's rule: the w
        best of cache and block, ``top_entries``); ahn first absorbs what leaves the window."""
        c = self.config
        done = memory.pos % c.cache_block == 0
        if not bool(done.any()):
            return
        rows = None if bool(done.all()) else done.nonzero()[:, 0]
        if c.variant == "ahn":
            self._absorb(memory, rows, backend)
        held = memory.slots if rows is None else Entries(*(f.index_select(0, rows) for f in memory.slots.fields()))
        if self.policy == "lola":   # rescored against the state at the new block's start
            held = recall_errors(held, memory.state if rows is None else memory.state.index_select(0, rows))
        best = top_entries(held, c.cache_capacity, self.policy)
        for field, value in zip(memory.slots.fields(), best.fields()):
            if rows is None:
                field[:, :, :c.cache_capacity] = value
            else:
                field[rows, :, :c.cache_capacity] = value

    def _absorb(self, memory: MixerMemory, rows: Optional[torch.Tensor], backend: str) -> None:
        """ahn at a block boundary: the state absorbs the tokens leaving the window, positions
        [absorbed, pos - w), in order (held in the slots: recency keeps the w latest)."""
        c = self.config
        every = torch.arange(memory.pos.shape[0], device=memory.pos.device)
        rows = every if rows is None else rows
        target = (memory.pos[rows] - c.cache_capacity).clamp(min=0)
        count = target - memory.absorbed[rows]
        for n in sorted(set(count.tolist()) - {0}):
            group = rows[count == n]
            held = Entries(*(f.index_select(0, group) for f in memory.slots.fields()))
            # Slots sorted by position (empty ones, -1, first): the tokens to absorb are the n
            # from the first position >= absorbed on.
            order = torch.sort(held.pos, dim=-1, stable=True).indices
            first = (held.pos < memory.absorbed[group].view(-1, 1, 1)).sum(-1, keepdim=True)   # [G, H, 1]
            take = order.gather(-1, first + torch.arange(n, device=order.device))
            seg = held.take(take)
            kk = seg.k.transpose(1, 2)
            _, _, S = ops.delta_scan(kk, kk, seg.v.transpose(1, 2), seg.g.transpose(1, 2), seg.beta.transpose(1, 2),
                                     initial_state=memory.state.index_select(0, group), output_final_state=True,
                                     chunk_size=c.chunk_size, backend=backend)
            memory.state[group] = S
            memory.absorbed[group] = target[count == n]
