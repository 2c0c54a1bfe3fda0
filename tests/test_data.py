"""Corpora, fixed splits and the tokenizer."""

import pytest
import torch

from model import data
from model.tokenizer import load


def test_splits_partition_the_corpus_and_are_fixed():
    docs = data.documents("pydoc-topics")
    parts = {s: data.split_documents("pydoc-topics", s) for s in data.SPLITS}
    assert all(parts.values())
    names = [n for s in data.SPLITS for n, _ in parts[s]]
    assert sorted(names) == sorted(n for n, _ in docs) and len(set(names)) == len(names)
    # A document's split depends only on its name.
    assert [data.split_of(n) for n, _ in docs] == [data.split_of(n) for n, _ in docs]
    assert data.split_of("library/os.rst.txt") == data.split_of("library/os.rst.txt")


def test_tokenizer_roundtrip_and_bytes():
    tok = load("gpt2-1023")
    assert tok.vocab_size == 1024 and tok.eot == 1023
    _, text = data.split_documents("pydoc-topics", "validation")[0]
    ids = tok.encode(text)
    assert max(ids) < 1023 and tok.decode(ids) == text
    assert sum(tok.token_bytes[i] for i in ids) == len(text.encode("utf-8"))
    # Truncating GPT-2's ranks keeps its first merges: the full table never uses more tokens.
    assert len(load("gpt2").encode(text)) < len(ids)


def test_token_stream_and_windows():
    tok = load("gpt2-1023")
    stream = data.token_stream("pydoc-topics", "validation", tok)
    n_docs = len(data.split_documents("pydoc-topics", "validation"))
    assert stream.dtype == torch.int64 and int((stream == tok.eot).sum()) == n_docs
    w = data.random_windows(stream, 4, 32, torch.Generator().manual_seed(0))
    assert w.shape == (4, 33)
    first = int((stream.unfold(0, 33, 1) == w[0]).all(1).nonzero()[0])
    assert torch.equal(stream[first:first + 33], w[0])
    with pytest.raises(ValueError, match="seq_len"):
        data.random_windows(stream[:10], 1, 32, torch.Generator())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="corpus"):
        data.documents("wikipedia")
    with pytest.raises(ValueError, match="split"):
        data.split_documents("pydoc-topics", "dev")
    with pytest.raises(ValueError, match="tokenizer"):
        load("bert")


@pytest.mark.skipif(not (data.data_dir() / data.DOC_PACKAGE).is_dir(),
                    reason="python3.11-doc not fetched (scripts/fetch_python_docs.sh)")
def test_python_docs_corpus():
    docs = data.documents("python-docs")
    assert len(docs) > 400
    sizes = {s: len(data.split_documents("python-docs", s)) for s in data.SPLITS}
    assert sum(sizes.values()) == len(docs) and min(sizes.values()) > 5
    assert any(name == "library/os.rst.txt" for name, _ in docs)
