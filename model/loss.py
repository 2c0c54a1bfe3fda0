"""The language model's loss: a linear head and cross entropy in one, over chunks of rows, so that
neither the forward nor the backward ever holds the [rows, vocab] logits (the small preset's
2048 x 8192 float32 logits are 64 MiB, and the head + loss were half of a training step)."""

from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

IGNORE_INDEX = -100          # as F.cross_entropy's default
# Logits per chunk by default: chunk_rows = CHUNK_LOGITS // vocab (32 MiB of float32; 1024 rows
# at the small preset's vocab 8192). On the small preset's head, 2026-12-02, a machine loaded
# ~4x beyond its 2 cores (benchmarks/train_step.py --loss-only --chunk-rows 512,1024): one
# thread, CPU time, 214 vs 216 ms (chunks of 512 vs 1024); two threads, wall time, 1024 rows
# x1.2 faster than 512 (fewer ops over chunks, each a point where both threads must run); at
# a lighter load (~3x) the two were even (x1.49, x1.50 against logits + F.cross_entropy).
CHUNK_LOGITS = 2 ** 23
REDUCTIONS = ("mean", "sum")
SOFTMAX_DTYPES = (torch.float32, torch.float64)
# Below these a probability's log loses digits (subnormal), so the row's loss is recomputed.
_TINY = {torch.float32: 2.0 ** -100, torch.float64: 2.0 ** -1000}


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         ignore_index: int = IGNORE_INDEX, chunk_rows: Optional[int] = None,
                         reduction: str = "mean", softmax_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cross entropy of the logits ``h @ weight.T`` against ``targets``, without the logits.

    h: [..., D] hidden states (float32, bfloat16 or float16); weight: [vocab, D] of h's dtype
    and device; targets: [...] integer ids in [0, vocab), or ``ignore_index`` for a position
    that is not scored. Returns a scalar in nats: the mean over the scored positions
    (``reduction="mean"``, F.cross_entropy's default) or their sum (``"sum"``). When no position
    is scored the loss is 0 with zero gradients (F.cross_entropy's mean gives NaN there).

    The rows are walked ``chunk_rows`` at a time (default: CHUNK_LOGITS logits a chunk):
    logits in float32 (h and weight converted to float32 first, so bfloat16/float16 inputs
    accumulate in float32), the softmax and the loss of each row in ``softmax_dtype`` (float32,
    or float64 for an evaluation compared against float64 references), the sum over rows in
    float64. The returned loss is float32 (float64 with ``softmax_dtype=torch.float64``); the
    gradients have h's and weight's dtypes.

    Gradients are computed in the forward, chunk by chunk, while a chunk's logits are at hand
    (as Liger-Kernel's fused linear cross entropy does): dlogits = (softmax - onehot) * scale,
    dh = dlogits @ weight, dweight += dlogits.T @ h. The backward only scales the stored dh,
    dweight by the incoming gradient, so the loss must be a scalar that the graph ends in (a
    training loss is, however it is scaled), and double backward is not supported. Recomputing
    each chunk's logits in the backward instead costs a fourth matmul of the same size, and
    the matmuls are most of the time: on the small preset's head (2048 x 128 -> 8192, one
    thread, CPU time, benchmarks/train_step.py --loss-only) 276 ms against 198 ms for this
    design and 327 ms for logits + F.cross_entropy. Memory beyond the inputs: one chunk's
    logits, dh [rows, D] and dweight [vocab, D] in float32 (plus float32 copies of h's chunk
    and of weight for half-precision inputs). Without a gradient to compute (torch.no_grad,
    or no input that requires grad), only the loss is computed.
    """
    rows, tgt = _check(h, weight, targets, ignore_index, chunk_rows, reduction, softmax_dtype)
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(weight.shape[0])
    scored = tgt != ignore_index
    safe = torch.where(scored, tgt, torch.zeros_like(tgt))
    count = scored.sum()
    # Per row: the factor of its loss in the result (0 for an unscored row).
    scale = scored.to(softmax_dtype)
    if reduction == "mean":
        scale = scale / count.clamp(min=1).to(softmax_dtype)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(rows, weight, safe, scale, chunk_rows)
    loss, _, _ = chunked_loss(rows, weight, safe, scale, chunk_rows, False, False)
    return loss


def default_chunk_rows(vocab: int) -> int:
    """Rows per chunk when the caller names none: CHUNK_LOGITS logits (at least one row)."""
    return max(1, CHUNK_LOGITS // vocab)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, scale, chunk_rows):
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, dh, dw = chunked_loss(h, weight, targets, scale, chunk_rows, want_dh, want_dw)
        ctx.dtypes = (h.dtype, weight.dtype)
        ctx.grads = (dh, dw)  # not save_for_backward: these are outputs of no graph, never modified
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        dh, dw = ctx.grads
        grad = grad_loss.to(torch.float32)
        dh = None if dh is None else (dh * grad).to(ctx.dtypes[0])
        dw = None if dw is None else (dw * grad).to(ctx.dtypes[1])
        return dh, dw, None, None, None


def chunked_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor,
                 chunk_rows: int, want_dh: bool, want_dw: bool):
    """The loop of ``linear_cross_entropy`` on checked inputs. h: [N, D]; weight: [V, D];
    targets: [N] ids in [0, V); scale: [N] each row's factor in the loss, in the softmax's dtype
    (float32 or float64). Returns (sum over rows of scale * loss, in scale's dtype; d/dh [N, D]
    or None; d/dweight [V, D] or None), the gradients in float32."""
    N, D = h.shape
    V = weight.shape[0]
    soft = scale.dtype
    f32 = torch.float32
    w = weight.to(f32)                      # the same tensor when weight is float32
    row_loss = torch.empty(N, 1, dtype=soft, device=h.device)
    dh = torch.empty(N, D, dtype=f32, device=h.device) if want_dh else None
    dw = torch.zeros(V, D, dtype=f32, device=h.device) if want_dw else None
    # The row scales go on the [rows, D] operands and results, once for all chunks, not on each
    # [rows, vocab] chunk: every op over a chunk is a point where the threads wait for each
    # other, which on a loaded machine costs more than the op itself.
    row_scale = scale[:, None].to(f32)
    h_scaled = h.to(f32) * row_scale if want_dw else None
    # One buffer for every chunk's logits: a fresh 32 MiB tensor per chunk costs page faults.
    buf = torch.empty(min(chunk_rows, N), V, dtype=f32, device=h.device)
    for r0 in range(0, N, chunk_rows):
        r1 = min(r0 + chunk_rows, N)
        hc = h[r0:r1].to(f32)
        z = torch.mm(hc, w.t(), out=buf[: r1 - r0])
        zs = z if soft == f32 else z.to(soft)
        tc = targets[r0:r1, None]
        if not (want_dh or want_dw):
            # log_softmax in place: per row max, exp-sum, write; overflow-safe whatever the logits.
            torch.neg(torch.log_softmax(zs, 1, out=zs).gather(1, tc), out=row_loss[r0:r1])
            continue
        # softmax in place, the loss from its target entries: one op over the chunk for both.
        # Where the target's probability is too small to take its log in this dtype, that
        # row's loss is recomputed from its logits.
        p = torch.softmax(zs, 1, out=zs)
        p_target = p.gather(1, tc)
        torch.neg(p_target.log(), out=row_loss[r0:r1])
        tiny = p_target[:, 0] < _TINY[soft]
        if bool(tiny.any()):
            rows = tiny.nonzero()[:, 0]
            zr = torch.mm(hc[rows], w.t()).to(soft)
            row_loss[r0 + rows] = torch.logsumexp(zr, 1, keepdim=True) - zr.gather(1, tc[rows])
        # dlogits / scale = softmax - onehot
        g = p.scatter_add_(1, tc, torch.full_like(p_target, -1.0))
        if g.dtype != f32:
            g = z.copy_(g)
        if want_dh:
            torch.mm(g, w, out=dh[r0:r1])
        if want_dw:
            dw.addmm_(g.t(), h_scaled[r0:r1])
    if want_dh:
        dh.mul_(row_scale)
    total = (row_loss * scale[:, None]).sum(dtype=torch.float64)
    return total.to(soft if soft == torch.float64 else f32), dh, dw


def _check(h, weight, targets, ignore_index, chunk_rows, reduction, softmax_dtype):
    """(h as [N, D] rows, targets as [N]) or a ValueError naming the argument at fault."""
    for name, t in (("h", h), ("weight", weight), ("targets", targets)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if h.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"h: expected float32, bfloat16 or float16, got {h.dtype}")
    if h.dim() < 1 or h.shape[-1] < 1:
        raise ValueError(f"h: expected shape [..., D] with D >= 1, got {list(h.shape)}")
    if weight.dim() != 2 or weight.shape[1] != h.shape[-1] or weight.shape[0] < 1:
        raise ValueError(f"weight: expected shape [vocab, {h.shape[-1]}] (D from h), got {list(weight.shape)}")
    if weight.dtype != h.dtype or weight.device != h.device:
        raise ValueError(f"weight: expected h's dtype and device ({h.dtype}, {h.device}), "
                         f"got {weight.dtype}, {weight.device}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"targets: expected integer token ids, got {targets.dtype}")
    if tuple(targets.shape) != tuple(h.shape[:-1]) or targets.device != h.device:
        raise ValueError(f"targets: expected shape {list(h.shape[:-1])} (h's without D) on {h.device}, "
                         f"got {list(targets.shape)} on {targets.device}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index: expected an integer, got {ignore_index!r}")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows: expected an integer >= 1 (or None: the default), got {chunk_rows!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(REDUCTIONS)}, got {reduction!r}")
    if softmax_dtype not in SOFTMAX_DTYPES:
        raise ValueError(f"softmax_dtype: expected torch.float32 or torch.float64, got {softmax_dtype!r}")
    tgt = targets.reshape(-1).long()
    vocab = weight.shape[0]
    bad = (tgt != ignore_index) & ((tgt < 0) | (tgt >= vocab))
    if bool(bad.any()):
        raise ValueError(f"targets: expected ids in [0, {vocab}) or ignore_index {ignore_index}, "
                         f"got {int(tgt[bad][0])} ({int(bad.sum())} such)")
    return h.reshape(-1, h.shape[-1]), tgt
