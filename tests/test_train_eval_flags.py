"""Every bad `hola train` / `hola eval` flag value is one error line naming the flag, what was
given and what was expected, with exit code 2 and no traceback."""

import pytest
import torch

from model import HOLAConfig, HOLALM
from tools.cli import main

TRAIN = ["train", "--backend", "reference", "--preset", "tiny", "--corpus", "pydoc-topics", "--steps", "1", "--val-tokens", "64",
         "--no-progress"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    config = HOLAConfig(vocab_size=1024, d_model=16, n_layers=1, n_heads=1, head_k_dim=8, head_v_dim=8,
                        cache_capacity=4, cache_block=32, chunk_size=32, tokenizer="gpt2-1023")
    HOLALM(config).save(tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.mark.parametrize("flags, says", [
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--batch-size", "-2"], "--batch-size: expected an integer >= 1, got -2"),
    (["--seq-len", "0"], "--seq-len: expected an integer >= 1, got 0"),
    (["--seq-len", "10000000"], "--seq-len: 10000000 needs 10000001 tokens of training text"),
    (["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["--eval-every", "0"], "--eval-every: expected an integer >= 1, got 0"),
    (["--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
    (["--lr", "-1"], "--lr: expected a finite number > 0, got -1.0"),
    (["--val-tokens", "0"], "--val-tokens: expected an integer >= 1, got 0"),
    (["--threads", "-1"], "--threads: expected 0 (torch's default) to"),
    (["--threads", "100000"], "--threads: expected 0 (torch's default) to"),
    (["--seed", str(2**64)], "--seed: expected a 64-bit integer"),
    (["--stop-at", "0"], "--stop-at: expected an integer >= 1, got 0"),
    (["--vocab-size", "1"], "--vocab-size: expected an integer >= 2, got 1"),
    (["--vocab-size", "200"], "--vocab-size: GPT-2's BPE cut to the model's vocabulary needs 257"),
    (["--backend", "nope"], "--backend: unknown backend 'nope'"),
    (["--task", "passkey", "--seq-len", "5"], "--corpus: only used with --task lm"),
])
def test_train_flags(flags, says, tmp_path, hola_fails):
    hola_fails(TRAIN + flags + ["--out", str(tmp_path / "run")], says)


def test_train_out_and_task_flags(tmp_path, hola_fails):
    (tmp_path / "file").write_text("not a folder")
    hola_fails(TRAIN + ["--out", str(tmp_path / "file")], "--out:", "exists and is not a folder")
    hola_fails(TRAIN + ["--out", str(tmp_path / "file" / "run")], f"--out: {tmp_path / 'file'} exists and is not")
    hola_fails(TRAIN + ["--out", ""], "--out: expected a folder, got an empty string")
    task = ["train", "--backend", "reference", "--task", "passkey", "--preset", "tiny", "--steps", "1", "--no-progress", "--out",
            str(tmp_path / "run")]
    hola_fails(task + ["--seq-len", "5"], "--seq-len: passkey needs at least 20 tokens, got 5")
    hola_fails(task + ["--vocab-size", "300"], "--vocab-size: only used with --task lm")
    if not torch.cuda.is_available():
        hola_fails(TRAIN + ["--device", "cuda", "--out", str(tmp_path / "r")], "--device: 'cuda' asked for")


@pytest.mark.slow
def test_a_tiny_passkey_model_evaluates(tmp_path):
    out = tmp_path / "passkey"
    assert main(["train", "--backend", "reference", "--task", "passkey", "--preset", "tiny", "--steps", "2", "--seq-len", "32",
                 "--out", str(out), "--no-progress"]) == 0
    assert main(["eval", str(out), "--task", "passkey", "--lengths", "32", "--samples", "4"]) == 0


@pytest.mark.parametrize("flags, says", [
    (["--seq-len", "0"], "--seq-len: expected an integer >= 1, got 0"),
    (["--max-tokens", "0"], "--max-tokens: expected an integer >= 1, got 0"),
    (["--samples", "0"], "--samples: expected an integer >= 1, got 0"),
    (["--threads", "-1"], "--threads: expected 0 (torch's default) to"),
    (["--threads", "100000"], "--threads: expected 0 (torch's default) to"),
    (["--backend", "nope"], "--backend: unknown backend 'nope'"),
    (["--json", "/"], "--json: cannot write /"),
    (["--plot", "/no/such/folder/p.png", "--task", "passkey"], "--plot: cannot write /no/such/folder/p.png"),
    (["--task", "passkey", "--lengths", "a,b"], "--lengths: expected comma-separated lengths >= 20 for passkey"),
    (["--task", "passkey", "--lengths", "0"], "--lengths: expected comma-separated lengths"),
    (["--task", "mqar", "--corpus", "pydoc-topics"], "--corpus: only for perplexity"),
    (["--corpus", "/no/such/text"], "--corpus: '/no/such/text' is neither a built-in corpus"),
    (["--tokenizer", "gpt2-511"], "--tokenizer: gpt2-511 is not the tokenizer"),
])
def test_eval_flags(flags, says, checkpoint, hola_fails):
    hola_fails(["eval", str(checkpoint)] + flags, says)


def test_eval_of_what_is_not_a_checkpoint(tmp_path, checkpoint, hola_fails):
    hola_fails(["eval", str(tmp_path / "nothing")], "checkpoint:")
    (checkpoint / "train.json").write_text("[1, 2]")
    hola_fails(["eval", str(checkpoint)], "give --corpus")
