"""`hola db`: look at, ship and combine tuning databases.

    hola db show [filters]                 records of the user's database (and shipped configs/)
    hola db export OUT [filters]           copy records to OUT (a folder: <target>/<kernel>.json files)
    hola db import FILE_OR_DIR...          merge files into the user's database
    hola db merge OUT IN...                merge databases into OUT (best per key wins, provenance kept)
    hola db prune [filters] [--older-than DAYS] [--illegal] [--drop-history] [--dry-run]

Databases are shared files, so what is read is untrusted (docs/design.md): a bad record or
file is skipped with one warning line on stderr naming it, the valid rest is used, and the exit
status is 1. A file that would be rewritten (an OUT or the user's database) and is itself bad
is never rewritten: that is an error naming it (exit status 2); `prune --illegal` repairs it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime, timezone
from typing import Optional

from autotune import db
from schedules import database

NAME = "db"
HELP = "show, export, import, merge and prune tuning databases"
BAD_INPUT = ("Bad records or files among those read are skipped with one warning each on stderr (naming the "
             "file and the record) and the exit status is 1; a database file this command would rewrite is "
             "never rewritten while it holds bad records (an error naming it, exit status 2; `hola db prune "
             "--illegal` drops them).")


def _db_flag(p: argparse.ArgumentParser) -> None:
    # Also after the action (`hola db show --db X`); SUPPRESS keeps a --db given before it.
    p.add_argument("--db", default=argparse.SUPPRESS, help="the user's database (as `hola db --db`)")


def _filters(p: argparse.ArgumentParser) -> None:
    _db_flag(p)
    p.add_argument("--kernel", help="only records of this kernel")
    p.add_argument("--backend", help="only records of this backend")
    p.add_argument("--target", help="only records of this target, e.g. nvidia-h100/sm_90")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="the user's database folder or .json file "
                                                   "(default: $HOLA_TUNING_DB, else ~/.cache/hola-dsl/tuning)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=f"{help}. {BAD_INPUT}")

    p = action("show", "print the records of the user's database and the shipped configs/ as a table")
    _filters(p)
    p.add_argument("--no-shipped", action="store_true", help="leave out the shipped configs/ folder")
    p = action("export", "copy the records of the user's database and the shipped configs/ into OUT")
    p.add_argument("out", metavar="OUT", help="a folder (written as <device>/<isa>/<kernel>.json files) or a .json "
                                              "file; records already there are merged with, the faster per key wins")
    _filters(p)
    p = action("import", "merge database files or folders into the user's database")
    _db_flag(p)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a database .json file or a folder of them")
    p = action("merge", "merge databases into OUT; the faster record of a key wins, both provenances kept")
    p.add_argument("out", metavar="OUT", help="the database folder or .json file to merge into (made if missing)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a database .json file or a folder of them")
    p = action("prune", "drop records from the user's database")
    _filters(p)
    p.add_argument("--older-than", type=float, metavar="DAYS", help="records measured more than DAYS ago (a number >= 0)")
    p.add_argument("--illegal", action="store_true",
                   help="invalid records: a config the current schedule space rejects, a bad key or time")
    p.add_argument("--drop-history", action="store_true", help="keep records but drop their alternatives and failures")
    p.add_argument("--dry-run", action="store_true", help="say what would be dropped, change nothing")


def _printable(value: object, limit: int = 80) -> str:
    """A field of a shared record as it may reach a terminal: no control characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Reader:
    """Reads stores leniently, reporting each skipped file or set of records on stderr once."""

    def __init__(self) -> None:
        self.skipped = 0

    def skip(self, message: str) -> None:
        self.skipped += 1
        print(f"hola db: warning: {message}", file=sys.stderr)

    def records(self, path) -> list[dict]:
        return db.Store(path).records(on_skip=self.skip)

    @property
    def status(self) -> int:
        return 1 if self.skipped else 0


def _match(record: dict, args: argparse.Namespace) -> bool:
    key = database.record_key(record)
    return all(getattr(args, f, None) in (None, getattr(key, f)) for f in ("kernel", "backend", "target"))


