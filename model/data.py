"""Real English text for the language model, offline, with fixed train/validation/test splits.

Corpora:
- "python-docs": the Python 3.11 documentation's reST sources (Debian's python3.11-doc, fetched
  by scripts/fetch_python_docs.sh into $HOLA_DATA_DIR or ~/.cache/hola-dsl/data; 497 files,
  about 11 MB).
- "pydoc-topics": the standard library's ``pydoc_data.topics`` (79 help topics, about 0.46 MB),
  always present; the small corpus for tests.
- any other value is a path to your own text: a file or a folder (model.corpus says how it is
  cut into documents).

A document's split is fixed by a hash of its name (90% train, 5% validation, 5% test), so it
never moves when other documents come or go. A split's token stream is its documents in name
order, each followed by <|endoftext|>.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from model.corpus import read_documents
from model.tokenizer import Tokenizer

CORPORA = ("python-docs", "pydoc-topics")
SPLITS = ("train", "validation", "test")
DOC_PACKAGE = "python3.11-doc"
SOURCES_SUBDIR = Path("usr/share/doc/python3.11/html/_sources")


def data_dir() -> Path:
    """The download cache: $HOLA_DATA_DIR, else ~/.cache/hola-dsl/data."""
    return Path(os.environ.get("HOLA_DATA_DIR", Path.home() / ".cache" / "hola-dsl" / "data"))


def python_docs_dir() -> Path:
    """The folder of python3.11-doc's *.rst.txt sources; raises if it was not fetched."""
    path = data_dir() / DOC_PACKAGE / SOURCES_SUBDIR
    if not path.is_dir():
        raise FileNotFoundError(
            f"corpus: {path} does not exist; run scripts/fetch_python_docs.sh to fetch the Python documentation"
        )
    return path


def split_of(name: str) -> str:
    """The fixed split of a document called ``name``: 90% train, 5% validation, 5% test."""
    bucket = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def documents(corpus: str) -> list[tuple[str, str]]:
    """All (name, text) pairs of ``corpus`` (a built-in name or a path), sorted by name."""
    if corpus == "pydoc-topics":
        from pydoc_data.topics import topics

        return sorted(topics.items())
    if corpus == "python-docs":
        root = python_docs_dir()
        files = sorted(root.rglob("*.rst.txt"))
        return [(str(f.relative_to(root)), f.read_text(encoding="utf-8", errors="replace")) for f in files]
    path = Path(corpus)
    if not path.exists() and not path.is_symlink():
        raise ValueError(f"corpus: {corpus!r} is neither a built-in corpus {list(CORPORA)} nor an existing file "
                         f"or folder")
    return read_documents(path)


def split_documents(corpus: str, split: str) -> list[tuple[str, str]]:
    """The documents of ``corpus`` in ``split``, sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    docs = documents(corpus)
    chosen = [(n, t) for n, t in docs if split_of(n) == split]
    if not chosen:
        raise ValueError(f"corpus: none of the {len(docs)} documents of {corpus} falls in the {split} split "
                         f"(a document's split is fixed by a hash of its name, 90/5/5); give more documents")
    return chosen


def token_stream(corpus: str, split: str, tokenizer: Tokenizer) -> torch.Tensor:
    """The split as one int64 tensor of token ids, every document followed by <|endoftext|>."""
    ids: list[int] = []
    for doc in tokenizer.encode_many([text for _, text in split_documents(corpus, split)]):
        ids.extend(doc)
        ids.append(tokenizer.eot)
    return torch.tensor(ids, dtype=torch.int64)


def random_windows(tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` windows of seq_len + 1 consecutive tokens at random offsets: [batch, seq_len + 1]."""
    if tokens.numel() < seq_len + 1:
        raise ValueError(f"seq_len: {seq_len} + 1 tokens needed, but the stream has only {tokens.numel()}")
    starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=generator)
    return torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
