"""A tokenizer of your own: a HuggingFace ``tokenizers`` JSON file (``Tokenizer.save``), run offline.

Its identity is a SHA-256 of the file's bytes, so a checkpoint can tell whether it is being fed
the tokenizer it was trained with. The end-of-text token is the first of EOT_TOKENS that the
vocabulary has. Bits per byte need each token's length in bytes: exact for byte-level BPE (the
GPT-2 style that ``tokenizers`` trains with the ByteLevel pre-tokenizer and decoder), otherwise
the UTF-8 length of the token decoded alone.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import tokenizers

from model.tokenizer import JSON_IDENTITY_PREFIX as IDENTITY_PREFIX, Tokenizer

EOT_TOKENS = ("<|endoftext|>", "</s>", "<eos>")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class JSONTokenizer(Tokenizer):
    """A ``tokenizers`` JSON file, checked on load: it parses, has an end-of-text token, has ids."""

    def __init__(self, path: Path):
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"tokenizer: cannot read {path}: {exc.strerror or exc}") from None
        try:
            self._tok = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a bare Exception for a malformed file; a Rust panic is a BaseException
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise ValueError(f"tokenizer: {path} is not a tokenizers JSON file ({reason})") from None
        vocab = self._tok.get_vocab(with_added_tokens=True)
        if not vocab:
            raise ValueError(f"tokenizer: {path} has an empty vocabulary")
        eot = next((vocab[t] for t in EOT_TOKENS if t in vocab), None)
        if eot is None:
            raise ValueError(f"tokenizer: {path} has none of the end-of-text tokens {list(EOT_TOKENS)}; train it "
                             f"with special_tokens=['<|endoftext|>']")
        self.source = raw
        self.name = IDENTITY_PREFIX + hashlib.sha256(raw).hexdigest()
        self.eot = eot
        self.vocab_size = max(vocab.values()) + 1

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    @functools.cached_property
    def token_bytes(self) -> list[int]:
        # Added tokens are matched as plain text, not through the byte-level alphabet.
        added = self._tok.get_added_tokens_decoder()
        alphabet = _byte_level_alphabet() if isinstance(self._tok.decoder, tokenizers.decoders.ByteLevel) else {}
        sizes = []
        for i in range(self.vocab_size):
            token = self._tok.id_to_token(i)
            if token is None or (i in added and added[i].special):
                sizes.append(0)
            elif i in added:
                sizes.append(len(added[i].content.encode("utf-8")))
            elif alphabet and all(c in alphabet for c in token):
                sizes.append(len(token))  # one stand-in character per byte
            else:
                sizes.append(len(self.decode([i]).encode("utf-8")))
        return sizes
