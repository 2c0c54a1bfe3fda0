"""`hola db`: look at, ship and combine tuning databases.

    hola db show [filters]                 records of the user's database (and shipped configs/)
    hola db export OUT [filters]           copy records to OUT (a folder: <target>/<kernel>.json files)
    hola db import FILE_OR_DIR...          merge files into the user's database
    hola db merge OUT IN...                merge databases into OUT (best per key wins, provenance kept)
    hola db prune [filters] [--older-than DAYS] [--illegal] [--drop-history] [--dry-run]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from typing import Optional

from autotune import db

NAME = "db"
HELP = "show, export, import, merge and prune tuning databases"


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
    p = sub.add_parser("show", help="print the records as a table")
    _filters(p)
    p.add_argument("--no-shipped", action="store_true", help="leave out the shipped configs/ folder")
    p = sub.add_parser("export", help="copy records to a folder (<target>/<kernel>.json) or a .json file")
    p.add_argument("out")
    _filters(p)
    p = sub.add_parser("import", help="merge database files or folders into the user's database")
    _db_flag(p)
    p.add_argument("sources", nargs="+")
    p = sub.add_parser("merge", help="merge databases into OUT; the faster record of a key wins, both provenances kept")
    p.add_argument("out")
    p.add_argument("sources", nargs="+")
    p = sub.add_parser("prune", help="drop records from the user's database")
    _filters(p)
    p.add_argument("--older-than", type=float, metavar="DAYS", help="records measured more than DAYS ago")
    p.add_argument("--illegal", action="store_true", help="records whose config the current schedule space rejects")
    p.add_argument("--drop-history", action="store_true", help="keep records but drop their alternatives and failures")
    p.add_argument("--dry-run", action="store_true", help="say what would be dropped, change nothing")


def _match(record: dict, args: argparse.Namespace) -> bool:
    key = db.record_key(record)
    return all(getattr(args, f, None) in (None, getattr(key, f)) for f in ("kernel", "backend", "target"))


def _show(args: argparse.Namespace) -> int:
    for path in db.search_paths(args.db, shipped=not args.no_shipped):
        records = [r for r in db.Store(path).records() if _match(r, args)]
        print(f"{path}: {len(records)} record(s)")
        for r in records:
            prov = r.get("provenance", {})
            config = ",".join(f"{k}={v}" for k, v in r["config"].items()) or "(no knobs)"
            speed = f"{r['speedup_vs_default']:.2f}x" if r.get("speedup_vs_default") else "-"
            print(f"  {r.get('id') or db.record_key(r).id}\n    config {config}  {r['time_s'] * 1e3:.4g} ms  "
                  f"vs default {speed}  on {prov.get('host', '?')} at {prov.get('measured_at', '?')}"
                  f"  (+{len(r.get('alternatives', []))} other measurements)")
    return 0


def _export(args: argparse.Namespace) -> int:
    records = [r for p in db.search_paths(args.db) for r in db.Store(p).records() if _match(r, args)]
    db.Store(args.out).add(records)
    print(f"exported {len(records)} record(s) to {args.out}")
    return 0


def _merge_into(out: str, sources: list[str]) -> int:
    n = 0
    target = db.Store(out)
    for src in sources:
        store = db.Store(src)
        if not store.path.exists():
            raise FileNotFoundError(f"{src}: no such database file or folder")
        records = store.records()
        target.add(records)
        n += len(records)
    return n


def _import(args: argparse.Namespace) -> int:
    out = str(db.user_paths(args.db)[0])
    print(f"imported {_merge_into(out, args.sources)} record(s) into {out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    print(f"merged {_merge_into(args.out, args.sources)} record(s) into {args.out}")
    return 0


def _age_days(record: dict) -> Optional[float]:
    stamp = (record.get("provenance") or {}).get("measured_at")
    try:
        then = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (time.time() - then.timestamp()) / 86400


def _illegal(record: dict) -> bool:
    import schedules
    from autotune.target import Target
    key = db.record_key(record)
    try:
        space = schedules.space(key.kernel, key.backend)
    except (KeyError, ImportError):
        return False
    return bool(space.violations(record["config"], Target.parse(key.target).arch, dict(key.dims)))


def _prune(args: argparse.Namespace) -> int:
    store = db.Store(db.user_paths(args.db)[0])
    selective = args.older_than is not None or args.illegal
    if not selective and not args.drop_history and not any(getattr(args, f) for f in ("kernel", "backend", "target")):
        raise ValueError("prune: name what to drop: --older-than DAYS, --illegal, --drop-history, or a "
                         "--kernel/--backend/--target filter (which drops every matching record)")

    def keep(record: dict) -> Optional[dict]:
        if not _match(record, args):
            return record
        age = _age_days(record)
        drop = (args.older_than is not None and age is not None and age > args.older_than) or \
               (args.illegal and _illegal(record)) or (not selective and not args.drop_history)
        if drop:
            print(f"{'would drop' if args.dry_run else 'dropped'} {record.get('id') or db.record_key(record).id}")
            return record if args.dry_run else None
        if args.drop_history and not args.dry_run:
            record.pop("alternatives", None)
            record.pop("failures", None)
        return record

    if args.dry_run:
        for r in store.records():
            keep(r)
        return 0
    kept, dropped = store.rewrite(keep)
    print(f"{store.path}: kept {kept}, dropped {dropped}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"show": _show, "export": _export, "import": _import, "merge": _merge, "prune": _prune}[args.action](args)
