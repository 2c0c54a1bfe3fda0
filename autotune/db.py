"""Writing the tuning database: records added, merged and rewritten, safely among writers.

What a store, a file and a valid record are, and how one is found, is ``schedules.database``
(reading is schedule lookup; searching and writing are the tuner's). Here: merging two records
of one key (the faster measurement wins, every provenance kept), and ``Store``'s writes.

Writes hold an exclusive ``fcntl.flock`` on the file's folder around read-merge-write and replace
the file atomically (temporary file in the same folder, fsync, ``os.replace``), so concurrent
writers never lose a record and readers never see half a file. The file keeps its mode (a new
one gets the umask's), and temporary files a killed writer left behind are removed by the next
writer of that folder once they are ``STALE_TMP_S`` old. Writers refuse: ``Store.add`` takes no
invalid record, and a file holding one is never rewritten (``database.read_file``), except by
``Store.rewrite(drop_invalid=True)``, the repair ``hola db prune --illegal`` asks for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from schedules import database
from schedules.database import check_records, load, read_file, record_key, record_time, refused

# Losers of a merge kept per record (fastest first) so provenance survives without unbounded growth.
MAX_ALTERNATIVES = 32
# A writer's temporary file older than this is what a killed writer left behind.
STALE_TMP_S = 600.0


def _identity(record: dict) -> str:
    """What makes two measurements the same one (a record imported twice is not two results)."""
    prov = record.get("provenance") or {}
    return json.dumps([record.get("config"), prov.get("host"), prov.get("measured_at")], sort_keys=True, default=str)


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
# writing files

def _sweep_stale(folder: Path, name: str) -> None:
    """Remove temporary files of writers of ``name`` that died (older than STALE_TMP_S)."""
    cutoff = time.time() - STALE_TMP_S
    for tmp in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def _write_atomic(path: Path, doc: dict, records: list[dict]) -> None:
    check_records(records, str(path))
    out = dict(doc)
    out.update(format=database.FORMAT, version=max(database.VERSION, doc.get("version", database.VERSION)), records=records)
    text = json.dumps(out, indent=1, sort_keys=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(path.parent, path.name)
    try:
        mode = path.stat().st_mode & 0o7777     # keep the file's mode (a group-writable team file stays so)
    except FileNotFoundError:
        mode = None                              # a new file: 0o666 less the umask, as any tool makes it
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(text)
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

class Store(database.Store):
    """One database location (see ``schedules.database.Store``), written as well as read."""

    def add(self, records: Sequence[dict]) -> None:
        """Merge ``records`` in (best per key wins, provenance kept), file by file, under the lock.
        An invalid record raises DatabaseError naming it before anything is written."""
        check_records(records, "records to add")
        by_file: dict[Path, list[dict]] = {}
        for record in records:
            key = record_key(record)
            by_file.setdefault(self.file_for(key.target, key.kernel), []).append(record)
        for path, group in by_file.items():
            update_file(path, lambda existing, group=group: merge_records(existing, group))

    def rewrite(self, keep: Callable[[dict], Optional[dict]], drop_invalid: bool = False,
                on_drop: Callable[[str], None] = lambda message: None) -> tuple[int, int]:
        """Apply ``keep`` (record -> record or None to drop) to every record; returns (kept, dropped).
        A file with invalid records raises DatabaseError (nothing of it is rewritten), unless
        ``drop_invalid``: then they are dropped and reported to ``on_drop``."""
        kept = dropped = 0
        for path in self.files():
            with locked(path):
                doc, records, problems = load(path)
                if problems and not drop_invalid:
                    raise refused(path, problems)
                for problem in problems:
                    on_drop(f"{path}: {problem}")
                out = [r2 for r in records if (r2 := keep(dict(r))) is not None]
                kept, dropped = kept + len(out), dropped + len(records) + len(problems) - len(out)
                if out != records or problems:
                    _write_atomic(path, doc, out)
        return kept, dropped
