"""Which tokenizer a model uses: a ``--tokenizer`` value resolved against the model's vocabulary,
and the tokenizer kept with a checkpoint.

A checkpoint's config names its tokenizer by identity (``Tokenizer.name``): "gpt2-N" for GPT-2's
first N ranks, "json-sha256:<hash>" for a JSON file, whose copy sits beside the weights as
tokenizer.json so that the checkpoint evaluates anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from model.json_tokenizer import IDENTITY_PREFIX, JSONTokenizer
from model.tokenizer import GPT2_FULL_RANKS, Tokenizer, is_gpt2_name, load

CHECKPOINT_FILE = "tokenizer.json"


def resolve(spec: str, vocab_size: int) -> Tokenizer:
    """The tokenizer ``spec`` names for a model of ``vocab_size`` ids: "gpt2" (GPT-2 cut to the
    model's vocabulary), "gpt2-N", or the path of a ``tokenizers`` JSON file. Raises ValueError
    when it does not fit the model."""
    if spec == "gpt2":
        if not 257 <= vocab_size <= GPT2_FULL_RANKS + 1:
            raise ValueError(f"vocab_size: GPT-2's BPE cut to the model's vocabulary needs 257 to "
                             f"{GPT2_FULL_RANKS + 1} ids, got {vocab_size}")
        spec = f"gpt2-{vocab_size - 1}"
    if is_gpt2_name(spec):
        tokenizer: Tokenizer = load(spec)
    elif Path(spec).is_file():
        tokenizer = JSONTokenizer(Path(spec))
    else:
        raise ValueError(f"tokenizer: {spec!r} is neither 'gpt2', 'gpt2-N' nor an existing tokenizers JSON file")
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"tokenizer: {spec} has {tokenizer.vocab_size} ids, more than the model's vocabulary of "
                         f"{vocab_size}; use a smaller tokenizer or a larger --vocab-size")
    return tokenizer


def save_with_checkpoint(tokenizer: Tokenizer, directory: Path) -> None:
    """Keep a JSON tokenizer's file beside a checkpoint (GPT-2's table needs no copy)."""
    if isinstance(tokenizer, JSONTokenizer):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / CHECKPOINT_FILE).write_bytes(tokenizer.source)


def of_checkpoint(directory: Path, identity: str, vocab_size: int, spec: Optional[str] = None) -> Tokenizer:
    """The tokenizer of the checkpoint in ``directory``, whose config names tokenizer ``identity``
    and ``vocab_size`` ids: the copy kept there, or ``spec`` (a ``--tokenizer`` value) when given,
    refused unless it is the very tokenizer the model was trained with."""
    if not identity:
        raise ValueError(f"checkpoint: {directory} has no tokenizer in its config (a recall-task model); use --task")
    if spec is not None:
        tokenizer = resolve(spec, vocab_size)
        if tokenizer.name != identity:
            given = spec if spec == tokenizer.name else f"{spec} ({tokenizer.name})"
            raise ValueError(f"tokenizer: {given} is not the tokenizer {directory} was trained with ({identity})")
        return tokenizer
    if identity.startswith(IDENTITY_PREFIX):
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            raise ValueError(f"checkpoint: {path} is missing; the model was trained with a tokenizers JSON file "
                             f"({identity}); give that file with --tokenizer")
        tokenizer: Tokenizer = JSONTokenizer(path)
        if tokenizer.name != identity:
            raise ValueError(f"checkpoint: {path} is {tokenizer.name}, not the {identity} the model was trained with")
    elif is_gpt2_name(identity):
        tokenizer = load(identity)
    else:
        raise ValueError(f"checkpoint: {directory}'s config names the tokenizer {identity!r}; expected gpt2-N or "
                         f"{IDENTITY_PREFIX}<hash>")
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"checkpoint: {directory}'s tokenizer {identity} has {tokenizer.vocab_size} ids, more than "
                         f"its model's vocabulary of {vocab_size}")
    return tokenizer
