"""`hola train`: train a HOLA / GDN / AHN / softmax language model, or a recall-task model, in one
process or under torchrun (one process per CPU share or GPU), resumable from its checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path
from typing import Callable

import torch

from model import presets, tasks
from model.config import VARIANTS
from model.corpus import PIECE_CHARS, SUFFIXES
from model.data import CORPORA
from model.distributed import DEVICES
from tools import arguments

NAME = "train"
HELP = "train a model (language modelling on real text, or MQAR / passkey) with checkpoints and a loss curve"
DEFAULT_CORPUS = "python-docs"
DEFAULT_TOKENIZER = "gpt2"
# Model-layer errors that open with these names are about the flag of the same name.
FLAG_ERRORS = ("corpus", "tokenizer", "vocab_size", "device", "resume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Several processes: torchrun --nproc-per-node N -m tools.cli train ... (the same flags); "
                     "--batch-size is the global batch, split evenly over the processes. See the README, "
                     "'Scaling out'.")
    parser.add_argument("--variant", choices=VARIANTS, default="hola", help="token mixer (default: hola)")
    parser.add_argument("--task", choices=("lm",) + tasks.TASKS, default="lm",
                        help="lm: next-token prediction on --corpus; mqar / passkey: synthetic recall (default: lm)")
    add_text_arguments(parser)
    parser.add_argument("--preset", choices=list(presets.PRESETS), default=None,
                        help="model and training sizes (default: small for lm, synthetic for mqar/passkey)")
    parser.add_argument("--vocab-size", type=int,
                        help="the model's vocabulary (embedding rows; default: the preset's); the tokenizer must fit")
    parser.add_argument("--steps", type=int, help="optimizer steps, the length of the schedule (default: the preset's)")
    parser.add_argument("--batch-size", type=int,
                        help="sequences per step over all processes (a multiple of their number)")
    parser.add_argument("--seq-len", type=int, help="training length in tokens")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--eval-every", type=int, help="steps between validation + checkpoint")
    parser.add_argument("--val-tokens", type=int, default=32768, help="validation tokens per evaluation (lm; default 32768)")
    parser.add_argument("--backend", default="auto",
                        help="hola_dsl backend for training (needs gradients; default: auto, per op the first "
                             "differentiable one of AUTO_ORDER here: TileLang where it has the backward, else "
                             "reference)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cpu (processes talk over gloo), or cuda: process i of a machine on its GPU i, over "
                             "nccl (default: cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    parser.add_argument("--out", required=True,
                        help="checkpoint folder (config.json, model.safetensors, train.json, loss.png, train_state.pt)")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue the run whose checkpoint is in DIR (same flags); its loss curve goes on "
                             "exactly as if it had not stopped")
    parser.add_argument("--stop-at", type=int, metavar="STEP",
                        help="stop after STEP steps and checkpoint, the schedule still spanning --steps "
                             "(for jobs with a time limit; continue with --resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_text_arguments(parser: argparse.ArgumentParser, *, corpus_default: str = DEFAULT_CORPUS,
                       tokenizer_default: str = DEFAULT_TOKENIZER) -> None:
    """--corpus and --tokenizer, shared by `hola train` and `hola eval` (whose defaults differ)."""
    parser.add_argument(
        "--corpus", metavar="NAME_OR_PATH",
        help=f"text for --task lm: {' or '.join(CORPORA)} (python-docs needs scripts/fetch_python_docs.sh), "
             f"or your own: a folder of {'/'.join(SUFFIXES)} files (each file a document, each .jsonl line a "
             f'document with a "text" field) or one file (a .jsonl, or text cut into pieces of at most '
             f"{PIECE_CHARS} characters at line ends, each piece a document); a document's split is fixed by a hash "
             f"of its name (90/5/5) (default: {corpus_default})")
    parser.add_argument(
        "--tokenizer", metavar="NAME_OR_PATH",
        help="gpt2 (GPT-2's BPE cut to the model's vocabulary), gpt2-N, or a HuggingFace tokenizers JSON file "
             f"with an <|endoftext|> token (default: {tokenizer_default})")


def _check_flags(args: argparse.Namespace) -> None:
    arguments.at_least([("--val-tokens", args.val_tokens, 1), ("--stop-at", args.stop_at, 1), ("--vocab-size", args.vocab_size, 2)])
    if not args.out.strip():
        raise ValueError("--out: expected a folder, got an empty string")
    out = Path(args.out)
    # Checked on every process (only rank 0 makes the folder): the nearest existing part must be a folder.
    nearest = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor or "."))
    if not nearest.is_dir():
        raise ValueError(f"--out: {nearest} exists and is not a folder; expected a folder (made if missing)")
    if args.task != "lm":
        for flag, value in (("--corpus", args.corpus), ("--tokenizer", args.tokenizer), ("--vocab-size", args.vocab_size)):
            if value is not None:
                raise ValueError(f"{flag}: only used with --task lm, got --task {args.task}")


@dataclasses.dataclass
class _Data:
    """What the training loop needs from the task: batches, a validation loss, and what to record."""

    next_batch: Callable
    validate: Callable
    meta: dict            # train.json's record of the data (hola eval reads "corpus")
    identity: dict        # what a resumed run must see unchanged
    tokenizer: object = None


def run(args: argparse.Namespace) -> int:
    from model import distributed
    from model.train import TrainConfig

    try:
        _check_flags(args)
        arguments.set_threads(args.threads)
        processes = distributed.start(args.device)
        try:
            code = _run(args, processes)
        except BaseException:
            distributed.stop(processes, failed=True)
            raise
        distributed.stop(processes)
        return code
    except ValueError as exc:
        raise arguments.as_flag(exc, [f.name for f in dataclasses.fields(TrainConfig)] + list(FLAG_ERRORS)) from None


def _run(args: argparse.Namespace, processes) -> int:
    from hola_dsl import backends
    from model import train_state
    from model.config import HOLAConfig
    from model.lm import HOLALM
    from model.train import TrainConfig, train

    say = print if processes.is_main else (lambda *a, **k: None)
    preset = presets.get(args.preset or ("small" if args.task == "lm" else "synthetic"))
    overrides = dict(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                     eval_every=args.eval_every)
    tcfg = TrainConfig(**{**preset["train"], **{k: v for k, v in overrides.items() if v is not None},
                          "seed": args.seed, "backend": args.backend})
    if tcfg.batch_size % processes.world:
        raise ValueError(f"--batch-size: {tcfg.batch_size} sequences do not split evenly over {processes.world} "
                         f"processes; give a multiple of {processes.world}")
    backends.resolve(tcfg.backend, torch.device(processes.device).type, grad_of="the model's weights")
    if args.vocab_size is not None:
        preset["model"]["vocab_size"] = args.vocab_size
    torch.manual_seed(args.seed)
    if args.task == "lm":
        data = _lm_data(args, tcfg, preset["model"])
    else:
        data = _task_data(args, tcfg, preset["model"], processes.device)
    config = HOLAConfig(**{**preset["model"], "variant": args.variant})
    settings = dict(train=dataclasses.asdict(tcfg), model=config.to_dict(), data=data.identity)
    state = None
    if args.resume:
        state = train_state.load(Path(args.resume))
        train_state.check_settings(state["settings"], settings, Path(args.resume))
        if state["step"] >= tcfg.steps:
            raise ValueError(f"--resume: {args.resume} already finished its {tcfg.steps} steps")
        if args.stop_at is not None and args.stop_at <= state["step"]:
            raise ValueError(f"--stop-at: {args.stop_at} is not after the checkpoint's step {state['step']}")
    model = HOLALM(config).to(processes.device)
    if processes.is_main:
        _prepare_out(Path(args.out), data.tokenizer)
    split = f" ({processes.world} processes x {tcfg.batch_size // processes.world})" if processes.world > 1 else ""
    say(f"hola train: {args.variant}, {model.num_parameters():,} parameters, task {args.task}, "
        f"{tcfg.steps} steps x {tcfg.batch_size}{split} x {tcfg.seq_len} tokens -> {args.out}")
    if state is not None:
        say(f"hola train: resuming {args.resume} at step {state['step']}")
    history = train(model, tcfg, data.next_batch, data.validate, Path(args.out), meta=data.meta,
                    progress=not args.no_progress, processes=processes, settings=settings, resume=state,
                    stop_at=args.stop_at)
    if not processes.is_main:
        return 0  # rank 0 holds the validation history
    (s0, first), (s1, last) = history["validation"][0], history["validation"][-1]
    print(f"hola train: validation loss {first:.4f} (step {s0}) -> {last:.4f} (step {s1}) in "
          f"{history['seconds']:.0f}s; wrote {args.out}/loss.png")
    if s1 < tcfg.steps:
        print(f"hola train: stopped at step {s1} of {tcfg.steps}; continue with --resume {args.out}")
    return 0


def _lm_data(args: argparse.Namespace, tcfg, model_fields: dict) -> _Data:
    """Windows of the corpus's train split, and the loss on its validation split's first tokens.
    Sets the model's tokenizer in ``model_fields``."""
    from model import data
    from model.evaluate import perplexity
    from model.tokenizer_select import resolve

    corpus = args.corpus or DEFAULT_CORPUS
    corpus = corpus if corpus in CORPORA else str(Path(corpus).resolve())
    tokenizer = resolve(args.tokenizer or DEFAULT_TOKENIZER, model_fields["vocab_size"])
    model_fields["tokenizer"] = tokenizer.name
    train_tokens = data.token_stream(corpus, "train", tokenizer)
    val_tokens = data.token_stream(corpus, "validation", tokenizer)[: args.val_tokens + 1]
    if train_tokens.numel() < tcfg.seq_len + 1:
        raise ValueError(f"--seq-len: {tcfg.seq_len} needs {tcfg.seq_len + 1} tokens of training text, but the "
                         f"train split of {corpus} has {train_tokens.numel()}")
    if val_tokens.numel() < 2:
        raise ValueError(f"corpus: the validation split of {corpus} has fewer than 2 tokens")

    def next_batch(gen):
        w = data.random_windows(train_tokens, tcfg.batch_size, tcfg.seq_len, gen)
        return w[:, :-1], w[:, 1:], None

    def validate(model):
        return perplexity(model, val_tokens, seq_len=tcfg.seq_len, backend=tcfg.backend)["loss"]

    return _Data(next_batch, validate,
                 meta=dict(task="lm", corpus=corpus, data=f"{Path(corpus).name} ({train_tokens.numel()} train tokens)"),
                 identity=dict(task="lm", train_tokens=hashlib.sha256(train_tokens.numpy().tobytes()).hexdigest()),
                 tokenizer=tokenizer)


