"""The Optuna search over a schedule space, per tuning key.

One study per key (kernel, backend, target, dtypes, static dims, T bucket), named by the key's
readable id, so several workers pointed at one Optuna storage (an RDB URL or a journal file)
tune it together. Flow: reuse an exact database record unless forced; otherwise sample
(exhaustive grid for small spaces, seeded TPE otherwise), warm-started from the default and the
records of nearby T buckets; every candidate passes the correctness gate before it is timed;
failures are recorded as failed trials and remembered; the finalists and the default are
re-measured interleaved and the median decides; the winner is merged into the database.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
import torch
from optuna.trial import TrialState

import schedules
from autotune import db, isolate
from autotune.evaluate import FAILED, ILLEGAL, OK, WRONG, Evaluator, KernelEvaluator, Outcome
from autotune.measure import MAX_SPREAD, REMEASURES, MeasureSettings
from autotune.replay import config_id
from autotune.runner import Runner
from hola_dsl import backends, kernels, spec
from hola_dsl.testing import Shape
from schedules import database
from schedules.kernels import static_dims
from schedules.key import TuningKey, dtype_name
from schedules.targets import Target, machine_of

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
DEFAULT_TRIALS = 40          # TPE budget when none is given
EXHAUSTIVE_LIMIT = 64        # spaces with at most this many configs are searched exhaustively
MIN_IMPROVEMENT = 0.01       # early stopping: a new best must beat the old one by 1%


class _TrialFailed(Exception):
    """Raised inside the objective so Optuna records a FAIL trial (and goes on)."""


@dataclass
class TuneResult:
    """What ``tune`` did: the record written or reused (None when no candidate passed), whether
    it was reused without tuning, the trials of the study, counts by status and wall seconds."""

    key: TuningKey
    record: Optional[dict]
    reused: bool = False
    trials: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    wall_s: float = 0.0
    written_to: Optional[Path] = None
    message: str = ""


def make_storage(url: Optional[str]):
    """None (in memory), "journal:PATH" or a path ending in .log/.journal (Optuna's journal file,
    safe for several processes on one file system), or an RDB URL ("postgresql://...",
    "sqlite:///...") handed to Optuna."""
    if not url:
        return None
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ValueError(f"--storage: expected an RDB URL (postgresql://..., sqlite:///...) or journal:PATH, got {url!r}")
    # Workers started together on a fresh database race to create Optuna's schema; the loser
    # sees a duplicate-type or duplicate-table error, and the schema is then there to use.
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # sqlalchemy IntegrityError / ProgrammingError of the race
            if attempt == 4 or "already exists" not in str(exc):
                first = (str(exc).strip().splitlines() or [""])[0]
                raise ValueError(f"--storage: cannot open {_storage_label(url)}: {type(exc).__name__}: {first}") from None
            time.sleep(0.2 * (attempt + 1))


def _storage_label(url: Optional[str]) -> str:
    """The storage without credentials, for records."""
    if not url:
        return "memory"
    if "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
    return url


def versions() -> dict[str, str]:
    """Versions of the tools a schedule's speed depends on (from package metadata: no imports)."""
    out = {"python": sys.version.split()[0]}
    for dist in ("hola-dsl", "torch", "triton", "tilelang", "optuna"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def ir_hash(kernel: str, backend: str, config: dict, dims: dict, dtype: str) -> Optional[str]:
    """Hash of the DSL kernel's IR as traced for this schedule, dims and dtype (docs/design.md: records
    carry it so a record made for an older kernel can be told apart); None for backends that do
    not go through the DSL (reference) or when tracing is not possible here."""
    if backend == "reference":
        return None
    try:
        traced = spec.trace(kernels.spec(kernel), config, dims, getattr(torch, dtype))
    except Exception:  # informational field: never fail a tuning run over it
        return None
    return "+".join(k.hash() for k in traced)


def _fmt_config(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "(no knobs)"


class _EarlyStop:
    """Stop the study when ``patience`` finished trials in a row brought no improvement of
    MIN_IMPROVEMENT over the best so far (all workers' trials count)."""

    def __init__(self, patience: Optional[int]):
        self.patience = patience

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.patience:
            return
        best, since = math.inf, 0
        for t in sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number):
            if t.state == TrialState.COMPLETE and t.value < best * (1 - MIN_IMPROVEMENT):
                best, since = t.value, 0
            else:
                since += 1
        if since >= self.patience:
            study.stop()


class _Progress:
    """tqdm bar over the study's finished trials, with the best time so far."""

    def __init__(self, total: int, enabled: Optional[bool]):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc="tuning", unit="trial", disable=(not enabled) if enabled is not None else None,
                        file=sys.stderr, leave=False)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.bar.update(1)
        done = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if done:
            self.bar.set_postfix_str(f"best {min(done) * 1e3:.3f} ms")

    def close(self) -> None:
        self.bar.close()


def _trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number):
        rows.append({"number": t.number, "config": t.user_attrs.get("config", t.params),
                     "status": t.user_attrs.get("status", OK if t.state == TrialState.COMPLETE else FAILED),
                     "time_s": t.value if t.state == TrialState.COMPLETE else None,
                     "error": t.user_attrs.get("error", ""), "duplicate": bool(t.user_attrs.get("duplicate")),
                     "datetime_complete": t.datetime_complete.timestamp() if t.datetime_complete else None})
    return rows


@dataclass(frozen=True)
class TuneRequest:
    """What to tune, and how hard.

    ``kernel`` on ``backend`` for ``shape`` and input ``dtype``, on ``device`` (default: a GPU
    when the backend runs there, else the CPU); the record goes to the database ``db_path``
    (else $HOLA_TUNING_DB, else ~/.cache/hola-dsl/tuning). ``trials``: budget of finished
    trials over all workers of the study (default: the whole space when it is searched
    exhaustively, i.e. it has at most ``exhaustive_limit`` points, else DEFAULT_TRIALS);
    ``timeout``: seconds of search for this worker; ``storage``: Optuna storage URL shared by
    workers (None: in memory); ``force``: tune even when the database already has this exact
    key; ``finalists``: how many of the best configs are re-measured interleaved (``rounds``
    rounds) with the default; ``patience``: early stopping (default: off for exhaustive
    search, max(15, trials // 2) for TPE); ``check_T``: length of the correctness check
    (default ``runner.DEFAULT_CHECK_T``); ``target``: target name override (default: the
    machine of ``device``); ``space``: schedule space override (default: the registered
    ``schedules.space(kernel, backend)``); ``isolate``: evaluate candidates in a worker
    process that is killed at ``compile_timeout`` and restarted after a crash (the CLI's
    default; in process, a timed-out compile can only be abandoned); ``max_spread``: the
    largest ``Timing.spread`` of the winner's and the default's final timings that is written
    (noisier ones are re-measured up to REMEASURES times, then the record is not written).
    """

    kernel: str
    backend: str
    shape: Shape
    dtype: Any = "float32"
    device: Optional[str] = None
    trials: Optional[int] = None
    timeout: Optional[float] = None
    storage: Optional[str] = None
    db_path: Optional[str] = None
    seed: int = 0
    force: bool = False
    finalists: int = 3
    rounds: int = 5
    patience: Optional[int] = None
    exhaustive_limit: int = EXHAUSTIVE_LIMIT
    check_T: Optional[int] = None
    compile_timeout: Optional[float] = 120.0
    settings: MeasureSettings = MeasureSettings()
    progress: Optional[bool] = None
    target: Optional[str] = None
    space: Optional[schedules.Space] = None
    isolate: bool = False
    max_spread: float = MAX_SPREAD


def tune(request: TuneRequest, *, evaluator: Optional[Evaluator] = None,
         log: Callable[[str], None] = print) -> TuneResult:
    """Tune as ``request`` asks and merge the best record into the database. ``evaluator``:
    what runs candidates (default: the real kernel; tests pass a ``replay.ReplayEvaluator``);
    ``log``: where progress lines and warnings go. Times in records are seconds per call.

    Invalid records and files of the database are skipped with a warning through ``log``; when
    the record cannot be written (a read-only or invalid database file), the winner is still
    reported and ``TuneResult.message`` says where it could not be written.
    """
    session = _set_up(request, log)
    if isinstance(session, TuneResult):
        return session
    evaluator = evaluator or _kernel_evaluator(request, session.device)
    try:
        search = _Search(session, evaluator)
        search.run()
        return search.finalise()
    finally:
        if hasattr(evaluator, "close"):
            evaluator.close()


@dataclass
class _Session:
    """What the set-up resolved: the request, its space, target, static dims and key, the legal
    configs and the default, the database records read, and this key's record if any."""

    request: TuneRequest
    log: Callable[[str], None]
    t_start: float
    device: str
    space: schedules.Space
    target: Target
    dims: dict
    key: TuningKey
    store: db.Store
    loaded: list
    existing: Optional[dict]
    exact: bool
    legal: list
    default: dict


def _set_up(r: TuneRequest, log: Callable[[str], None]):
    """The ``_Session`` of a request, or the ``TuneResult`` of a database record reused as it is."""
    t_start = time.perf_counter()
    space = r.space
    if space is None:
        try:
            space = schedules.space(r.kernel, r.backend)
        except KeyError as exc:
            raise ValueError(f"backend: {exc.args[0]}") from None
    device = r.device
    if device is None:
        devices = backends.get(r.backend).devices
        device = "cuda" if torch.cuda.is_available() and "cuda" in devices else "cpu"
    tgt = Target.parse(r.target) if r.target else machine_of(device)
    dims = static_dims(r.kernel, r.shape)
    key = TuningKey.make(r.kernel, r.backend, tgt.name, dtype_name(r.dtype), dims, r.shape.T)
    store = db.Store(database.user_paths(r.db_path)[0])
    loaded = [database.Store(p).records(on_skip=lambda message: log(f"hola tune: warning: {message}"))
              for p in database.search_paths(r.db_path)]

    existing, how = database.find(key, loaded, records_of=lambda records: records)
    if existing is not None and how == "exact" and not r.force:
        log(f"hola tune: {key.id}: reusing the database record ({_fmt_config(existing['config'])}, "
            f"{existing['time_s'] * 1e3:.3f} ms); pass --force to tune again")
        return TuneResult(key, existing, reused=True, wall_s=time.perf_counter() - t_start)

    legal = list(space.legal(tgt.arch, dims))
    if not legal:
        raise ValueError(f"{key.id}: no legal config in the {r.kernel}/{r.backend} space for target {tgt.arch} "
                         f"and dims {dims}")
    default = space.default(tgt.arch, dtype_name(r.dtype))      # what the backend would run for this dtype
    if space.violations(default, tgt.arch, dims):
        default = legal[0]
    unwritable = _unwritable(store.file_for(key.target, key.kernel))
    if unwritable:
        log(f"hola tune: warning: {unwritable}; the winner will be reported but not recorded")
    return _Session(r, log, t_start, device, space, tgt, dims, key, store, loaded, existing, how == "exact", legal,
                    default)


def _kernel_evaluator(r: TuneRequest, device: str) -> Evaluator:
    """What runs the real kernel's candidates: in this process, or in a worker when isolated."""
    if r.isolate:
        return isolate.for_kernel(r.kernel, r.backend, r.shape, dtype_name(r.dtype), device, r.check_T,
                                  r.settings, r.compile_timeout)
    return KernelEvaluator(Runner(r.kernel, r.backend, r.shape, r.dtype, device, r.check_T), r.settings,
                           r.compile_timeout)


def _unwritable(path: Path) -> Optional[str]:
    """Why a record could not be merged into database file ``path`` (None when it likely can):
    checked before a search so that an hour of tuning does not end in a surprise."""
    try:
        database.read_file(path)
    except database.DatabaseError as exc:
        return str(exc)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path}: not writable here"
    return None


