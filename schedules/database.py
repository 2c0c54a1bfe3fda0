"""Reading the tuning database: where it is, what a valid record is, and which record applies.

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

A shared file is untrusted input (docs/design.md). A record is valid when its key is
(``TuningKey.from_json``: fixed vocabularies, path-safe target), its config passes the schedule
space of its kernel and backend for its target (``schedules.Space.check``), ``time_s`` is a
finite positive number, the fields this code reads have their types, and nothing in it is
nested deeper than ``MAX_DEPTH`` or holds NaN or Infinity (files stay standard JSON). Readers
that must go on (lookups, ``hola db`` reading its inputs) skip a bad record or a bad file with
one message (``load``, ``Store.records(on_skip=...)``); a writer refuses a file holding one
(``read_file``). A record's key never names a file outside its store (``Store.file_for``).
Writing, merging and locking are the tuner's business (``autotune.db``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from schedules import ConfigError, kernels, space
from schedules.key import TuningKey
from schedules.targets import Target

FORMAT = "hola-tuning-db"
VERSION = 1
ENV_VAR = "HOLA_TUNING_DB"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"
# Bounds on what a shared file may hold: a tuner's record nests 4 deep; 64 MiB is thousands of
# records. Deeper or bigger is an attack on the reader, not a database.
MAX_DEPTH = 16
MAX_FILE_BYTES = 64 << 20


class DatabaseError(ValueError):
    """A tuning database file or record that cannot be used; the message names the file or record."""


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


def _json_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot be written as standard, boundedly nested JSON (None when it can),
    naming where in it the problem is ("spread: holds nan (not standard JSON)")."""
    stack = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        at = f"{where}: " if where else ""
        if depth > MAX_DEPTH:
            return f"{at}nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{at}holds {item!r} (not standard JSON)"
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return f"{at}has an object key that is not a string"
            stack += [(v, depth + 1, f"{where}.{k}" if where else k) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(item)]
        elif not (item is None or isinstance(item, (bool, int, float, str))):
            return f"{at}holds a {type(item).__name__} (not JSON)"
    return None


def _seconds(value: Any) -> bool:
    """A measured time: a finite positive number (NaN never loses a merge; negatives win all)."""
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _number_or_null(value: Any, positive: bool) -> bool:
    if value is None:
        return True
    return type(value) in (int, float) and math.isfinite(value) and (value > 0 if positive else value >= 0)


# Fields a record may carry, and what this code needs of them when they are there.
_OPTIONAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: isinstance(v, str), "a string"),
    "provenance": (lambda v: isinstance(v, dict), "a JSON object"),
    "spread": (lambda v: _number_or_null(v, positive=False), "a finite number >= 0 or null"),
    "default_time_s": (lambda v: _number_or_null(v, positive=True), "a finite positive number or null"),
    "speedup_vs_default": (lambda v: _number_or_null(v, positive=True), "a finite positive number or null"),
    "alternatives": (lambda v: isinstance(v, list) and all(
        isinstance(a, dict) and isinstance(a.get("config"), dict) and _seconds(a.get("time_s"))
        and isinstance(a.get("provenance", {}), dict) for a in v),
        "a list of objects with a config object and a finite positive time_s"),
    "failures": (lambda v: isinstance(v, list) and all(isinstance(f, dict) and isinstance(f.get("config"), dict)
                                                        for f in v), "a list of objects with a config object"),
}


