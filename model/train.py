"""Training on the CPU (or any device, in one process or several under torchrun): AdamW with
warmup and cosine decay, a tqdm progress bar, periodic validation, checkpoints (config.json +
model.safetensors + train.json + the state to resume from) and a loss curve (loss.png) in the
output folder."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from model import distributed, train_state
from model.distributed import Processes
from model.loss import IGNORE_INDEX


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
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name, least in (("steps", 1), ("batch_size", 1), ("seq_len", 1), ("eval_every", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
        for name, positive in (("lr", True), ("grad_clip", True), ("weight_decay", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (positive and value == 0):
                raise ValueError(f"{name}: expected a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {self.min_lr_ratio!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not -2**63 <= self.seed < 2**63:
            raise ValueError(f"seed: expected a 64-bit integer, got {self.seed!r}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def rows_loss(model, inputs: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor], scored: int,
              world: int, backend: Optional[str] = None) -> torch.Tensor:
    """This process's share of a global batch's mean loss. inputs, targets, mask: [b, T], its
    rows; ``scored`` counts the scored positions of the whole global batch. The rows' summed
    loss (the model's fused head + cross entropy: no [b, T, vocab] logits) times world /
    scored: DDP averages the processes' gradients, which then is the gradient of the global
    mean, however the scored positions fall on the processes. ``model`` is the HOLALM or its
    DistributedDataParallel wrapper."""
    loss = model(inputs, backend=backend, targets=scored_targets(targets, mask), reduction="sum")
    return loss * (world / max(scored, 1))


def scored_targets(targets: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``targets`` with model.loss.IGNORE_INDEX where ``mask`` is false (unchanged when None)."""
    return targets if mask is None else targets.masked_fill(~mask.bool(), IGNORE_INDEX)


def scored_positions(targets: torch.Tensor, mask: Optional[torch.Tensor]) -> int:
    """How many positions of a batch the loss scores."""
    return targets.numel() if mask is None else int(mask.sum())


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
          progress: bool = True, processes: Processes = Processes(), settings: Optional[dict] = None,
          resume: Optional[dict] = None, stop_at: Optional[int] = None) -> dict:
    """Train ``model`` in place and write checkpoints to ``out_dir``.

    next_batch(generator) -> the global batch (inputs [B, T], targets [B, T], mask [B, T] or
    None); under torchrun each process trains on its ``processes.rows(B)`` (model.distributed).
    validate(model) -> validation loss (nats/token). Checkpoints (every ``cfg.eval_every`` steps
    and at the end) hold the weights, train.json, loss.png and the state ``resume`` continues
    from (model.train_state, with ``settings`` to compare a resumed run's against); only rank 0
    writes them. ``stop_at`` ends the run early at that step, the schedule still spanning
    ``cfg.steps``. Returns the history {"train": [[step, loss]], "validation": [[step, loss]],
    "seconds": float}.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    history = {"train": [], "validation": [], "seconds": 0.0}
    start = 0
    if resume is not None:
        _restore(model, opt, gen, resume)
        history, start = resume["history"], resume["step"]
    stop = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    stepper = model
    if processes.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        stepper = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    seconds_before, t0 = history["seconds"], time.perf_counter()

    def checkpoint(step: int) -> None:
        if not processes.is_main:
            return
        model.eval()
        val = validate(model)
        model.train()
        history["validation"].append([step, val])
        history["seconds"] = seconds_before + time.perf_counter() - t0
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir)
        record = dict(train_config=dataclasses.asdict(cfg), meta=meta or {}, history=history,
                      parameters=model.num_parameters(), processes=processes.world)
        (out_dir / "train.json").write_text(json.dumps(record, indent=1) + "\n")
        train_state.save(out_dir, dict(step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                                       generator=gen.get_state(), history=history, settings=settings or {}))
        plot_history(history, out_dir / "loss.png", f"{model.config.variant}: {(meta or {}).get('data', '')}")
        bar.set_postfix_str(f"val {val:.4f}")

    model.train()
    bar = tqdm(total=stop, initial=start, desc=f"train {model.config.variant}",
               disable=not (progress and processes.is_main), dynamic_ncols=True)
    for step in range(start, stop):
        if step % cfg.eval_every == 0 and not (resume is not None and step == start):
            checkpoint(step)
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        x, y, mask = next_batch(gen)
        scored = scored_positions(y, mask)
        rows = processes.rows(x.shape[0])
        x, y = x[rows].to(device), y[rows].to(device)
        mask = None if mask is None else mask[rows].to(device)
        loss = rows_loss(stepper, x, y, mask, scored, processes.world, cfg.backend)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        value = distributed.mean(loss.detach(), processes)
        history["train"].append([step, value])
        bar.update(1)
        bar.set_description(f"train {model.config.variant} loss {value:.3f}")
    checkpoint(stop)
    bar.close()
    return history


def _restore(model, opt: torch.optim.Optimizer, gen: torch.Generator, state: dict) -> None:
    """Load a checked train state (model.train_state.load) into the model, optimizer and generator."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
    except Exception as exc:  # a state that passed the checks may still not fit this model
        raise ValueError(f"resume: the saved state does not fit this model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