def _final_timings(evaluator: Evaluator, configs: list[dict], rounds: int, default_index: Optional[int],
                   max_spread: float, log: Callable[[str], None]) -> tuple[list, Optional[str]]:
    """The finalists' interleaved re-measure, repeated (up to REMEASURES more times) while the
    winner's or the default's spread exceeds ``max_spread``. Returns (timings, None), or the
    last timings and why they are too noisy to record."""
    for attempt in range(REMEASURES + 1):
        timings = evaluator.remeasure(configs, rounds)
        win = min(range(len(configs)), key=lambda i: timings[i].median)
        checked = {"winner": win} | ({"default": default_index} if default_index is not None else {})
        noisy = {name: timings[i].spread for name, i in checked.items() if not timings[i].spread <= max_spread}
        if not noisy:
            return timings, None
        why = ", ".join(f"{name} {spread:.1%}" for name, spread in noisy.items())
        if attempt < REMEASURES:
            log(f"hola tune: timings too noisy to record (spread {why} > --max-spread {max_spread:.0%}); "
                f"re-measuring ({attempt + 2}/{REMEASURES + 1})")
    return timings, (f"spread {why} > --max-spread {max_spread:.0%} after {REMEASURES + 1} measurements; "
                     f"the machine is too busy for a trustworthy record (tune on a quiet machine, or raise --max-spread)")


