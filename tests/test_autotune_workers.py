"""Several `hola tune` processes tuning one study through Optuna's shared storage: a journal file,
and a throwaway local PostgreSQL cluster (skipped where none can start)."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from autotune import db
from schedules.key import TuningKey
from schedules.targets import cpu_machine
from autotune.tuner import make_storage

REPO = Path(__file__).resolve().parent.parent
SHAPE = "B=1,T=128,H=2,K=16,V=16"
TRIALS = 4


def _two_workers(storage: str, db_path: Path) -> None:
    cmd = [sys.executable, "-m", "tools.cli", "tune", "--kernel", "delta_scan", "--backend", "reference",
           "--shape", SHAPE, "--db", str(db_path), "--storage", storage, "--trials", str(TRIALS), "--force",
           "--rounds", "2", "--measure-seconds", "0.05", "--max-spread", "inf", "--no-progress"]
    # One torch thread per worker: two workers with a thread per core each would only measure
    # each other on a small machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    key = TuningKey.make("delta_scan", "reference", cpu_machine().name, "float32", {"K": 16, "V": 16}, 128)
    trials = optuna.load_study(study_name=key.id, storage=make_storage(storage)).get_trials()
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    assert TRIALS <= len(trials) <= TRIALS + 1          # two workers may each start the last trial
    assert all(t.user_attrs.get("status") == "ok" for t in trials)
    assert {config["chunk_size"] for config in (t.user_attrs["config"] for t in trials)} == {16, 32, 64, 128}
    records = db.Store(db_path).records()
    assert len(records) == 1 and records[0]["id"] == key.id
    assert records[0]["search"]["trials"] >= TRIALS


@pytest.mark.slow
def test_two_workers_share_a_journal_file_study(tmp_path):
    _two_workers(f"journal:{tmp_path / 'study.log'}", tmp_path / "db")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL cluster of its own on a free port, removed afterwards; skip where none can start."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or ([shutil.which("initdb")] if shutil.which("initdb") else [])
    if not bins:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    try:
        import psycopg2  # noqa: F401
        driver = "postgresql+psycopg2"
    except ImportError:
        try:
            import psycopg  # noqa: F401
            driver = "postgresql+psycopg"
        except ImportError:
            pytest.skip("no PostgreSQL driver (psycopg2-binary or psycopg) installed")
    bindir = Path(bins[-1]).parent
    prefix = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="hola-pg-"))
    if prefix:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def pg(*args, timeout=60):
        return subprocess.run(prefix + [str(bindir / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        r = pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        if r.returncode != 0:
            pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
        r = pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "30", "-o",
               f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        if r.returncode != 0:
            log = (root / "server.log").read_text()[-300:] if (root / "server.log").exists() else ""
            pytest.skip(f"PostgreSQL did not start: {r.stderr.strip()[-200:]} {log}")
        started = True
        yield f"{driver}://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url, tmp_path):
    _two_workers(postgres_url, tmp_path / "db")