def record_problem(record: Any) -> Optional[str]:
    """Why ``record`` is not a valid record (see the module docstring), or None when it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [f for f in ("key", "config", "time_s") if f not in record]
    if missing:
        return f"missing {missing} (a record needs key, config and time_s)"
    problem = _json_problem(record)
    if problem:
        return problem
    try:
        key = record_key(record)
    except ValueError as exc:
        return str(exc)
    if not _seconds(record["time_s"]):
        return f"time_s: expected a finite positive number of seconds, got {record['time_s']!r:.60}"
    for name, (ok, expected) in _OPTIONAL.items():
        if name in record and not ok(record[name]):
            return f"{name}: expected {expected}, got {record[name]!r:.60}"
    try:
        # Completed with the defaults for its target and dtype, as a backend completes it: a
        # record made before a knob existed stays usable.
        space(key.kernel, key.backend).check(record["config"], Target.parse(key.target).arch, dict(key.dims),
                                             dtype=key.dtypes)
    except ConfigError as exc:
        return str(exc)
    return None


def check_records(records: Sequence[Any], where: str) -> None:
    """DatabaseError naming the first invalid record of ``records``."""
    for i, record in enumerate(records):
        problem = record_problem(record)
        if problem:
            raise DatabaseError(f"{where}: record {i}: {problem}")


# ---------------------------------------------------------------------------------------------
# files


def load(path: Path) -> tuple[dict, list[dict], list[str]]:
    """(document without records, its valid records, "record I: why" for each invalid one) of one
    database file; ({}, [], []) if it does not exist. Raises DatabaseError naming the file when
    the file as a whole is unusable (not a regular file, too big, not JSON, nested too deep,
    not a tuning database)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}, [], []
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read tuning database ({exc}); the file was left untouched") from exc
    if not path.is_file():
        raise DatabaseError(f"{path}: not a regular file; not read")
    if st.st_size > MAX_FILE_BYTES:
        raise DatabaseError(f"{path}: {st.st_size} bytes, more than a tuning database holds "
                            f"({MAX_FILE_BYTES} at most); not read")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatabaseError(f"{path}: cannot read tuning database ({exc}); the file was left untouched") from exc
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, huge ints, deep nesting
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise DatabaseError(
            f"{path}: not a valid tuning database (truncated or corrupt JSON: {why}); the file was left "
            f"untouched; repair it, or move it away and re-tune or re-import"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("records"), list):
        raise DatabaseError(
            f"{path}: not a tuning database (expected a JSON object with format {FORMAT!r} and a records "
            f"list); the file was left untouched"
        )
    records = doc.pop("records")
    version = doc.get("version", VERSION)
    if type(version) is not int or version < 1:
        raise DatabaseError(f"{path}: version: expected a positive int, got {version!r:.60}; the file was left untouched")
    problem = _json_problem(doc)
    if problem:
        raise DatabaseError(f"{path}: the document {problem}; the file was left untouched")
    good, problems = [], []
    for i, record in enumerate(records):
        why = record_problem(record)
        if why:
            problems.append(f"record {i}: {why}")
        else:
            good.append(record)
    return doc, good, problems


def skipped_message(path: Path, problems: Sequence[str], total: int) -> str:
    """One line for the invalid records of one file: how many, and why the first few are."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return f"{path}: skipped {len(problems)} of {total} records ({shown})"


def refused(path: Path, problems: Sequence[str]) -> DatabaseError:
    """Why a file holding invalid records is not used as a whole (nor rewritten)."""
    return DatabaseError(f"{path}: {problems[0]}; the file was left untouched (`hola db prune --illegal` "
                         f"drops invalid records)")


def read_file(path: Path) -> tuple[dict, list[dict]]:
    """(document without records, records) of one database file; ({}, []) if it does not exist.
    Strict, for writers: raises DatabaseError naming the file (and the record) when the file or
    any record in it is invalid."""
    doc, records, problems = load(path)
    if problems:
        raise refused(path, problems)
    return doc, records


# ---------------------------------------------------------------------------------------------
# stores


class Store:
    """One database location, for reading: a folder of ``<target>/<kernel>.json`` files, or one
    ``.json`` file (``autotune.db.Store`` adds the writing)."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def single_file(self) -> bool:
        return self.path.suffix == ".json" or self.path.is_file()

    def file_for(self, target: str, kernel: str) -> Path:
        """Where records of (target, kernel) live in this store. ValueError for a target or
        kernel that is not a valid key part, DatabaseError if the path would leave the store
        (a symlinked folder pointing elsewhere)."""
        if self.single_file:
            return self.path
        t = Target.parse(target)
        kernels.check(kernel)
        path = self.path / t.device / t.isa / f"{kernel}.json"
        root = self.path.resolve()
        if not path.resolve().is_relative_to(root):
            raise DatabaseError(f"{path}: resolves to {path.resolve()}, outside the database {root}; not used")
        return path

    def files(self) -> list[Path]:
        if self.single_file:
            return [self.path] if self.path.exists() else []
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.rglob("*.json") if not p.name.startswith("."))

    def records(self, on_skip: Optional[Callable[[str], None]] = None) -> list[dict]:
        """Every valid record of every file. A bad file or record raises DatabaseError naming it,
        or, with ``on_skip``, is left out and reported to it in one message per file."""
        out = []
        for f in self.files():
            if on_skip is None:
                out += read_file(f)[1]
                continue
            try:
                _, records, problems = load(f)
            except DatabaseError as exc:
                on_skip(str(exc))
                continue
            if problems:
                on_skip(skipped_message(f, problems, len(records) + len(problems)))
            out += records
        return out


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
