"""A short training run through `hola train` lowers the validation loss, and `hola eval`
reads the checkpoint back (perplexity, and a recall task with its plot)."""

import json

import pytest
import torch

from model import HOLAConfig, HOLALM, tasks
from tools.cli import main


@pytest.mark.slow
def test_short_training_lowers_validation_loss(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--backend", "reference", "--variant", "hola", "--preset", "tiny", "--corpus", "pydoc-topics", "--steps", "30",
               "--eval-every", "30", "--val-tokens", "2048", "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("config.json", "model.safetensors", "train.json", "loss.png"):
        assert (out / name).stat().st_size > 0
    history = json.loads((out / "train.json").read_text())["history"]
    (s0, before), (s1, after) = history["validation"][0], history["validation"][-1]
    assert (s0, s1) == (0, 30)
    assert after < before - 0.5, (before, after)

    capsys.readouterr()
    assert main(["eval", str(out), "--split", "validation", "--max-tokens", "2048", "--seq-len", "64"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1].split()
    loss, ppl, bpb = float(line[-3]), float(line[-2]), float(line[-1])
    assert abs(loss - after) < 1e-3 and ppl > 1 and 0 < bpb < 8


def test_task_eval_prints_accuracy_per_length_and_plots(tmp_path, capsys):
    torch.manual_seed(0)
    config = HOLAConfig(vocab_size=tasks.VOCAB_SIZE, d_model=16, n_layers=1, n_heads=1, head_k_dim=8,
                        head_v_dim=8, cache_capacity=4, cache_block=64, chunk_size=64)
    HOLALM(config).save(tmp_path / "m")
    rc = main(["eval", str(tmp_path / "m"), "--task", "passkey", "--lengths", "64,128", "--samples", "4",
               "--json", str(tmp_path / "r.json")])
    assert rc == 0
    assert (tmp_path / "m" / "passkey.png").stat().st_size > 0
    acc = json.loads((tmp_path / "r.json").read_text())[str(tmp_path / "m")]["accuracy"]
    assert set(acc) == {"64", "128"} and all(0 <= a["token"] <= 1 for a in acc.values())
    assert "64" in capsys.readouterr().out


def test_tasks_score_only_the_answers():
    gen = torch.Generator().manual_seed(0)
    x, y, mask = tasks.MQAR(n_pairs=8).batch(3, 64, gen)
    assert x.shape == y.shape == mask.shape == (3, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert (mask.sum(1) == 8).all()
    assert ((y[mask] >= tasks.VALUES.start) & (y[mask] < tasks.VALUES.stop)).all()
    # Every asked key was given with the same value before.
    for b in range(3):
        pairs = dict(zip(x[b, 0:16:2].tolist(), x[b, 1:16:2].tolist()))
        for p in mask[b].nonzero().flatten().tolist():
            assert pairs[int(x[b, p])] == int(y[b, p])
    x, y, mask = tasks.Passkey(n_digits=5).batch(2, 100, gen)
    assert (mask.sum(1) == 5).all()
    for b in range(2):
        at = int((x[b] == tasks.NEEDLE).nonzero()[0])
        assert torch.equal(y[b, mask[b]], x[b, at + 1:at + 6])