def _show(args: argparse.Namespace, reader: _Reader) -> None:
    for path in database.search_paths(args.db, shipped=not args.no_shipped):
        records = [r for r in reader.records(path) if _match(r, args)]
        print(f"{path}: {len(records)} record(s)")
        for r in records:
            prov = r.get("provenance", {})
            config = ",".join(f"{k}={v}" for k, v in r["config"].items()) or "(no knobs)"
            speed = f"{r['speedup_vs_default']:.2f}x" if r.get("speedup_vs_default") else "-"
            print(f"  {database.record_key(r).id}\n    config {config}  {r['time_s'] * 1e3:.4g} ms  "
                  f"vs default {speed}  on {_printable(prov.get('host', '?'))} at "
                  f"{_printable(prov.get('measured_at', '?'))}  (+{len(r.get('alternatives', []))} other measurements)")


def _export(args: argparse.Namespace, reader: _Reader) -> None:
    records = [r for p in database.search_paths(args.db) for r in reader.records(p) if _match(r, args)]
    db.Store(args.out).add(records)
    print(f"exported {len(records)} record(s) to {args.out}")


def _merge_into(out: str, sources: list[str], reader: _Reader) -> int:
    n = 0
    target = db.Store(out)
    for src in sources:
        store = db.Store(src)
        if not store.path.exists():
            raise FileNotFoundError(f"{src}: no such database file or folder")
        records = reader.records(src)
        target.add(records)
        n += len(records)
    return n


def _import(args: argparse.Namespace, reader: _Reader) -> None:
    out = str(database.user_paths(args.db)[0])
    print(f"imported {_merge_into(out, args.sources, reader)} record(s) into {out}")


def _merge(args: argparse.Namespace, reader: _Reader) -> None:
    print(f"merged {_merge_into(args.out, args.sources, reader)} record(s) into {args.out}")


def _age_days(record: dict) -> Optional[float]:
    stamp = (record.get("provenance") or {}).get("measured_at")
    try:
        then = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (time.time() - then.timestamp()) / 86400


def _prune(args: argparse.Namespace, reader: _Reader) -> None:
    store = db.Store(database.user_paths(args.db)[0])
    if args.older_than is not None and not (math.isfinite(args.older_than) and args.older_than >= 0):
        raise ValueError(f"--older-than: expected a number of days >= 0, got {args.older_than}")
    selective = args.older_than is not None or args.illegal
    if not selective and not args.drop_history and not any(getattr(args, f) for f in ("kernel", "backend", "target")):
        raise ValueError("prune: name what to drop: --older-than DAYS, --illegal, --drop-history, or a "
                         "--kernel/--backend/--target filter (which drops every matching record)")
    verb = "would drop" if args.dry_run else "dropped"

    def keep(record: dict) -> Optional[dict]:
        if not _match(record, args):
            return record
        age = _age_days(record)
        drop = (args.older_than is not None and age is not None and age > args.older_than) or \
               (not selective and not args.drop_history)
        if drop:
            print(f"{verb} {database.record_key(record).id}")
            return record if args.dry_run else None
        if args.drop_history and not args.dry_run:
            record.pop("alternatives", None)
            record.pop("failures", None)
        return record

    def invalid(message: str) -> None:
        print(f"{verb} invalid {_printable(message, 300)}")

    if args.dry_run:
        for path in store.files():
            try:
                _, records, problems = database.load(path)
            except database.DatabaseError as exc:
                reader.skip(str(exc))
                continue
            for problem in problems if args.illegal else []:
                invalid(f"{path}: {problem}")
            for r in records:
                keep(r)
        return
    kept, dropped = store.rewrite(keep, drop_invalid=args.illegal, on_drop=invalid)
    print(f"{store.path}: kept {kept}, dropped {dropped}")


def run(args: argparse.Namespace) -> int:
    reader = _Reader()
    action = {"show": _show, "export": _export, "import": _import, "merge": _merge, "prune": _prune}[args.action]
    try:
        action(args, reader)
    except FileNotFoundError:
        raise
    except OSError as exc:       # a folder that is a file, a read-only database: one line, not a traceback
        raise ValueError(str(exc)) from None
    return reader.status
