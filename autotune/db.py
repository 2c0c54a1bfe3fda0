"""The tuning database: JSON records of tuned schedules that users commit, ship and merge.

A store is a folder of per-target, per-kernel files ``<root>/<device>/<isa>/<kernel>.json``
(the layout of the shipped ``configs/`` folder) or a single ``.json`` file. Each file is one
JSON document ``{"format": "hola-tuning-db", "version": 1, "records": [...]}``. A record is a
plain dict; the fields this code reads are

    key         TuningKey.to_json(): kernel, backend, target, dtypes, dims, bucket.T
    id          the key's readable one-line form (informational; ``key`` is the truth)
    config      the schedule dict
    time_s      median measured seconds per call (lower wins on merge)
    provenance  where and when it was measured (host, measured_at, tool, ...)

and every other field (spread, default_time_s, versions, alternatives, failures, and anything a
later version adds) is carried through reads, merges and rewrites untouched.

Writes hold an exclusive ``fcntl.flock`` on the file's folder around read-merge-write and replace
the file atomically (temporary file in the same folder, fsync, ``os.replace``), so concurrent
writers never lose a record and readers never see half a file. A file that is not a valid
database raises ``DatabaseError`` naming it, and is never rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from autotune.key import TuningKey
from autotune.target import Target

FORMAT = "hola-tuning-db"
VERSION = 1
ENV_VAR = "HOLA_TUNING_DB"
# Losers of a merge kept per record (fastest first) so provenance survives without unbounded growth.
MAX_ALTERNATIVES = 32
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"


class DatabaseError(ValueError):
    """A tuning database file that cannot be read; the message names the file."""


def default_root() -> Path:
    """~/.cache/hola-dsl/tuning (honouring XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hola-dsl" / "tuning"


def user_paths(db: Optional[str] = None) -> list[Path]:
    """The user's stores, writable one first: ``db`` (a --db flag) if given, else the entries of
    $HOLA_TUNING_DB (separated by os.pathsep), else ``default_root()``."""
    text = db if db is not None else os.environ.get(ENV_VAR, "")
    if text.strip().lower() == "off":  # "off" disables lookups in ops, not the CLI's database
        text = ""
    paths = [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]
    return paths or [default_root()]


def search_paths(db: Optional[str] = None, shipped: bool = True) -> list[Path]:
    """Where lookups read, in priority order: the user's stores, then the shipped configs/."""
    paths = user_paths(db)
    if shipped and SHIPPED_DIR.is_dir() and SHIPPED_DIR not in paths:
        paths.append(SHIPPED_DIR)
    return paths


# ---------------------------------------------------------------------------------------------
# records

def record_key(record: dict) -> TuningKey:
    return TuningKey.from_json(record["key"])


def record_time(record: dict) -> float:
    return float(record.get("time_s", float("inf")))


def _identity(record: dict) -> str:
    """What makes two measurements the same one (a record imported twice is not two results)."""
    prov = record.get("provenance") or {}
    return json.dumps([record.get("config"), prov.get("host"), prov.get("measured_at")], sort_keys=True, default=str)


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise DatabaseError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in ("key", "config", "time_s"):
        if field not in record:
            raise DatabaseError(f"{where}: missing field {field!r} (a record needs key, config and time_s)")
    try:
        record_key(record)
    except ValueError as exc:
        raise DatabaseError(f"{where}: {exc}") from exc
    if not isinstance(record["config"], dict):
        raise DatabaseError(f"{where}: config: expected a JSON object, got {record['config']!r}")
    if not isinstance(record["time_s"], (int, float)) or isinstance(record["time_s"], bool):
        raise DatabaseError(f"{where}: time_s: expected a number of seconds, got {record['time_s']!r}")


def merge_pair(a: dict, b: dict) -> dict:
    """Two records of one key -> one: the faster measurement wins (``a`` on a tie); the loser and
    both records' earlier alternatives go to the winner's ``alternatives`` with their provenance;
    ``failures`` are united. Unknown fields of the winner are kept."""
    winner, loser = (b, a) if record_time(b) < record_time(a) else (a, b)
    out = dict(winner)
    seen = {_identity(winner)}
    alternatives = []
    for cand in [loser] + list(winner.get("alternatives", [])) + list(loser.get("alternatives", [])):
        ident = _identity(cand)
        if ident in seen:
            continue
        seen.add(ident)
        alternatives.append({k: v for k, v in cand.items() if k not in ("alternatives", "failures", "key", "id")})
    alternatives.sort(key=record_time)
    if alternatives:
        out["alternatives"] = alternatives[:MAX_ALTERNATIVES]
    failures, seen_fail = [], set()
    for f in list(a.get("failures", [])) + list(b.get("failures", [])):
        ident = json.dumps(f.get("config"), sort_keys=True, default=str)
        if ident not in seen_fail:
            seen_fail.add(ident)
            failures.append(f)
    if failures:
        out["failures"] = failures
    return out


def merge_records(*groups: Iterable[dict]) -> list[dict]:
    """All records of ``groups`` with one record per key (``merge_pair``), first-seen key order."""
    merged: dict[str, dict] = {}
    for group in groups:
        for record in group:
            kid = record_key(record).id
            merged[kid] = merge_pair(merged[kid], record) if kid in merged else dict(record)
    for kid, record in merged.items():
        record["id"] = kid
    return list(merged.values())


# ---------------------------------------------------------------------------------------------
# files

def read_file(path: Path) -> tuple[dict, list[dict]]:
    """(document without records, records) of one database file; ({}, []) if it does not exist.
    Raises DatabaseError naming the file when it is not a valid database."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"{path}: cannot read tuning database ({exc}); the file was left untouched") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatabaseError(
            f"{path}: not a valid tuning database (truncated or corrupt JSON: {exc}); the file was left "
            f"untouched; repair it, or move it away and re-tune or re-import"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("records"), list):
        raise DatabaseError(
            f"{path}: not a tuning database (expected a JSON object with format {FORMAT!r} and a records "
            f"list); the file was left untouched"
        )
    for i, record in enumerate(doc["records"]):
        _check_record(record, f"{path}: record {i}")
    records = doc.pop("records")
    return doc, records


def _write_atomic(path: Path, doc: dict, records: list[dict]) -> None:
    out = dict(doc)
    out.update(format=FORMAT, version=max(VERSION, int(doc.get("version", VERSION))), records=records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(out, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock for read-merge-write of ``path``. The lock is taken on the
    containing folder, not the file: the file is replaced atomically (a lock on its old inode
    would not exclude the next writer), and no lock files litter folders users commit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_file(path: Path, change: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """Under the lock: read ``path``, apply ``change`` to its records, write atomically. A corrupt
    file raises DatabaseError before anything is written. Returns the records written."""
    with locked(path):
        doc, records = read_file(path)
        new = change(records)
        _write_atomic(Path(path), doc, new)
        return new


# ---------------------------------------------------------------------------------------------
# stores

class Store:
    """One database location: a folder of ``<target>/<kernel>.json`` files, or one ``.json`` file."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def single_file(self) -> bool:
        return self.path.suffix == ".json" or self.path.is_file()

    def file_for(self, target: str, kernel: str) -> Path:
        """Where records of (target, kernel) live in this store."""
        if self.single_file:
            return self.path
        t = Target.parse(target)
        return self.path / t.device / t.isa / f"{kernel}.json"

    def files(self) -> list[Path]:
        if self.single_file:
            return [self.path] if self.path.exists() else []
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.rglob("*.json") if not p.name.startswith("."))

    def records(self) -> list[dict]:
        """Every record of every file (DatabaseError names the first bad file)."""
        out = []
        for f in self.files():
            out += read_file(f)[1]
        return out

    def add(self, records: Sequence[dict]) -> None:
        """Merge ``records`` in (best per key wins, provenance kept), file by file, under the lock."""
        by_file: dict[Path, list[dict]] = {}
        for record in records:
            key = record_key(record)
            by_file.setdefault(self.file_for(key.target, key.kernel), []).append(record)
        for path, group in by_file.items():
            update_file(path, lambda existing, group=group: merge_records(existing, group))

    def rewrite(self, keep: Callable[[dict], Optional[dict]]) -> tuple[int, int]:
        """Apply ``keep`` (record -> record or None to drop) to every record; returns (kept, dropped)."""
        kept = dropped = 0
        for path in self.files():
            def change(records: list[dict]) -> list[dict]:
                nonlocal kept, dropped
                out = [r2 for r in records if (r2 := keep(dict(r))) is not None]
                kept, dropped = kept + len(out), dropped + len(records) - len(out)
                return out
            update_file(path, change)
        return kept, dropped


def find(key: TuningKey, stores: Sequence[Any], records_of: Optional[Callable[[Any], list[dict]]] = None,
         usable: Callable[[dict], bool] = lambda r: True) -> tuple[Optional[dict], str]:
    """The record for ``key``: exact key in the first store that has it, else the nearest T bucket
    of the same static key over all stores (ties: the larger bucket, then store order), else None.
    ``stores`` are Stores, or anything ``records_of`` reads (the lookup cache passes file paths).
    Returns (record, "exact" | "nearest" | "none")."""
    records_of = records_of or (lambda s: s.records())
    loaded = [[r for r in records_of(s) if usable(r)] for s in stores]
    for records in loaded:
        for r in records:
            if record_key(r) == key:
                return r, "exact"
    best, best_rank = None, None
    for order, records in enumerate(loaded):
        for r in records:
            other = record_key(r)
            d = key.distance(other)
            if d == float("inf"):
                continue
            rank = (d, -other.bucket, order)
            if best_rank is None or rank < best_rank:
                best, best_rank = r, rank
    return (best, "nearest") if best is not None else (None, "none")
