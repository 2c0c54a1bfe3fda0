"""`hola train` over several processes (torchrun, gloo on the CPU) and resumed from a checkpoint:
the loss curve is the one a single uninterrupted process draws."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import train_state
from tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
# A small fixed run: tiny preset, global batch 8, 20 steps, checkpoints every 10.
RUN = ["train", "--backend", "reference", "--preset", "tiny", "--corpus", "pydoc-topics", "--steps", "20", "--batch-size", "8",
       "--seq-len", "32", "--eval-every", "10", "--val-tokens", "128", "--seed", "3", "--no-progress"]


def curve(out: Path) -> list:
    return json.loads((out / "train.json").read_text())["history"]["train"]


def torchrun(args: list, processes: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
           "-m", "tools.cli"] + args
    for attempt in range(2):
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        # On a loaded shared machine torchrun's own rendezvous store can time out before any
        # process of ours starts; that says nothing about hola, so it gets one more try.
        if "RendezvousConnectionError" not in done.stderr:
            break
    return done


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(RUN + ["--out", str(out), "--threads", "1"]) == 0
    return out


@pytest.mark.slow
def test_resume_continues_the_curve_exactly(one_process, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(RUN + ["--out", str(out), "--threads", "1", "--stop-at", "10"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert [s for s, _ in curve(out)] == list(range(10))
    assert main(RUN + ["--out", str(out), "--threads", "1", "--resume", str(out)]) == 0
    assert curve(out) == curve(one_process)  # bit for bit: weights, Adam moments, schedule, data position
    history = json.loads((out / "train.json").read_text())["history"]
    assert [s for s, _ in history["validation"]] == [0, 10, 20]


def test_resume_refuses_what_would_break_the_curve(one_process, tmp_path, hola_fails):
    fails = hola_fails  # noqa: the name reads better in the many lines below
    again = ["--out", str(tmp_path / "again"), "--resume", str(one_process)]
    fails(RUN + again, "--resume", "already finished its 20 steps")
    fails(RUN + ["--steps", "40"] + again, "--resume", "train.steps = 20", "gives 40")
    fails(RUN + ["--lr", "0.01"] + again, "train.lr")
    fails(RUN + ["--variant", "gdn"] + again, "model.variant")
    elsewhere = ["--out", str(tmp_path / "x"), "--resume"]
    fails(RUN + elsewhere + [str(tmp_path)], "--resume", "train_state.pt does not exist")
    for junk in (b"not a pickle", b""):
        bad = tmp_path / f"bad{len(junk)}"
        bad.mkdir()
        (bad / train_state.STATE_FILE).write_bytes(junk)
        fails(RUN + elsewhere + [str(bad)], "--resume", "not a training state")
    saved = torch.load(one_process / train_state.STATE_FILE, weights_only=True)
    odd = tmp_path / "odd"
    odd.mkdir()
    torch.save(dict(saved, history={"train": [[0, float("nan")]], "validation": [], "seconds": 0.0}),
               odd / train_state.STATE_FILE)
    fails(RUN + elsewhere + [str(odd)], "--resume", "history.train")
    torch.save(dict(saved, step=5, model={"embed.weight": torch.zeros(3)}), odd / train_state.STATE_FILE)
    fails(RUN + elsewhere + [str(odd)], "--resume", "does not fit this model")


@pytest.mark.slow
def test_two_processes_match_one_process(one_process, tmp_path):
    out = tmp_path / "run"
    done = torchrun(RUN + ["--out", str(out)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "2 processes x 4" in done.stdout
    one, two = curve(one_process), curve(out)
    assert [s for s, _ in two] == list(range(20))
    worst = max(abs(a - b) for (_, a), (_, b) in zip(one, two))
    print(f"1 vs 2 processes: step 19 loss {one[-1][1]:.7f} vs {two[-1][1]:.7f}, worst gap {worst:.2e}")
    assert worst < 1e-5, worst


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(one_process, tmp_path):
    out = tmp_path / "run"
    done = torchrun(RUN + ["--out", str(out), "--stop-at", "10"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert main(RUN + ["--out", str(out), "--threads", "1", "--resume", str(out)]) == 0
    worst = max(abs(a - b) for (_, a), (_, b) in zip(curve(one_process), curve(out)))
    assert len(curve(out)) == 20 and worst < 1e-5, worst


@pytest.mark.slow
def test_a_batch_that_does_not_split_is_one_line(tmp_path):
    done = torchrun(RUN + ["--batch-size", "7", "--out", str(tmp_path / "run")])
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("hola train")]
    assert ours and all("--batch-size: 7 sequences do not split evenly over 2 processes" in line for line in ours)
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr
