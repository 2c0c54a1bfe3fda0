"""The config lookup behind ``hola_dsl.ops`` when ``config=None``: tuned record for the exact
key, else the nearest T bucket, else None (the backend's default). Called on every kernel call,
so it only stats the one file per store that can hold the key and re-reads it when its
mtime or size changes. No Optuna, no hola_dsl import here (ops imports this module)."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

from autotune import db
from autotune.key import TuningKey

_lock = threading.Lock()
# file -> ((mtime_ns, size), usable records); a missing file caches as (None, []).
_files: dict[Path, tuple[Optional[tuple[int, int]], list[dict]]] = {}


def _stat(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def _legal(record: dict) -> bool:
    """A record whose config the current schedule space rejects (renamed knob, tighter
    constraint) is ignored rather than handed to a backend. A knob added since the record was
    made takes its default (as it does when the backend completes the config)."""
    import schedules
    key = db.record_key(record)
    try:
        space = schedules.space(key.kernel, key.backend)
    except (KeyError, ImportError):
        return True  # no space registered: the backend validates its own config
    from autotune.target import Target
    arch = Target.parse(key.target).arch
    return not space.violations(space.complete(record["config"], arch), arch, dict(key.dims))


def _records(path: Path) -> list[dict]:
    stamp = _stat(path)
    with _lock:
        cached = _files.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    try:
        records = [r for r in db.read_file(path)[1] if _legal(r)] if stamp is not None else []
    except db.DatabaseError as exc:
        # A kernel call must not die on a shared file someone broke: say so once per version of
        # the file and go on with the other files and the defaults (`hola db` still refuses it).
        warnings.warn(f"{exc}; ignoring this tuning file (other files and the defaults still apply)",
                      RuntimeWarning, stacklevel=2)
        records = []
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
    """(record, "exact" | "nearest" | "none") from the search path (``db.search_paths``)."""
    key = TuningKey.make(kernel, backend, target, dtypes, dims, T)
    files_key = (db_path if db_path is not None else os.environ.get(db.ENV_VAR, ""), target, kernel)
    files = _file_lists.get(files_key)
    if files is None:
        files = _file_lists[files_key] = [db.Store(p).file_for(target, kernel) for p in db.search_paths(db_path)]
    stamps = tuple(_stat(f) for f in files)
    hit = _results.get((files_key, key))
    if hit is not None and hit[0] == stamps:
        return hit[1]
    answer = db.find(key, files, records_of=_records)
    with _lock:
        _results[(files_key, key)] = (stamps, answer)
    return answer


def lookup(kernel: str, backend: str, target: str, dtypes: Any, dims: Mapping[str, int], T: int,
           db_path: Optional[str] = None) -> Optional[dict]:
    """The tuned config for this key (exact, then nearest T bucket) or None for the backend default.

    target: a target name such as "nvidia-h100/sm_90"; dtypes: e.g. torch.bfloat16 or "bfloat16";
    dims: the kernel's static dims (``autotune.key.STATIC_DIMS``); T: tokens.
    """
    record, _ = lookup_record(kernel, backend, target, dtypes, dims, T, db_path)
    return dict(record["config"]) if record is not None else None


def config_for(kernel: str, backend: str, device: Any, dtype: Any, dims: Mapping[str, int], T: int) -> Optional[dict]:
    """What ``hola_dsl.ops`` calls when ``config is None``: ``lookup`` for the target of the
    tensors' ``device``. Set HOLA_TUNING_DB=off to always use backend defaults."""
    if os.environ.get(db.ENV_VAR, "").strip().lower() == "off":
        return None
    from autotune.target import target_of
    # An empty sequence (T = 0) runs nothing; it takes the records of the shortest bucket.
    return lookup(kernel, backend, target_of(device).name, dtype, dims, max(int(T), 1))


def lookup_for_arch(kernel: str, backend: str, arch: str, dtypes: Any, dims: Mapping[str, int],
                    T: Optional[int] = None, db_path: Optional[str] = None) -> Optional[dict]:
    """A tuned record for an arch rather than a machine (``hola emit --target sm_90`` knows no GPU
    model): any target with that arch ("sm_90", "gfx942", or "cpu" for every CPU), this machine's
    own target first, then the nearest T bucket (the longest when T is None). ``dims`` may hold
    more than the kernel's static dims; the extra ones are ignored. Returns the record or None."""
    from autotune.key import STATIC_DIMS, dtype_name, t_bucket
    from autotune.target import Target, cpu_target

    wanted = tuple(sorted((d, int(dims[d])) for d in STATIC_DIMS.get(kernel, ()) if d in dims))
    here = cpu_target().name if arch == "cpu" else None
    best, best_rank = None, None
    for path in db.search_paths(db_path):
        for record in db.Store(path).records():
            key = db.record_key(record)
            if (key.kernel, key.backend, key.dtypes, key.dims) != (kernel, backend, dtype_name(dtypes), wanted):
                continue
            try:
                if Target.parse(key.target).arch != arch or not _legal(record):
                    continue
            except ValueError:
                continue
            distance = abs(key.bucket.bit_length() - t_bucket(T).bit_length()) if T else -key.bucket
            rank = (key.target != here, distance)
            if best_rank is None or rank < best_rank:
                best, best_rank = record, rank
    return best
