"""Tokenizers: what every tokenizer offers (``Tokenizer``), and GPT-2's byte-level BPE, cut to its
first merges so that a CPU-sized model can afford the embedding. A tokenizer of your own (a
HuggingFace ``tokenizers`` JSON file) is model.json_tokenizer's.

The rank table is GPT-2's own (``gpt2.tiktoken``, shipped inside the ``openai-whisper`` package;
install it with ``pip install --no-deps openai-whisper``), run by ``tiktoken`` with no network.
GPT-2's ranks are its merge order, so keeping the ranks below N gives exactly the BPE of GPT-2's
first N - 256 merges: every byte string still encodes (the 256 byte tokens are kept), common
words stay whole, and the embedding shrinks from 50257 rows to N + 1 (the +1 is <|endoftext|>).
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import re
from pathlib import Path

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_FULL_RANKS = 50257 - 1  # GPT-2: 50256 BPE tokens plus <|endoftext|>
EOT = "<|endoftext|>"
GPT2_NAME = re.compile(r"gpt2(?:-(\d+))?")  # "gpt2": the full table; "gpt2-N": its first N ranks
JSON_IDENTITY_PREFIX = "json-sha256:"  # + the SHA-256 of a tokenizers JSON file (model.json_tokenizer)


def gpt2_ranks_path() -> Path:
    """Where openai-whisper keeps GPT-2's rank table (without importing whisper, which needs numba)."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "tokenizer: GPT-2's rank table comes from the openai-whisper package, which is not installed; "
            "run `pip install --no-deps openai-whisper` (scripts/install.sh does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "gpt2.tiktoken"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer: expected GPT-2's rank table at {path}; reinstall openai-whisper")
    return path


class Tokenizer:
    """Text <-> token ids. ``vocab_size`` counts every id, <|endoftext|> (``eot``) included;
    ``name`` identifies the tokenizer exactly (a checkpoint stores it in its config)."""

    name: str
    eot: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        raise NotImplementedError

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (a tokenizer may do them in parallel)."""
        return [self.encode(text) for text in texts]

    def decode(self, ids) -> str:
        """The text of token ids ``ids``."""
        raise NotImplementedError

    @functools.cached_property
    def token_bytes(self) -> list[int]:
        """Length in UTF-8 bytes of every token id (0 for <|endoftext|>), for bits per byte."""
        raise NotImplementedError


class GPT2Tokenizer(Tokenizer):
    """GPT-2's BPE (or its first ranks) run by tiktoken."""

    def __init__(self, name: str, encoding):
        self.name = name
        self._enc = encoding
        self.eot = encoding.eot_token
        self.vocab_size = encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (the literal string <|endoftext|> is encoded as plain text)."""
        return self._enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self._enc.decode(list(ids))

    @functools.cached_property
    def token_bytes(self) -> list[int]:
        return [0 if i == self.eot else len(self._enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)]


def is_gpt2_name(name: str) -> bool:
    """Whether ``name`` names GPT-2's table ("gpt2" or "gpt2-N"), valid N or not."""
    return GPT2_NAME.fullmatch(name) is not None


def _ranks_kept(name: str) -> int:
    """N of a tokenizer name: "gpt2" (all ranks) or "gpt2-N" (the first N ranks, N >= 256)."""
    match = GPT2_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"tokenizer: unknown name {name!r}; expected 'gpt2' or 'gpt2-N' with 256 <= N <= {GPT2_FULL_RANKS}")
    n = int(match.group(1)) if match.group(1) else GPT2_FULL_RANKS
    if not 256 <= n <= GPT2_FULL_RANKS:
        raise ValueError(f"tokenizer: {name!r} keeps {n} ranks; expected 256 <= N <= {GPT2_FULL_RANKS}")
    return n


def vocab_size_of(name: str) -> int:
    """How many token ids GPT-2 tokenizer ``name`` produces (N + 1), without loading it."""
    return _ranks_kept(name) + 1


@functools.lru_cache(maxsize=None)
def load(name: str) -> GPT2Tokenizer:
    """A tokenizer by name: "gpt2" (all 50257 ids) or "gpt2-N" (GPT-2's first N ranks + <|endoftext|>,
    so N + 1 ids; N >= 256)."""
    import tiktoken

    n = _ranks_kept(name)
    ranks = {}
    for line in gpt2_ranks_path().read_text().splitlines():
        if line:
            token, rank = line.split()
            if int(rank) < n:
                ranks[base64.b64decode(token)] = int(rank)
    encoding = tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={EOT: n}, explicit_n_vocab=n + 1)
    return GPT2Tokenizer(name, encoding)
