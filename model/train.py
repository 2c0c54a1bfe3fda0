"""Training on the CPU (or any device): AdamW with warmup and cosine decay, a tqdm progress bar,
periodic validation, checkpoints (config.json + model.safetensors + train.json) and a loss
curve (loss.png) in the output folder."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F


@dataclass
class TrainConfig:
    """steps of batch_size sequences of seq_len tokens; lr peaks after warmup steps and decays
    (cosine) to lr * min_lr_ratio; validation every eval_every steps (and at the end)."""

    steps: int = 600
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    seed: int = 0
    backend: str = "reference"

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean cross entropy over positions where ``mask`` is true (all when None).
    logits: [B, T, vocab]; targets, mask: [B, T]."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    if mask is None:
        return loss.mean()
    m = mask.reshape(-1).float()
    return (loss * m).sum() / m.sum().clamp(min=1)


def _param_groups(model: torch.nn.Module, weight_decay: float):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=rest, weight_decay=0.0)]


def plot_history(history: dict, path: Path, title: str) -> None:
    """Training loss (smoothed) and validation loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps, losses = zip(*history["train"]) if history["train"] else ((), ())
    if losses:
        smooth, ema = [], losses[0]
        for x in losses:
            ema = 0.9 * ema + 0.1 * x
            smooth.append(ema)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(steps, smooth, color="tab:blue", label="train (EMA 0.9)")
    if history["validation"]:
        vs, vl = zip(*history["validation"])
        ax.plot(vs, vl, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(model, cfg: TrainConfig, next_batch: Callable[[torch.Generator], tuple],
          validate: Callable[[torch.nn.Module], float], out_dir, *, meta: Optional[dict] = None,
          progress: bool = True) -> dict:
    """Train ``model`` in place and write checkpoints to ``out_dir``.

    next_batch(generator) -> (inputs [B, T], targets [B, T], mask [B, T] or None);
    validate(model) -> validation loss (nats/token). Returns the history
    {"train": [(step, loss)], "validation": [(step, loss)], "seconds": float}.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    history = {"train": [], "validation": [], "seconds": 0.0}
    t0 = time.perf_counter()

    def checkpoint(step: int) -> None:
        model.eval()
        val = validate(model)
        model.train()
        history["validation"].append((step, val))
        history["seconds"] = time.perf_counter() - t0
        model.save(out_dir)
        record = dict(train_config=dataclasses.asdict(cfg), meta=meta or {}, history=history,
                      parameters=model.num_parameters())
        (out_dir / "train.json").write_text(json.dumps(record, indent=1) + "\n")
        plot_history(history, out_dir / "loss.png", f"{model.config.variant}: {(meta or {}).get('data', '')}")
        bar.set_postfix_str(f"val {val:.4f}")

    model.train()
    bar = tqdm(range(cfg.steps), desc=f"train {model.config.variant}", disable=not progress, dynamic_ncols=True)
    for step in bar:
        if step % cfg.eval_every == 0:
            checkpoint(step)
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        x, y, mask = next_batch(gen)
        x, y = x.to(device), y.to(device)
        loss = masked_loss(model(x, backend=cfg.backend), y, None if mask is None else mask.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        history["train"].append((step, loss.item()))
        bar.set_description(f"train {model.config.variant} loss {loss.item():.3f}")
    checkpoint(cfg.steps)
    return history
