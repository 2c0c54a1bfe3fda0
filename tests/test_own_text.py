"""Your own text and tokenizer: a corpus folder or file trains and evaluates, a tokenizers JSON
file round-trips, and every bad input is one line naming the flag."""

import json
import os
from pathlib import Path

import pytest

from model import corpus, data
from model.json_tokenizer import JSONTokenizer
from tools.cli import main

TOPICS = sorted(__import__("pydoc_data.topics", fromlist=["topics"]).topics.items())


def write_corpus(root: Path) -> Path:
    """A folder of a few small files in every accepted format, plus files the reader must skip."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(TOPICS[0][1])
    (root / "b.md").write_text("# Notes\n\n" + TOPICS[1][1])
    (root / "notes").mkdir()
    (root / "notes" / "c.rst").write_text(TOPICS[2][1])
    with open(root / "d.jsonl", "w") as f:
        for name, text in TOPICS[3:43]:
            f.write(json.dumps({"text": text[:1500], "title": name}) + "\n")
        f.write("\n")  # blank lines are not documents
    (root / ".hidden.txt").write_text("never read")
    (root / "skip.py").write_text("print('not a corpus file')")
    return root


def train_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """A tiny byte-level BPE trained offline with the tokenizers package, as the README shows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text for _, text in TOPICS], trainer)
    tok.save(str(path))
    return path


def test_folder_documents_names_and_splits(tmp_path):
    root = write_corpus(tmp_path / "text")
    docs = dict(data.documents(str(root)))
    assert {"a.txt", "b.md", "notes/c.rst", "d.jsonl:1", "d.jsonl:40"} <= set(docs)
    assert not any(n.startswith(".hidden") or n.endswith(".py") for n in docs) and len(docs) == 43
    assert docs["d.jsonl:2"] == TOPICS[4][1][:1500]
    for split in data.SPLITS:
        assert data.split_documents(str(root), split)


def test_single_file_is_cut_into_pieces_at_line_ends(tmp_path):
    text = "".join(t for _, t in TOPICS[:20])
    (tmp_path / "book").write_text(text)
    docs = corpus.read_documents(tmp_path / "book")
    assert "".join(t for _, t in docs) == text
    assert all(len(t) <= corpus.PIECE_CHARS for _, t in docs) and len(docs) > len(text) // corpus.PIECE_CHARS
    assert all(t.endswith("\n") for _, t in docs[:-1])
    assert [n for n, _ in docs] == sorted(n for n, _ in docs) and docs[0][0] == "book#000000"


