"""The config lookup behind ``hola_dsl.ops`` when ``config=None``: tuned record for the exact
key, else the nearest T bucket, else None (the backend's default). Called on every kernel call,
so it only stats the one file per store that can hold the key and re-reads it when its
mtime or size changes.

A lookup never fails a kernel call: an invalid record (``database.record_problem``: a bad key, a
config its space rejects, a time that is not finite and positive) or an unusable file is
skipped with one RuntimeWarning per version of the file, and a key that cannot be a tuning key
(a T beyond the largest bucket) finds nothing."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

from schedules import database, kernels
from schedules.key import TuningKey, dtype_name, t_bucket
from schedules.targets import Target, cpu_machine, machine_of

_lock = threading.Lock()
# file -> ((mtime_ns, size), usable records); a missing file caches as (None, []).
_files: dict[Path, tuple[Optional[tuple[int, int]], list[dict]]] = {}


def _stat(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError:
        return -1, -1       # unreadable: ``database.load`` says why, once
    return st.st_mtime_ns, st.st_size


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _records(path: Path) -> list[dict]:
    stamp = _stat(path)
    with _lock:
        cached = _files.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    # A kernel call must not die on a shared file someone broke: say so once per version of the
    # file and go on with its good records, the other files and the defaults (`hola db` refuses
    # to rewrite it).
    try:
        _, records, problems = database.load(path) if stamp is not None else ({}, [], [])
    except database.DatabaseError as exc:
        _warn(f"{exc}; ignoring this tuning file (other files and the defaults still apply)")
        records, problems = [], []
    if problems:
        _warn(database.skipped_message(path, problems, len(records) + len(problems)))
    with _lock:
        _files[path] = (stamp, records)
    return records


def clear_cache() -> None:
    """Forget every cached file (tests; the mtime check makes this unnecessary otherwise)."""
    with _lock:
        _files.clear()
        _file_lists.clear()
        _results.clear()


# (db setting, target, kernel) -> the files that can hold such records, in search order.
_file_lists: dict[tuple, list[Path]] = {}
# full lookup key -> (stamps of those files, (record, how)): a hit costs one stat per file.
_results: dict[tuple, tuple[tuple, tuple[Optional[dict], str]]] = {}


def lookup_record(kernel: str, backend: str, target: str, dtypes: Any, dims: Mapping[str, int], T: int,
                  db_path: Optional[str] = None) -> tuple[Optional[dict], str]:
    """(record, "exact" | "nearest" | "none") from the search path (``database.search_paths``)."""
    try:
        key = TuningKey.make(kernel, backend, target, dtypes, dims, T)
    except ValueError:      # no record can have this key (e.g. T beyond the largest bucket)
        return None, "none"
    files_key = (db_path if db_path is not None else os.environ.get(database.ENV_VAR, ""), target, kernel)
    files = _file_lists.get(files_key)
    if files is None:
        files = []
        for p in database.search_paths(db_path):
            try:
                files.append(database.Store(p).file_for(target, kernel))
            except ValueError as exc:    # a store folder symlinked out of itself
                _warn(f"{exc}; ignoring this tuning database")
        _file_lists[files_key] = files
    stamps = tuple(_stat(f) for f in files)
    hit = _results.get((files_key, key))
    if hit is not None and hit[0] == stamps:
        return hit[1]
    answer = database.find(key, files, records_of=_records)
    with _lock:
        _results[(files_key, key)] = (stamps, answer)
    return answer


def lookup(kernel: str, backend: str, target: str, dtypes: Any, dims: Mapping[str, int], T: int,
           db_path: Optional[str] = None) -> Optional[dict]:
    """The tuned config for this key (exact, then nearest T bucket) or None for the backend default.

    target: a target name such as "nvidia-h100/sm_90"; dtypes: e.g. torch.bfloat16 or "bfloat16";
    dims: the kernel's static dims (``schedules.kernels.STATIC_DIMS``); T: tokens.
    """
    record, _ = lookup_record(kernel, backend, target, dtypes, dims, T, db_path)
    return dict(record["config"]) if record is not None else None


def config_for(kernel: str, backend: str, device: Any, dtype: Any, dims: Mapping[str, int], T: int) -> Optional[dict]:
    """What ``hola_dsl.ops`` calls when ``config is None``: ``lookup`` for the target of the
    tensors' ``device``. Set HOLA_TUNING_DB=off to always use backend defaults."""
    if os.environ.get(database.ENV_VAR, "").strip().lower() == "off":
        return None
    # An empty sequence (T = 0) runs nothing; it takes the records of the shortest bucket.
    return lookup(kernel, backend, machine_of(device).name, dtype, dims, max(int(T), 1))


def lookup_for_arch(kernel: str, backend: str, arch: str, dtypes: Any, dims: Mapping[str, int],
                    T: Optional[int] = None, db_path: Optional[str] = None) -> Optional[dict]:
    """A tuned record for an arch rather than a machine (``hola emit --target sm_90`` knows no GPU
    model): any target with that arch ("sm_90", "gfx942", or "cpu" for every CPU), this machine's
    own target first, then the nearest T bucket (the longest when T is None). ``dims`` may hold
    more than the kernel's static dims; the extra ones are ignored. Returns the record or None."""
    wanted = tuple(sorted((d, int(dims[d])) for d in kernels.STATIC_DIMS.get(kernel, ()) if d in dims))
    here = cpu_machine().name if arch == "cpu" else None
    best, best_rank = None, None
    for path in database.search_paths(db_path):
        for record in database.Store(path).records(on_skip=_warn):
            key = database.record_key(record)
            if (key.kernel, key.backend, key.dtypes, key.dims) != (kernel, backend, dtype_name(dtypes), wanted):
                continue
            if Target.parse(key.target).arch != arch:
                continue
            distance = abs(key.bucket.bit_length() - t_bucket(T).bit_length()) if T else -key.bucket
            rank = (key.target != here, distance)
            if best_rank is None or rank < best_rank:
                best, best_rank = record, rank
    return best
