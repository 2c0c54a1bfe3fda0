"""`hola eval`: perplexity / bits per byte of checkpoints on a text split, or accuracy per length
on a recall task (MQAR, passkey), on any backend."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from model import tasks
from tools import arguments
from tools.commands.train import add_text_arguments

# Model-layer errors that open with these names are about the flag of the same name.
FLAG_ERRORS = ("corpus", "tokenizer", "backend", "split")

NAME = "eval"
HELP = "perplexity and bits per byte on a split, or --task mqar|passkey accuracy per length with a plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders written by `hola train`")
    parser.add_argument("--backend", default="reference", help="hola_dsl backend (default: reference)")
    parser.add_argument("--task", choices=tasks.TASKS, help="recall task instead of perplexity")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="validation")
    add_text_arguments(parser, corpus_default="the corpus the checkpoint was trained on",
                       tokenizer_default="the checkpoint's own; another one is refused")
    parser.add_argument("--seq-len", type=int, default=256, help="perplexity window in tokens (default 256)")
    parser.add_argument("--max-tokens", type=int, help="score only the split's first N tokens")
    parser.add_argument("--lengths", default="128,256,512,1024,2048",
                        help="comma-separated task lengths (default 128,256,512,1024,2048: 1x to 16x the synthetic training length)")
    parser.add_argument("--samples", type=int, default=64, help="task sequences per length (default 64)")
    parser.add_argument("--plot", help="where to write the accuracy plot (default: <first checkpoint>/<task>.png)")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads, at most the CPUs this process may use (0: torch's default)")


def _trained_on(path: Path) -> Optional[str]:
    """The corpus train.json says the checkpoint in ``path`` was trained on (None if it does not say)."""
    record = path / "train.json"
    if not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text(encoding="utf-8")).get("meta", {})
    except (ValueError, AttributeError, RecursionError):
        raise ValueError(f"checkpoint: {record} is not the JSON record `hola train` writes; give --corpus") from None
    corpus = meta.get("corpus") if isinstance(meta, dict) else None
    return corpus if isinstance(corpus, str) else None


def _check_flags(args: argparse.Namespace) -> Optional[list[int]]:
    """Every flag checked before a checkpoint is loaded; the task lengths when --task is given."""
    arguments.at_least([("--seq-len", args.seq_len, 1), ("--max-tokens", args.max_tokens, 1),
                        ("--samples", args.samples, 1)])
    if not args.task:
        return None
    for flag, value in (("--corpus", args.corpus), ("--tokenizer", args.tokenizer)):
        if value is not None:
            raise ValueError(f"{flag}: only for perplexity, not with --task {args.task}")
    least = tasks.get(args.task).min_length()
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < least:
        raise ValueError(f"--lengths: expected comma-separated lengths >= {least} for {args.task}, "
                         f"got {args.lengths!r}")
    return lengths


def _check_task_model(path: Path, model, task: str) -> None:
    """A model can be scored on a recall task when its vocabulary holds the task's token ids
    (a task model trained from the `tiny` preset by an earlier version kept that preset's larger
    vocabulary)."""
    if model.config.vocab_size < tasks.VOCAB_SIZE:
        raise ValueError(f"checkpoint: {path} has vocab_size {model.config.vocab_size}; the {task} task's tokens "
                         f"need >= {tasks.VOCAB_SIZE} (a model trained with `hola train --task {task}`)")


def _perplexity(args, models) -> dict:
    from model import data
    from model.evaluate import perplexity
    from model.tokenizer_select import of_checkpoint

    results = {}
    print(f"hola eval: backend {args.backend}, windows of {args.seq_len} tokens")
    print(f"{'checkpoint':<28} {'variant':<13} {'params':>9} {'split':<10} {'tokens':>8} {'loss':>7} "
          f"{'ppl':>8} {'bits/byte':>9}")
    for path, model in models:
        tok = of_checkpoint(path, model.config.tokenizer, model.config.vocab_size, args.tokenizer)
        corpus = args.corpus or _trained_on(path)
        if corpus is None:
            raise ValueError(f"--corpus: {path} does not record a text corpus; give --corpus")
        tokens = data.token_stream(corpus, args.split, tok)
        r = perplexity(model, tokens, tok.token_bytes, seq_len=args.seq_len, backend=args.backend,
                       max_tokens=args.max_tokens)
        results[str(path)] = dict(r, variant=model.config.variant, corpus=corpus, split=args.split,
                                  backend=args.backend, parameters=model.num_parameters())
        print(f"{str(path)[-28:]:<28} {model.config.variant:<13} {model.num_parameters():>9,} {args.split:<10} "
              f"{r['tokens']:>8} {r['loss']:>7.4f} {r['perplexity']:>8.3f} {r['bits_per_byte']:>9.4f}")
    return results


def _task(args, models, lengths: list[int], plot: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = tasks.get(args.task)
    results = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    print(f"hola eval --task {args.task}: token accuracy (sequence accuracy), {args.samples} samples per length, "
          f"backend {args.backend}")
    print(f"{'checkpoint':<28} {'variant':<13} " + " ".join(f"{L:>13}" for L in lengths))
    for path, model in models:
        acc = tasks.accuracy(model, task, lengths, samples=args.samples, backend=args.backend)
        results[str(path)] = dict(variant=model.config.variant, backend=args.backend,
                                  accuracy={str(L): dict(token=a, sequence=s) for L, (a, s) in acc.items()})
        print(f"{str(path)[-28:]:<28} {model.config.variant:<13} "
              + " ".join(f"{a:>6.3f} ({s:.2f})" for a, s in acc.values()))
        ax.plot(lengths, [acc[L][0] for L in lengths], "o-", label=f"{model.config.variant} ({path.name})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("token accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{args.task}: accuracy per length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=110)
    plt.close(fig)
    print(f"hola eval: wrote {plot}")
    return results


def run(args: argparse.Namespace) -> int:
    from hola_dsl import backends
    from model.lm import HOLALM

    try:
        lengths = _check_flags(args)
        arguments.set_threads(args.threads)
        backends.resolve(args.backend, "cpu")          # an unknown or unavailable backend, before loading
        json_path = arguments.output_file(args.json, "--json")
        models = [(Path(name), HOLALM.load(name).eval()) for name in args.checkpoints]
        if args.task:
            for path, model in models:
                _check_task_model(path, model, args.task)
            plot = arguments.output_file(args.plot or str(models[0][0] / f"{args.task}.png"), "--plot")
            results = _task(args, models, lengths, plot)
        else:
            results = _perplexity(args, models)
    except ValueError as exc:
        raise arguments.as_flag(exc, FLAG_ERRORS) from None
    if json_path:
        json_path.write_text(json.dumps(results, indent=1) + "\n")
    return 0
