"""`hola train`: train a HOLA / GDN / AHN / softmax language model, or a recall-task model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model import presets, tasks
from model.config import VARIANTS

NAME = "train"
HELP = "train a model (language modelling on real text, or MQAR / passkey) with checkpoints and a loss curve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=VARIANTS, default="hola", help="token mixer (default: hola)")
    parser.add_argument("--task", choices=("lm",) + tasks.TASKS, default="lm",
                        help="lm: next-token prediction on --corpus; mqar / passkey: synthetic recall (default: lm)")
    parser.add_argument("--corpus", choices=("python-docs", "pydoc-topics"), default="python-docs",
                        help="text for --task lm (python-docs needs scripts/fetch_python_docs.sh; default: python-docs)")
    parser.add_argument("--preset", choices=list(presets.PRESETS), default=None,
                        help="model and training sizes (default: small for lm, synthetic for mqar/passkey)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="sequences per step")
    parser.add_argument("--seq-len", type=int, help="training length in tokens")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--eval-every", type=int, help="steps between validation + checkpoint")
    parser.add_argument("--val-tokens", type=int, default=32768, help="validation tokens per evaluation (lm; default 32768)")
    parser.add_argument("--backend", default="reference", help="hola_dsl backend for training (needs gradients; default: reference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", required=True, help="checkpoint folder (config.json, model.safetensors, train.json, loss.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from model.config import HOLAConfig
    from model.lm import HOLALM
    from model.train import TrainConfig, masked_loss, train

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = presets.get(args.preset or ("small" if args.task == "lm" else "synthetic"))
    overrides = dict(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                     eval_every=args.eval_every)
    tcfg = TrainConfig(**{**preset["train"], **{k: v for k, v in overrides.items() if v is not None},
                          "seed": args.seed, "backend": args.backend})
    torch.manual_seed(args.seed)
    meta = dict(task=args.task)
    if args.task == "lm":
        from model import data
        from model.tokenizer import load

        tokenizer = load(preset["model"]["tokenizer"])
        preset["model"]["vocab_size"] = tokenizer.vocab_size
        train_tokens = data.token_stream(args.corpus, "train", tokenizer)
        val_tokens = data.token_stream(args.corpus, "validation", tokenizer)[: args.val_tokens + 1]
        meta.update(corpus=args.corpus, data=f"{args.corpus} ({train_tokens.numel()} train tokens)")

        def next_batch(gen):
            w = data.random_windows(train_tokens, tcfg.batch_size, tcfg.seq_len, gen)
            return w[:, :-1], w[:, 1:], None

        def validate(model):
            from model.evaluate import perplexity

            return perplexity(model, val_tokens, seq_len=tcfg.seq_len, backend=tcfg.backend)["loss"]
    else:
        task = tasks.get(args.task)
        preset["model"]["tokenizer"] = ""
        meta.update(data=f"{args.task} at length {tcfg.seq_len}")
        val = task.batch(64, tcfg.seq_len, torch.Generator().manual_seed(10_000 + args.seed))

        def next_batch(gen):
            return task.batch(tcfg.batch_size, tcfg.seq_len, gen)

        @torch.no_grad()
        def validate(model):
            x, y, mask = val
            return masked_loss(model(x, backend=tcfg.backend), y, mask).item()

    config = HOLAConfig(**{**preset["model"], "variant": args.variant})
    model = HOLALM(config)
    print(f"hola train: {args.variant}, {model.num_parameters():,} parameters, task {args.task}, "
          f"{tcfg.steps} steps x {tcfg.batch_size} x {tcfg.seq_len} tokens -> {args.out}")
    history = train(model, tcfg, next_batch, validate, Path(args.out), meta=meta, progress=not args.no_progress)
    first, last = history["validation"][0][1], history["validation"][-1][1]
    print(f"hola train: validation loss {first:.4f} (step {history['validation'][0][0]}) -> {last:.4f} "
          f"(step {tcfg.steps}) in {history['seconds']:.0f}s; wrote {args.out}/loss.png")
    return 0