def _task_data(args: argparse.Namespace, tcfg, model_fields: dict, device: str) -> _Data:
    """Fresh recall-task batches, and the loss on a fixed validation batch of 64."""
    from model.train import rows_loss, scored_positions

    task = tasks.get(args.task)
    if tcfg.seq_len < task.min_length():
        raise ValueError(f"--seq-len: {args.task} needs at least {task.min_length()} tokens, got {tcfg.seq_len}")
    model_fields["vocab_size"] = tasks.VOCAB_SIZE  # what `hola eval --task` expects
    x, y, mask = (t.to(device) for t in task.batch(64, tcfg.seq_len, torch.Generator().manual_seed(10_000 + args.seed)))

    def next_batch(gen):
        return task.batch(tcfg.batch_size, tcfg.seq_len, gen)

    @torch.no_grad()
    def validate(model):
        return rows_loss(model, x, y, mask, scored_positions(y, mask), 1, tcfg.backend).item()

    return _Data(next_batch, validate, meta=dict(task=args.task, data=f"{args.task} at length {tcfg.seq_len}"),
                 identity=dict(task=args.task))


def _prepare_out(out: Path, tokenizer) -> None:
    """Make the checkpoint folder and keep the tokenizer there, so the checkpoint evaluates anywhere."""
    from model.tokenizer_select import save_with_checkpoint

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out: cannot make the folder {out}: {exc.strerror or exc}") from None
    if tokenizer is not None:
        save_with_checkpoint(tokenizer, out)
