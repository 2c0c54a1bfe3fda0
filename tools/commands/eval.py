"""`hola eval`: perplexity / bits per byte of checkpoints on a text split, or accuracy per length
on a recall task (MQAR, passkey), on any backend."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model import tasks
from tools import arguments

NAME = "eval"
HELP = "perplexity and bits per byte on a split, or --task mqar|passkey accuracy per length with a plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders written by `hola train`")
    parser.add_argument("--backend", default="reference", help="hola_dsl backend (default: reference)")
    parser.add_argument("--task", choices=tasks.TASKS, help="recall task instead of perplexity")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="validation")
    parser.add_argument("--corpus", choices=("python-docs", "pydoc-topics"),
                        help="text to score (default: the corpus the checkpoint was trained on)")
    parser.add_argument("--seq-len", type=int, default=256, help="perplexity window in tokens (default 256)")
    parser.add_argument("--max-tokens", type=int, help="score only the split's first N tokens")
    parser.add_argument("--lengths", default="128,256,512,1024,2048",
                        help="comma-separated task lengths (default 128,256,512,1024,2048: 1x to 16x the synthetic training length)")
    parser.add_argument("--samples", type=int, default=64, help="task sequences per length (default 64)")
    parser.add_argument("--plot", help="where to write the accuracy plot (default: <first checkpoint>/<task>.png)")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads, at most the CPUs this process may use (0: torch's default)")


def _trained_on(path: Path) -> dict:
    """What `hola train` recorded about the data of checkpoint ``path`` ({} when nothing)."""
    record = path / "train.json"
    if not record.exists():
        return {}
    try:
        meta = json.loads(record.read_text()).get("meta", {})
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"checkpoint: {record} is not a training record written by `hola train` ({exc})") from None
    return meta if isinstance(meta, dict) else {}


def _perplexity(args, models) -> dict:
    from model import data
    from model.evaluate import perplexity
    from model.tokenizer import load

    results = {}
    print(f"hola eval: backend {args.backend}, windows of {args.seq_len} tokens")
    print(f"{'checkpoint':<28} {'variant':<13} {'params':>9} {'split':<10} {'tokens':>8} {'loss':>7} "
          f"{'ppl':>8} {'bits/byte':>9}")
    for path, model in models:
        corpus = args.corpus or _trained_on(path).get("corpus")
        if corpus is None:
            raise ValueError(f"--corpus: {path} does not record a text corpus (a task model?); give --corpus")
        if not model.config.tokenizer:
            raise ValueError(f"checkpoint: {path} has no tokenizer in its config (a recall-task model); use --task")
        tok = load(model.config.tokenizer)
        tokens = data.token_stream(corpus, args.split, tok)
        r = perplexity(model, tokens, tok.token_bytes, seq_len=args.seq_len, backend=args.backend,
                       max_tokens=args.max_tokens)
        results[str(path)] = dict(r, variant=model.config.variant, corpus=corpus, split=args.split,
                                  backend=args.backend, parameters=model.num_parameters())
        print(f"{str(path)[-28:]:<28} {model.config.variant:<13} {model.num_parameters():>9,} {args.split:<10} "
              f"{r['tokens']:>8} {r['loss']:>7.4f} {r['perplexity']:>8.3f} {r['bits_per_byte']:>9.4f}")
    return results


def _task_lengths(args) -> list[int]:
    """--lengths, each long enough for the task; --samples checked too."""
    arguments.positive(args.samples, "--samples")
    task = tasks.get(args.task)
    lengths = arguments.int_list(args.lengths, "--lengths")
    short = [L for L in lengths if L < task.min_length()]
    if short:
        raise ValueError(f"--lengths: {args.task} needs sequences of >= {task.min_length()} tokens, got {short}")
    return lengths


def _check_task_model(path: Path, model, task: str) -> None:
    """A model can be scored on a recall task when its vocabulary holds the task's token ids
    (a task model trained from the `tiny` preset keeps that preset's larger vocabulary)."""
    if model.config.vocab_size < tasks.VOCAB_SIZE:
        raise ValueError(f"checkpoint: {path} has vocab_size {model.config.vocab_size}; the {task} task's tokens "
                         f"need >= {tasks.VOCAB_SIZE} (a model trained with `hola train --task {task}`)")


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

    arguments.set_threads(args.threads or None)
    backends.resolve(args.backend, "cpu")              # an unknown or unavailable backend, before loading
    lengths = _task_lengths(args) if args.task else None
    models = [(Path(name), HOLALM.load(name).eval()) for name in args.checkpoints]
    json_path = arguments.output_file(args.json, "--json")
    if args.task:
        for path, model in models:
            _check_task_model(path, model, args.task)
        plot = arguments.output_file(args.plot or str(models[0][0] / f"{args.task}.png"), "--plot")
        results = _task(args, models, lengths, plot)
    else:
        results = _perplexity(args, models)
    if json_path:
        json_path.write_text(json.dumps(results, indent=1) + "\n")
    return 0