@pytest.mark.slow
def test_corpus_folder_trains_and_evaluates(tmp_path, capsys):
    root = write_corpus(tmp_path / "text")
    out = tmp_path / "run"
    assert main(["train", "--backend", "reference", "--preset", "tiny", "--corpus", str(root), "--steps", "4", "--eval-every", "4",
                 "--seq-len", "32", "--val-tokens", "256", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "train.json").read_text())["meta"]
    assert meta["corpus"] == str(root.resolve())
    capsys.readouterr()
    # The corpus defaults to the one recorded at training time.
    assert main(["eval", str(out), "--split", "test", "--seq-len", "32"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert row[3] == "test" and float(row[-3]) > 0 and 0 < float(row[-1]) < 16


def test_json_tokenizer_round_trips(tmp_path):
    path = train_tokenizer(tmp_path / "tok.json")
    tok = JSONTokenizer(path)
    assert tok.vocab_size == 400 and tok.decode([tok.eot]) == "<|endoftext|>"
    text = TOPICS[7][1] + " héllo wörld — 😀"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and max(ids) < tok.vocab_size
    assert sum(tok.token_bytes[i] for i in ids) == len(text.encode("utf-8"))
    assert tok.encode_many([text, "x"]) == [ids, tok.encode("x")]
    assert JSONTokenizer(path).name == tok.name and tok.name.startswith("json-sha256:")
    path.write_text(path.read_text().replace('"<|endoftext|>"', '"<|endoftext|>" ', 1))
    assert JSONTokenizer(path).name != tok.name  # the identity is the file's bytes


@pytest.mark.slow
def test_train_and_eval_with_a_json_tokenizer(tmp_path, capsys, hola_fails):
    root = write_corpus(tmp_path / "text")
    path = train_tokenizer(tmp_path / "tok.json")
    out = tmp_path / "run"
    assert main(["train", "--backend", "reference", "--preset", "tiny", "--corpus", str(root), "--tokenizer", str(path), "--steps", "2",
                 "--eval-every", "2", "--seq-len", "32", "--val-tokens", "128", "--out", str(out),
                 "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["tokenizer"] == JSONTokenizer(path).name and config["vocab_size"] == 1024
    assert (out / "tokenizer.json").read_bytes() == path.read_bytes()
    capsys.readouterr()
    assert main(["eval", str(out), "--max-tokens", "200", "--seq-len", "32"]) == 0
    assert main(["eval", str(out), "--max-tokens", "200", "--seq-len", "32", "--tokenizer", str(path)]) == 0
    # Evaluated with another tokenizer, or with its copy gone or changed: refused, naming both.
    err = hola_fails(["eval", str(out), "--tokenizer", "gpt2"], "error: --tokenizer")
    assert "gpt2-1023" in err and config["tokenizer"] in err
    other = train_tokenizer(tmp_path / "other.json", vocab_size=300)
    hola_fails(["eval", str(out), "--tokenizer", str(other)], "error: --tokenizer")
    (out / "tokenizer.json").write_bytes(other.read_bytes())
    hola_fails(["eval", str(out)], "error: checkpoint")
    (out / "tokenizer.json").unlink()
    hola_fails(["eval", str(out)], "error: checkpoint")


def test_bad_text_inputs_are_one_line_naming_the_file(tmp_path, hola_fails):
    base = ["--preset", "tiny", "--steps", "1", "--out", str(tmp_path / "run"), "--no-progress"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "code.py").write_text("x = 1")
    assert "has no .txt" in hola_fails(["train", "--corpus", str(empty)] + base, "error: --corpus")

    latin1 = write_corpus(tmp_path / "latin1")
    (latin1 / "notes" / "old.txt").write_bytes("caf\xe9".encode("latin-1"))
    err = hola_fails(["train", "--corpus", str(latin1)] + base, "error: --corpus")
    assert "old.txt is not UTF-8" in err and "0xe9" in err

    broken = write_corpus(tmp_path / "broken")
    os.symlink(tmp_path / "nowhere.txt", broken / "gone.txt")
    assert "cannot read" in hola_fails(["train", "--corpus", str(broken)] + base, "error: --corpus")

    for bad in ('{"title": 1}', "[1, 2]", "{not json", "[" * 100000 + "]" * 100000, '{"text": 5}'):
        lines = write_corpus(tmp_path / f"jsonl{len(list(tmp_path.iterdir()))}")
        (lines / "e.jsonl").write_text('{"text": "fine"}\n' + bad + "\n")
        assert "e.jsonl line 2" in hola_fails(["train", "--corpus", str(lines)] + base, "error: --corpus")

    tiny = tmp_path / "one.txt"
    tiny.write_text("too short to fall in every split\n")
    assert "falls in the" in hola_fails(["train", "--corpus", str(tiny)] + base, "error: --corpus")
    hola_fails(["train", "--corpus", str(tmp_path / "missing")] + base, "error: --corpus")


def test_bad_tokenizers_are_one_line(tmp_path, hola_fails):
    base = ["train", "--backend", "reference", "--preset", "tiny", "--corpus", "pydoc-topics", "--steps", "1", "--out", str(tmp_path / "run"),
            "--no-progress"]
    big = train_tokenizer(tmp_path / "big.json", vocab_size=1200)
    err = hola_fails(base + ["--tokenizer", str(big)], "error: --tokenizer")
    assert "1200 ids, more than the model's vocabulary of 1024" in err
    hola_fails(base + ["--tokenizer", str(big), "--vocab-size", "1000"], "error: --tokenizer")
    (tmp_path / "junk.json").write_text('{"not": "a tokenizer"}')
    hola_fails(base + ["--tokenizer", str(tmp_path / "junk.json")], "error: --tokenizer", "not a tokenizers JSON file")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
    hola_fails(base + ["--tokenizer", str(tmp_path / "bin.json")], "error: --tokenizer")
    hola_fails(base + ["--tokenizer", str(tmp_path / "missing.json")], "error: --tokenizer")
    no_eot = tmp_path / "no-eot.json"
    no_eot.write_text(big.read_text().replace("<|endoftext|>", "<|pad|>"))
    assert "end-of-text" in hola_fails(base + ["--tokenizer", str(no_eot)], "error: --tokenizer")
    hola_fails(base + ["--vocab-size", "100"], "error: --vocab-size")