class _Search:
    """One study of a session: the sampler and its warm start, the objective, and the final
    decision with its record."""

    def __init__(self, session: _Session, evaluator: Evaluator):
        self.s, self.evaluator = session, evaluator
        r, legal = session.request, session.legal
        # Sample only values that occur in some legal config for this target and dims: a knob
        # that does nothing here (another dialect's, pinned by a constraint) then has one value
        # and costs no trials. The grid is the product of these values; its illegal points fail
        # for free.
        self.choices = {k.name: [v for v in k.choices if any(c[k.name] == v for c in legal)]
                        for k in session.space.knobs}
        grid_size = math.prod(len(v) for v in self.choices.values())
        self.exhaustive = grid_size <= r.exhaustive_limit
        self.trials = r.trials if r.trials is not None else (grid_size if self.exhaustive else DEFAULT_TRIALS)
        self.patience = r.patience
        if self.patience is None and not self.exhaustive:
            self.patience = max(15, self.trials // 2)  # TPE starts with ~10 random trials: let it model first
        if self.exhaustive:
            sampler = optuna.samplers.GridSampler(self.choices, seed=r.seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=r.seed, n_startup_trials=min(10, max(1, self.trials // 4)))
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.study = optuna.create_study(storage=make_storage(r.storage), sampler=sampler, study_name=session.key.id,
                                         direction="minimize", load_if_exists=True)
        # Remembered outcomes: configs tried before (by this worker, another worker of the study,
        # or listed as failures in a database record of this key) are not compiled again.
        self.memo: dict[str, Outcome] = {}
        for f in (session.existing or {}).get("failures", []) if session.exact else []:
            self.memo[config_id(f["config"])] = Outcome(f.get("status", FAILED), error=f.get("error", "failed before"))
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _warm_start(self) -> None:
        """The default, then the winners of the nearest T buckets of this static key."""
        s = self.s
        self.study.enqueue_trial(s.default, user_attrs={"source": "default"}, skip_if_exists=True)
        nearby = sorted((r for records in s.loaded for r in records
                         if database.record_key(r).static == s.key.static and database.record_key(r) != s.key),
                        key=lambda r: s.key.distance(database.record_key(r)))
        for r in nearby[:3]:
            if not s.space.violations(r["config"], s.target.arch, s.dims):
                self.study.enqueue_trial(r["config"], user_attrs={"source": f"record {database.record_key(r).id}"},
                                         skip_if_exists=True)

    def _remembered(self, cid: str) -> Optional[Outcome]:
        if cid in self.memo:
            return self.memo[cid]
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            if config_id(t.user_attrs.get("config", {})) == cid and not t.user_attrs.get("duplicate"):
                if t.state == TrialState.COMPLETE:
                    return Outcome(OK, t.value, t.user_attrs.get("spread"), t.user_attrs.get("check_error"))
                return Outcome(t.user_attrs.get("status", FAILED), error=t.user_attrs.get("error", ""))
        return None

    def objective(self, trial: optuna.Trial) -> float:
        """One candidate: illegal, remembered, or evaluated; a failure is a FAIL trial."""
        s = self.s
        config = {k.name: trial.suggest_categorical(k.name, self.choices[k.name]) for k in s.space.knobs}
        cid = config_id(config)
        trial.set_user_attr("config", config)
        trial.set_user_attr("worker", self.worker)
        reasons = s.space.violations(config, s.target.arch, s.dims)
        if reasons:
            outcome = Outcome(ILLEGAL, error="illegal: " + "; ".join(reasons))
        elif (outcome := self._remembered(cid)) is not None:
            trial.set_user_attr("duplicate", True)
        else:
            outcome = self.evaluator.evaluate(config, s.request.seed + 1000 + trial.number)
        self.memo[cid] = outcome
        trial.set_user_attr("status", outcome.status)
        if outcome.check_error is not None:
            trial.set_user_attr("check_error", outcome.check_error)
        if outcome.status != OK:
            trial.set_user_attr("error", outcome.error)
            raise _TrialFailed(outcome.error)
        trial.set_user_attr("spread", outcome.spread)
        return outcome.time_s

    def run(self) -> None:
        """The search: warm-started (TPE on a fresh study) and stopped early without progress."""
        if not self.s.space.knobs:
            self.trials = 1
        elif not self.exhaustive and not self.study.get_trials(deepcopy=False):
            self._warm_start()
        bar = _Progress(self.trials, self.s.request.progress)
        try:
            self.study.optimize(self.objective, n_trials=self.trials, timeout=self.s.request.timeout,
                                catch=(_TrialFailed,),
                                callbacks=[optuna.study.MaxTrialsCallback(self.trials, states=FINISHED),
                                           _EarlyStop(self.patience), bar])
        finally:
            bar.close()

    def finalise(self) -> TuneResult:
        """The best few and the default, re-measured interleaved (median wins), written as one
        record, with the summary table logged."""
        s, r = self.s, self.s.request
        rows = _trial_rows(self.study)
        counts = {status: sum(1 for row in rows if row["status"] == status) for status in (OK, FAILED, WRONG, ILLEGAL)}
        counts["trials"] = len(rows)
        counts["duplicates"] = sum(1 for row in rows if row["duplicate"])
        best: dict[str, tuple[float, dict]] = {}
        for row in rows:
            if row["status"] == OK:
                cid = config_id(row["config"])
                if cid not in best or row["time_s"] < best[cid][0]:
                    best[cid] = (row["time_s"], row["config"])
        result = TuneResult(s.key, None, trials=rows, counts=counts)
        if not best:
            result.wall_s = time.perf_counter() - s.t_start
            result.message = f"{s.key.id}: no candidate passed ({counts}); nothing written"
            s.log(f"hola tune: {result.message}")
            return result

        ranked = sorted(best.values(), key=lambda tc: tc[0])[:max(1, r.finalists)]
        final_configs = [c for _, c in ranked]
        default_id = config_id(s.default)
        default_ok = default_id in best or (self.memo.get(default_id) or Outcome(FAILED)).status == OK
        if default_ok and default_id not in {config_id(c) for c in final_configs}:
            final_configs.append(s.default)
        d_index = next((i for i, c in enumerate(final_configs) if config_id(c) == default_id), None)
        timings, noisy = _final_timings(self.evaluator, final_configs, r.rounds, d_index, r.max_spread, s.log)
        order = sorted(range(len(final_configs)), key=lambda i: timings[i].median)
        result.record = self._record(final_configs, timings, order, d_index, rows, counts)
        result.wall_s = result.record["search"]["wall_s"] = time.perf_counter() - s.t_start
        if noisy:
            result.message = f"{s.key.id}: record not written: {noisy}"
        else:
            dest = s.store.file_for(s.key.target, s.key.kernel)
            try:
                s.store.add([result.record])
            except (OSError, database.DatabaseError) as exc:
                result.message = f"{s.key.id}: could not write the record to {dest}: {exc}"
            else:
                result.written_to = dest
        fixed = {name for name, values in self.choices.items() if len(values) == 1}
        for line in summary(result, [(final_configs[i], timings[i]) for i in order], s.default, fixed):
            s.log(line)
        if result.message:
            s.log(result.message)
        return result

    def _record(self, final_configs: list, timings: list, order: list, d_index: Optional[int], rows: list,
                counts: dict) -> dict:
        """The database record of the winner ``final_configs[order[0]]``, with its evidence."""
        s, r = self.s, self.s.request
        win = order[0]
        default_time = timings[d_index].median if d_index is not None else None
        failures = list({config_id(row["config"]): {"config": row["config"], "status": row["status"],
                                                    "error": row["error"]}
                         for row in rows if row["status"] != OK}.values())
        device = self.evaluator.device
        return {
            "key": s.key.to_json(), "id": s.key.id,
            "config": final_configs[win],
            "time_s": timings[win].median,
            "spread": timings[win].spread,
            "default_config": s.default,
            "default_time_s": default_time,
            "speedup_vs_default": (default_time / timings[win].median) if default_time else None,
            "shape": dataclasses.asdict(r.shape),
            "measurement": {"method": "interleaved re-measure of the finalists, median", "rounds": r.rounds,
                            "clock": "cuda events" if device == "cuda" else
                            ("monotonic perf_counter_ns" if device == "cpu" else device),
                            "samples": len(timings[win].samples)},
            "finalists": [{"config": final_configs[i], "time_s": timings[i].median, "spread": timings[i].spread}
                          for i in order],
            "search": {"sampler": "grid" if self.exhaustive else "tpe", "seed": r.seed, "study": s.key.id,
                       "storage": _storage_label(r.storage), **counts},
            "failures": failures,
            "ir_hash": ir_hash(r.kernel, r.backend, final_configs[win], s.dims, s.key.dtypes),
            "versions": versions(),
            "provenance": {"host": socket.gethostname(),
                           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "tool": "hola tune", "device": device},
        }


def summary(result: TuneResult, timings: list, default: dict, fixed: set = frozenset()) -> list[str]:
    """The table printed at the end of a tuning run; knobs in ``fixed`` (one legal value here)
    are listed once instead of in every row."""
    c, key = result.counts, result.key
    show = lambda config: _fmt_config({k: v for k, v in config.items() if k not in fixed})
    width = max([len(show(cfg)) + 10 for cfg, _ in timings] + [30])
    shape = result.record["shape"]
    lines = [f"tuned {key.id}  (shape B={shape['B']},T={shape['T']},H={shape['H']})",
             f"trials: {c['trials']} ({c[OK]} ok, {c[FAILED]} failed, {c[ILLEGAL]} illegal, {c[WRONG]} rejected as "
             f"wrong; {c['duplicates']} repeats not re-run), sampler {result.record['search']['sampler']}, "
             f"wall {result.wall_s:.1f}s",
             f"{'rank':<5} {'config':<{width}} {'median ms':>10} {'spread':>7} {'vs default':>10}"]
    d_time = result.record["default_time_s"]
    for rank, (config, t) in enumerate(timings, 1):
        tag = " (default)" if config_id(config) == config_id(default) else ""
        ratio = f"{d_time / t.median:.2f}x" if d_time else "-"
        lines.append(f"{rank:<5} {show(config) + tag:<{width}} {t.median * 1e3:>10.3f} {t.spread:>7.1%} {ratio:>10}")
    for f in result.record["failures"][:10]:
        lines.append(f"{f['status']}: {show(f['config'])}: {f['error']}")
    if fixed:
        lines.append("same in every row (one legal value here): " + _fmt_config({k: v for k, v in default.items() if k in fixed}))
    where = f"record written to {result.written_to}" if result.written_to else "record NOT written (see below)"
    lines.append(f"best {_fmt_config(result.record['config'])}: {result.record['time_s'] * 1e3:.3f} ms"
                 + (f", default {d_time * 1e3:.3f} ms, {d_time / result.record['time_s']:.2f}x" if d_time else "")
                 + f"; {where}")
    return lines
