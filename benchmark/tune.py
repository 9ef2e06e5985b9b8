"""Hyper-parameter search with Optuna: one process, K workers, or many machines on one study.

A search trains trials of one params.yaml run (``--run R``, or the run picked for ``--method``
and ``--split``, see :func:`choose_run`) through the same resolver and engine as ``sewerbench
train``: every trial samples the dotted keys of its search space (``tune.spaces``), merges them
over the ``--set`` overrides into a nested override dict, resolves it with
``benchmark.config.resolve_run(params, run, overrides=...)`` and trains it with
``benchmark.train.engine.train_run(cfg, trial_dir, callback=...)``. The resolved configuration
is never patched. Each trial selects its checkpoint (and early-stops) on the primary objective
(``selection`` is set to it), so the trial's value is the engine's selection score.

Objective: the validation split only (per epoch the better of the plain and the EMA model; the
trial's value is the best epoch's, as model selection does). One metric (``F2_CIW``, ``mAP``,
``F1_Normal``; seeded TPE, median / Hyperband / no pruning on per-epoch reports) or two
(``F2_CIW,F1_Normal``: seeded NSGA-II, the Pareto front; values of the epoch that the primary
metric selects; no pruning). The sampler of trial ``n`` is seeded with ``(tune.seed, n)``, so
one worker reproduces a search exactly and K workers never sample the same random start-up
configurations.

Trial count: ``--trials N`` is the number of *done* trials the study must hold: COMPLETE +
PRUNED + FAILED, where FAILED means the trial raised (NaN/inf loss, CUDA out of memory, any
crash) and recorded why (user attribute ``fail_reason``). A trial whose worker died (SIGKILL,
lost machine: no heartbeat for ``tune.heartbeat.grace`` seconds) or that was stopped by Ctrl-C
is FAIL without a reason; it does not count and is retried with the same parameters (Optuna's
heartbeat + retry callback; the journal storage gets the same heartbeat here). A worker stops
when the study holds N done trials; while the remaining ones are running elsewhere it waits
(they may still die). Trials that two workers create at the same instant beyond N are closed at
once as FAIL with ``surplus`` set (never trained, not counted).

Storage: ``sqlite:///<out>/study.db`` by default; any SQLAlchemy URL Optuna accepts
(``postgresql+psycopg://user:pw@host:5432/db``, ``mysql+pymysql://...``; a bare
``postgresql://`` uses psycopg 3 when psycopg2 is not installed); ``journal:///abs/file.log`` or
``journal:relative/file.log`` for Optuna's file journal on a shared filesystem.

Outputs (atomic, written by the command that started the workers): ``best.yaml`` (a params.yaml
overlay ``runs: {R: {...}}`` that re-trains the best trial), ``best.args`` (the same as ``dvc exp
run`` arguments), ``summary.md``, ``trials.csv`` and ``plots/*.png``; trial run folders under
``trials/NNNN`` (checkpoints removed unless ``tune.keep_checkpoints``).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from benchmark.config.resolve import deep_merge, dotted_to_nested
from benchmark.cpus import usable_cpus
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path, atomic_to_csv, atomic_write_text

log = logging.getLogger(__name__)

OBJECTIVES = ("F2_CIW", "mAP", "F1_Normal")
PRUNERS = ("median", "hyperband", "none")
#: Study user attribute holding what the study was created for (checked on resume).
STUDY_ATTR = "sewerbench"
#: Trial system attribute of the journal storage's heartbeat (unix time).
HEARTBEAT_ATTR = "sewerbench:heartbeat"
#: Environment variable that tells a worker process how many torch threads to use.
THREADS_ENV = "SEWERBENCH_TUNE_THREADS"
DONE_CLASSES = ("complete", "pruned", "failed")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "objective": "F2_CIW",
    "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0, "interval_steps": 1,
               "min_resource": 1, "reduction_factor": 3},
    "sampler": {"n_startup_trials": 5, "multivariate": True, "population_size": 8},
    "heartbeat": {"interval": 20, "grace": 60, "max_retry": 2},
    "poll_seconds": 2.0,
    "threads_per_worker": None,
    "keep_checkpoints": False,
    "plots": True,
    "spaces": {},
}


# ----------------------------------------------------------------------------- small helpers


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-3}}`` -> ``{"optimizer.lr": 1e-3}`` (leaves only)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def as_dict(cfg: Any) -> dict:
    """A resolved configuration as a plain dict (read-only use)."""
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def _cfg_get(d: Mapping, key: str, default: Any = None) -> Any:
    """``key`` of a resolved config dict, flat or under ``runtime`` (the schema moves keys)."""
    if key in d:
        return d[key]
    return (d.get("runtime") or {}).get(key, default)


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _quiet_optuna() -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.DEBUG if log.isEnabledFor(logging.DEBUG)
                                 else optuna.logging.ERROR)


# ----------------------------------------------------------------------------- configuration
#: The file with the ``tune:`` section, beside params.yaml (kept out of params.yaml: DVC
#: parses that once per stage on every ``dvc repro``, and no stage reads these spaces).
TUNE_FILE = "tune.yaml"


def load_search_params(params_path: str | os.PathLike,
                       tune_path: str | os.PathLike | None = None) -> dict:
    """params.yaml with its ``tune:`` section from ``tune_path`` (default: ``tune.yaml`` beside
    ``params_path``, when there is one). One-line errors for a missing ``tune_path``, a file
    that is not one ``tune:`` mapping, and a section in both files."""
    from benchmark.config import load_params

    params = load_params(params_path)
    path = Path(tune_path) if tune_path is not None else Path(params_path).with_name(TUNE_FILE)
    if tune_path is None and not path.is_file():
        return params
    data = load_params(path)
    if set(data) != {"tune"} or not isinstance(data["tune"], Mapping):
        raise SewerbenchError(f"{path}: expected one top-level mapping `tune:`, got keys "
                              f"{', '.join(map(str, data)) or 'none'}")
    if "tune" in params:
        raise SewerbenchError(f"{path}: params.yaml {params_path} has a tune: section too; keep one")
    return {**params, "tune": data["tune"]}


def tune_config(params: Mapping[str, Any]) -> dict:
    """The ``tune:`` section (tune.yaml, see :func:`load_search_params`) with defaults filled in."""
    sec = params.get("tune") or {}
    if not isinstance(sec, Mapping):
        raise SewerbenchError("params.yaml: tune: expected a mapping")
    sec = dict(sec)
    if "objective" not in sec and "metric" in sec:  # the first layout's name
        sec["objective"] = sec.pop("metric")
    out = copy.deepcopy(DEFAULTS)
    for k, v in sec.items():
        if v is None:
            continue
        if isinstance(out.get(k), dict) and isinstance(v, Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_objective(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"F2_CIW"`` or ``"F2_CIW,F1_Normal"`` -> metric names (all maximised)."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    hint = (f"choose one of {', '.join(OBJECTIVES)} or two separated by a comma "
            f"(e.g. F2_CIW,F1_Normal)")
    if not parts or any(not p for p in parts):
        raise SewerbenchError(f"--objective: {text!r}: empty metric name; {hint}")
    for p in parts:
        if p not in OBJECTIVES:
            raise SewerbenchError(f"--objective: unknown metric {p!r}; {hint}")
    if len(parts) > 2:
        raise SewerbenchError(f"--objective: {text!r}: at most two metrics; {hint}")
    if len(set(parts)) != len(parts):
        raise SewerbenchError(f"--objective: {text!r}: the same metric twice")
    return tuple(parts)


_SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "profiles"}


def _check_spec(key: str, spec: Any, where: str) -> dict:
    if not isinstance(spec, Mapping):
        raise SewerbenchError(f"{where}.{key}: expected a mapping like {{type: float, low: 0.1, high: 1}}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise SewerbenchError(f"{where}.{key}: unknown field(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(_SPEC_KEYS))})")
    kind = spec.get("type", "float")
    if kind in ("float", "int"):
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise SewerbenchError(f"{where}.{key}: type {kind} needs numeric low and high") from None
        if not low < high:
            raise SewerbenchError(f"{where}.{key}: low ({spec['low']}) must be below high ({spec['high']})")
        if spec.get("log") and low <= 0:
            raise SewerbenchError(f"{where}.{key}: a log range needs low > 0")
        if spec.get("log") and spec.get("step") not in (None, 1):
            raise SewerbenchError(f"{where}.{key}: log and step cannot be combined")
    elif kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise SewerbenchError(f"{where}.{key}: type categorical needs a non-empty list of choices")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise SewerbenchError(f"{where}.{key}: choice {c!r} is not a number, string, bool or null")
    else:
        raise SewerbenchError(f"{where}.{key}: unknown type {kind!r} (float, int or categorical)")
    return dict(spec)


def search_space(params: Mapping[str, Any], method: str, family: str | None = None,
                 profile: str | None = None) -> dict[str, dict]:
    """The search space of ``method``: ``tune.spaces.<family>`` with ``tune.spaces.<method>``
    merged over it (a key set to null there drops it), each key's ``profiles.<profile>`` fields
    applied. Returns ``{dotted key: spec}``."""
    spaces = tune_config(params)["spaces"] or {}
    if not isinstance(spaces, Mapping):
        raise SewerbenchError("params.yaml: tune.spaces: expected a mapping")
    names = [n for n in dict.fromkeys([family, method]) if n and n in spaces]
    if not names:
        raise SewerbenchError(f"params.yaml: tune.spaces: no search space for method {method!r}"
                              + (f" or its family {family!r}" if family else "")
                              + f" (known: {', '.join(spaces) or 'none'})")
    merged: dict[str, Any] = {}
    for n in names:
        for key, spec in (spaces[n] or {}).items():
            if spec is None:
                merged.pop(key, None)
            else:
                merged[key] = (n, spec)
    out: dict[str, dict] = {}
    for key, (n, spec) in merged.items():
        where = f"params.yaml: tune.spaces.{n}"
        spec = _check_spec(key, spec, where)
        per = (spec.pop("profiles", None) or {})
        if not isinstance(per, Mapping):
            raise SewerbenchError(f"{where}.{key}.profiles: expected a mapping of profile -> fields")
        if profile and profile in per:
            spec = _check_spec(key, {**spec, **(per[profile] or {})}, f"{where}.{key}.profiles.{profile}")
            spec.pop("profiles", None)
        out[key] = spec
    if not out:
        raise SewerbenchError(f"params.yaml: tune.spaces: the search space of {method!r} is empty")
    return out


def suggest(trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sample every dotted key of ``space`` from ``trial``."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec.get("type", "float")
        if kind == "float":
            step = spec.get("step")
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=bool(spec.get("log", False)),
                                              step=float(step) if step is not None else None)
        elif kind == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                            log=bool(spec.get("log", False)), step=int(spec.get("step") or 1))
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def corner_samples(space: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every key at its low end / first choice, then at its high end / last choice (checked with
    the resolver before any trial runs)."""
    lo, hi = {}, {}
    for key, spec in space.items():
        if spec.get("type", "float") == "categorical":
            lo[key], hi[key] = spec["choices"][0], spec["choices"][-1]
        elif spec.get("type") == "int":
            lo[key], hi[key] = int(spec["low"]), int(spec["high"])
        else:
            lo[key], hi[key] = float(spec["low"]), float(spec["high"])
    return [lo, hi]


def choose_run(params: Mapping[str, Any], method: str | None, split: str | None,
               run: str | None) -> tuple[str, str, str, dict | None]:
    """``(run name, method, split, constructed entry or None)`` for a search.

    ``--run R``: that entry. Otherwise the first entry of ``runs:`` (params.yaml order) with this
    method, this split and ``train_on: all`` (e.g. ``--method maq2l --split full`` ->
    ``maq2l_full``); if there is none, a new entry ``tune_<method>_<split>`` = ``{method, split}``
    (recipe and profile as the resolver picks them) that ``best.yaml`` then adds to params.yaml.
    """
    runs = params.get("runs") or {}
    if run is not None:
        if run not in runs:
            from benchmark.matrix import find_run

            found = find_run(params, run)
            if found is not None:
                raise SewerbenchError(f"--run: {run} is seed {found.seed} of runs.{found.base} "
                                      f"(runs.{found.base}.seeds); tune --run {found.base}: its trials "
                                      f"train with the first seed")
            raise SewerbenchError(f"--run: params.yaml has no run {run!r} (known: {', '.join(runs) or 'none'})")
        entry_method = (runs[run] or {}).get("method")
        entry_split = str((runs[run] or {}).get("split", "full"))
        if method and entry_method != method:
            raise SewerbenchError(f"--run {run} trains method {entry_method!r}, not --method {method!r}")
        if split is not None and str(split) != entry_split:
            raise SewerbenchError(f"--run {run} trains on split {entry_split!r}, not --split {split!r}")
        return run, str(entry_method), entry_split, None
    if not method:
        raise SewerbenchError("tune: give --method (or --run)")
    split = "full" if split is None else str(split)
    for name, entry in runs.items():
        entry = entry or {}
        if (entry.get("method") == method and str(entry.get("split", "full")) == split
                and entry.get("train_on", "all") == "all"):
            return name, method, split, None
    return f"tune_{method}_{split}", method, split, {"method": method, "split": split}


# ----------------------------------------------------------------------------- storage
class StorageSpec:
    """A parsed ``--storage``: ``kind`` rdb | journal, ``url`` (rdb), ``path`` (journal)."""

    def __init__(self, kind: str, url: str | None = None, path: Path | None = None, display: str = ""):
        self.kind, self.url, self.path, self.display = kind, url, path, display

    @property
    def argument(self) -> str:
        """The value to hand to a worker's --storage."""
        return self.url if self.kind == "rdb" else f"journal://{self.path}"

    def __repr__(self) -> str:
        return f"StorageSpec({self.display})"


def parse_storage(url: str | None, out_dir: str | Path) -> StorageSpec:
    """Check a ``--storage`` value without connecting (one-line errors)."""
    if url is None:
        path = (Path(out_dir) / "study.db").resolve()
        u = f"sqlite:///{path}"
        return StorageSpec("rdb", url=u, display=u)
    url = str(url).strip()
    examples = ("expected e.g. sqlite:///path/study.db, postgresql+psycopg://user:password@host:5432/db "
                "or journal:///path/study.log")
    if url.startswith("journal:"):
        rest = url[len("journal:"):]
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest or rest.endswith("/"):
            raise SewerbenchError(f"--storage: {url!r}: the journal storage needs a file path; {examples}")
        path = Path(rest).expanduser().resolve()
        return StorageSpec("journal", path=path, display=f"journal://{path}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if "://" not in url:
        raise SewerbenchError(f"--storage: {url!r}: not a storage URL; {examples}")
    try:
        u = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise SewerbenchError(f"--storage: {url!r}: cannot parse ({exc}); {examples}") from None
    display = u.render_as_string(hide_password=True)
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "oracle", "mssql"):
        raise SewerbenchError(f"--storage: {display}: unsupported database {backend!r}; {examples}")
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            raise SewerbenchError(f"--storage: {display}: an in-memory SQLite database cannot be shared "
                                  f"by workers nor resumed; give a file, e.g. sqlite:///runs/tune/study.db")
        u = u.set(database=str(Path(u.database).expanduser().resolve()))
    if u.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            u = u.set(drivername="postgresql+psycopg")
    try:
        dialect = u.get_dialect()
    except NoSuchModuleError:
        raise SewerbenchError(f"--storage: {display}: unknown database driver {u.drivername!r}; {examples}") from None
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except ImportError as exc:
        hint = " (pip install 'psycopg[binary]')" if backend == "postgresql" else ""
        raise SewerbenchError(f"--storage: {display}: the database driver is not installed ({exc}){hint}") from None
    return StorageSpec("rdb", url=u.render_as_string(hide_password=False),
                       display=u.render_as_string(hide_password=True))


def _retry_callback(max_retry: int | None):
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


@functools.lru_cache(maxsize=None)
def _journal_class():
    """JournalStorage with the heartbeat Optuna gives RDB storages: the trial's worker records
    the time in a trial system attribute every ``interval`` s; a RUNNING trial silent for
    ``grace`` s is stale (Optuna's fail_stale_trials then fails and retries it)."""
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def __init__(self, backend, interval: int, grace: int, callback) -> None:
            super().__init__(backend)
            self._hb_interval, self._hb_grace, self._hb_callback = int(interval), int(grace), callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, out = time.time(), []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = t.system_attrs.get(HEARTBEAT_ATTR)
                if beat is None and t.datetime_start is not None:
                    beat = t.datetime_start.timestamp()
                if beat is not None and now - float(beat) > self._hb_grace:
                    out.append(t._trial_id)
            return out

        def get_heartbeat_interval(self) -> int | None:
            return self._hb_interval

        def get_heartbeat_stale_trial_callback(self):
            return self._hb_callback

        def get_failed_trial_callback(self):  # Optuna < 4.9 name
            return self._hb_callback

    return HeartbeatJournalStorage


def open_storage(spec: StorageSpec, heartbeat: Mapping[str, Any]):
    """Connect (one-line ``--storage`` errors)."""
    import optuna

    _quiet_optuna()
    interval = max(1, int(heartbeat.get("interval") or 20))
    grace = max(interval + 1, int(heartbeat.get("grace") or 3 * interval))
    max_retry = heartbeat.get("max_retry")
    callback = _retry_callback(None if max_retry is None else int(max_retry))
    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        try:
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(spec.path))
            return _journal_class()(backend, interval, grace, callback)
        except OSError as exc:
            raise SewerbenchError(f"--storage: {spec.display}: cannot open ({exc.strerror or exc})") from None
    import inspect

    engine_kwargs: dict[str, Any] = {}
    if spec.url.startswith("sqlite"):
        Path(spec.url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif spec.url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 15}
        engine_kwargs["pool_pre_ping"] = True
    kw = ("heartbeat_stale_trial_callback"
          if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
          else "failed_trial_callback")
    try:
        return optuna.storages.RDBStorage(spec.url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                                          grace_period=grace, **{kw: callback})
    except Exception as exc:  # noqa: BLE001 - any driver / network error is the user's URL
        msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise SewerbenchError(f"--storage: {spec.display}: cannot open ({msg[0] if msg else type(exc).__name__})") from None


def fail_stale(study) -> None:
    """Fail (and retry) the trials whose worker stopped beating."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


# ----------------------------------------------------------------------------- sampler / pruner
class TrialSeededSampler:
    """A sampler whose state for trial ``n`` is a fresh inner sampler seeded with (seed, n).

    The samplers used here (TPE, NSGA-II) keep no state between trials besides their RNG (they
    read the study's history), so this changes nothing for one worker except making each
    trial's draw depend only on the seed, the trial number and the finished history; K workers
    no longer draw identical random start-up configurations.
    """

    def __init__(self, factory: Callable[[int], Any], seed: int):
        self._factory, self._seed = factory, int(seed)
        self._inner: dict[int, Any] = {}

    def _get(self, trial):
        from benchmark.seed import derive_seed

        s = self._inner.get(trial.number)
        if s is None:
            s = self._factory(derive_seed(self._seed, "tune-trial", trial.number) % (2 ** 32))
            self._inner[trial.number] = s
        return s

    def infer_relative_search_space(self, study, trial):
        return self._get(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._get(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._get(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._get(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        try:
            self._get(trial).after_trial(study, trial, state, values)
        finally:
            self._inner.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the seed is per trial
        pass


def make_sampler(tcfg: Mapping[str, Any], seed: int, multi: bool):
    import optuna

    sc = tcfg.get("sampler") or {}
    base = optuna.samplers.BaseSampler
    if multi:
        pop = max(2, int(sc.get("population_size") or 8))

        def factory(s):
            return optuna.samplers.NSGAIISampler(seed=s, population_size=pop)
    else:
        n_start = int(sc.get("n_startup_trials", 5))
        multivariate = bool(sc.get("multivariate", True))

        def factory(s):
            return optuna.samplers.TPESampler(seed=s, n_startup_trials=n_start, multivariate=multivariate,
                                              constant_liar=True)

    cls = type("TrialSeededSampler", (TrialSeededSampler, base), {})
    return cls(factory, seed)


def make_pruner(name: str, tcfg: Mapping[str, Any], epochs: int):
    import optuna

    pc = tcfg.get("pruner") or {}
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(pc.get("n_startup_trials", 2)),
                                           n_warmup_steps=int(pc.get("n_warmup_steps", 0)),
                                           interval_steps=int(pc.get("interval_steps", 1)))
    if name == "hyperband":
        lo = int(pc.get("min_resource", 1))
        return optuna.pruners.HyperbandPruner(min_resource=lo, max_resource=max(lo + 1, int(epochs)),
                                              reduction_factor=int(pc.get("reduction_factor", 3)))
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- trial bookkeeping
def classify(t) -> str:
    """complete | pruned | failed | lost | interrupted | surplus | running | waiting."""
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "pruned"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    ua = t.user_attrs
    if ua.get("surplus"):
        return "surplus"
    if ua.get("interrupted"):
        return "interrupted"
    if ua.get("fail_reason"):
        return "failed"
    return "lost"


def tally(trials: Iterable) -> dict[str, int]:
    out = {k: 0 for k in ("complete", "pruned", "failed", "lost", "interrupted", "surplus", "running", "waiting")}
    for t in trials:
        out[classify(t)] += 1
    out["done"] = sum(out[k] for k in DONE_CLASSES)
    return out


def epoch_value(row: Mapping[str, Any], metric: str) -> float | None:
    """The epoch's objective: the better of the plain and the EMA model."""
    vals = [v for v in (_finite(row.get(f"val_{metric}")), _finite(row.get(f"ema_val_{metric}")))
            if v is not None]
    return max(vals) if vals else None


def objective_values(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[float]:
    """The trial's values: the epoch and model (plain / EMA) with the best primary metric (the
    first wins ties, like the engine's selection), and the other metric of that same model."""
    primary = objectives[0]
    best = None
    for row in rows:
        for prefix in ("", "ema_"):
            v = _finite(row.get(f"{prefix}val_{primary}"))
            if v is not None and (best is None or v > best[0]):
                best = (v, row, prefix)
    if best is None:
        raise SewerbenchError(f"no epoch has a finite validation {primary}")
    out = [best[0]]
    for m in objectives[1:]:
        v = _finite(best[1].get(f"{best[2]}val_{m}"))
        if v is None:
            raise SewerbenchError(f"the selected epoch has no finite validation {m}")
        out.append(v)
    return out


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    reason = text if name == "SewerbenchError" else f"{name}: {text}"
    return reason[:500]


class _Surplus(Exception):
    """A trial created beyond the requested count by a simultaneous ask: closed untrained."""


# ----------------------------------------------------------------------------- the search
class Search:
    """One study of one run: validated settings, the study, the worker loop and the outputs."""

    def __init__(self, params: Mapping[str, Any], *, method: str | None, run: str | None = None,
                 split: str | None = None, trials: int = 10, study_name: str | None = None,
                 storage: str | None = None, objective: str | None = None, pruner: str | None = None,
                 sets: Mapping[str, Any] | None = None, out: str | Path | None = None,
                 seed: int | None = None, timeout: float | None = None, workers: int = 1):
        from benchmark.config import resolve_run

        self.params = copy.deepcopy(dict(params))
        self.tcfg = tune_config(self.params)
        if int(trials) < 1:
            raise SewerbenchError(f"--trials: must be >= 1, got {trials}")
        if int(workers) < 1:
            raise SewerbenchError(f"--workers: must be >= 1, got {workers}")
        self.n_trials, self.workers = int(trials), int(workers)
        self.objectives = parse_objective(objective or self.tcfg.get("objective") or "F2_CIW")
        self.multi = len(self.objectives) > 1
        pruner = pruner or ("none" if self.multi else str((self.tcfg.get("pruner") or {}).get("name", "median")))
        if pruner not in PRUNERS:
            raise SewerbenchError(f"--pruner: unknown pruner {pruner!r} (choose from {', '.join(PRUNERS)})")
        if self.multi and pruner != "none":
            raise SewerbenchError(f"--pruner {pruner}: Optuna cannot prune a two-objective study; use --pruner none")
        self.pruner_name = pruner
        self.seed = int(self.tcfg.get("seed", 0) if seed is None else seed)
        self.timeout = timeout
        self.poll = float(self.tcfg.get("poll_seconds") or 2.0)
        self._orig_run_names = set(self.params.get("runs") or {})
        self.run_name, self.method, self.split, entry = choose_run(self.params, method, split, run)
        self.sets = copy.deepcopy(dict(sets or {}))
        if entry is not None:
            self.params.setdefault("runs", {})
            self.params["runs"] = {**(self.params.get("runs") or {}), self.run_name: entry}
        self.study_name = study_name or f"{self.run_name}-{'+'.join(self.objectives)}"
        if not re.fullmatch(r"[A-Za-z0-9_.+\-]+", self.study_name):
            raise SewerbenchError(f"--study: {self.study_name!r}: use letters, digits and _ . + - only")
        self.out = Path(out or Path("runs") / "tune" / self.study_name).resolve()
        self.storage = parse_storage(storage, self.out)

        # the base configuration (resolver errors are the user's params / --set)
        base = self._resolve({}, where="--set")
        d = as_dict(base)
        self.family = d.get("family")
        self.profile = d.get("profile")
        self.recipe = d.get("recipe")
        if entry is not None and self.recipe:
            entry["recipe"] = self.recipe  # dvc.yaml's train stage reads recipes.${item.recipe}
        self.space = search_space(self.params, self.method, self.family, self.profile)
        for key in flatten(self.sets):
            if key in self.space:
                log.warning("--set %s: the key is also searched (tune.spaces); the sampled value wins", key)
        epochs = [int(d.get("epochs") or 1)]
        for i, sample in enumerate(corner_samples(self.space)):
            cfg = self._resolve(sample, where=f"params.yaml: tune.spaces ({'low' if i == 0 else 'high'} end)")
            epochs.append(int(as_dict(cfg).get("epochs") or 1))
        self.max_epochs = max(epochs)
        self.device = str(_cfg_get(d, "device", "auto"))
        data = d.get("data") or {}
        for key in ("train_csv", "val_csv"):
            p = data.get(key)
            if p and not Path(p).is_file():
                raise SewerbenchError(f"{p}: not found: the trials train on split {self.split!r} of "
                                      f"{data.get('prepared', 'data/prepared')} (run `dvc repro prepare`, "
                                      f"or point --set data.prepared=DIR at a prepared folder)")
        self._resolve_run = resolve_run
        self.trials_dir = self.out / "trials"
        self.keep_checkpoints = bool(self.tcfg.get("keep_checkpoints", False))
        self.worker_tag = f"{socket.gethostname()}:{os.getpid()}"

    # ------------------------------------------------------------------ configuration of a trial
    def trial_overrides(self, values: Mapping[str, Any]) -> dict:
        """The nested overrides of a trial: ``--set`` <- sampled values <- selection = objective."""
        over = deep_merge(self.sets, dotted_to_nested(values))
        over["selection"] = self.objectives[0]
        return over

    def run_overrides(self, values: Mapping[str, Any]) -> dict:
        """What a trial resolves with: :meth:`trial_overrides`, progress bars off (K workers
        would interleave them) unless ``--set progress=...``."""
        over = self.trial_overrides(values)
        over.setdefault("progress", False)
        return over

    def _resolve(self, values: Mapping[str, Any], where: str):
        from benchmark.config import resolve_run

        try:
            return resolve_run(self.params, self.run_name, overrides=self.run_overrides(values))
        except SewerbenchError as exc:
            raise SewerbenchError(f"{where}: {exc}") from None

    def best_overlay(self, trial) -> dict:
        """``{"runs": {R: {...}}}``: params.yaml keys that re-train ``trial``."""
        over = self.trial_overrides(trial.params)
        entry = dict(self.params["runs"][self.run_name] or {})
        constructed = self.run_name not in (self._orig_runs())
        body = deep_merge({k: entry[k] for k in ("method", "recipe", "split") if k in entry} if constructed else {},
                           over)
        return {"runs": {self.run_name: body}}

    def _orig_runs(self) -> set:
        return self._orig_run_names

    # ------------------------------------------------------------------ study
    def study_meta(self) -> dict:
        return {"method": self.method, "run": self.run_name, "split": self.split,
                "objectives": list(self.objectives), "pruner": self.pruner_name, "seed": self.seed,
                "set": flatten(self.sets), "space": sorted(self.space)}

    def open_study(self, create: bool = True):
        """Create or load the study (checks that a resumed study searches the same thing)."""
        import optuna

        storage = open_storage(self.storage, self.tcfg.get("heartbeat") or {})
        sampler = make_sampler(self.tcfg, self.seed, self.multi)
        pruner = make_pruner(self.pruner_name, self.tcfg, self.max_epochs)
        directions = ["maximize"] * len(self.objectives)
        try:
            study = optuna.create_study(storage=storage, study_name=self.study_name, sampler=sampler,
                                        pruner=pruner, directions=directions, load_if_exists=create)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(storage=storage, study_name=self.study_name, sampler=sampler, pruner=pruner)
        except Exception as exc:  # noqa: BLE001 - database errors on create
            msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise SewerbenchError(f"--storage: {self.storage.display}: cannot create study {self.study_name!r} "
                                  f"({msg[0] if msg else type(exc).__name__})") from None
        if [d.name.lower() for d in study.directions] != directions:
            raise SewerbenchError(f"--study {self.study_name}: the stored study has {len(study.directions)} "
                                  f"objective(s), not {len(self.objectives)}; use another --study")
        meta = study.user_attrs.get(STUDY_ATTR)
        mine = self.study_meta()
        if meta is None:
            study.set_user_attr(STUDY_ATTR, mine)
            with contextlib.suppress(Exception):
                study.set_metric_names(list(self.objectives))
        else:
            for key in ("method", "run", "objectives"):
                if meta.get(key) != mine[key]:
                    raise SewerbenchError(f"--study {self.study_name}: the stored study searches {key} "
                                          f"{meta.get(key)!r}, not {mine[key]!r}; use another --study")
            for key in ("set", "space", "split"):
                if meta.get(key) != mine[key]:
                    log.warning("study %s was created with %s %s; now %s (trials are not comparable)",
                                self.study_name, key, meta.get(key), mine[key])
        return study

    # ------------------------------------------------------------------ one trial
    def _is_surplus(self, study, trial) -> bool:
        ahead = 0
        for t in study.get_trials(deepcopy=False):
            if t.number < trial.number and classify(t) in ("complete", "pruned", "failed", "running"):
                ahead += 1
        return ahead >= self.n_trials

    def objective(self, trial):
        import optuna

        for k in ("fail_reason", "interrupted", "surplus", "pruned_at"):
            if trial.user_attrs.get(k) is not None:  # copied from the trial this one retries
                trial.set_user_attr(k, None)
        trial.set_user_attr("worker", self.worker_tag)
        if self._is_surplus(trial.study, trial):
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number}: the study already has {self.n_trials} trials")
        values = suggest(trial, self.space)
        out = self.trials_dir / f"{trial.number:04d}"
        rows: list[dict] = []
        metric = self.objectives[0]

        def callback(epoch: int, row: Mapping[str, Any]) -> None:
            rows.append(dict(row))
            if self.multi:
                return
            v = epoch_value(row, metric)
            if v is None:
                return
            step = int(row.get("epoch", epoch + 1))
            trial.report(v, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", step)
                raise optuna.TrialPruned(f"after epoch {step}: {metric} {v:.4f}")

        from benchmark.train.engine import train_run

        try:
            cfg = self._resolve_run(self.params, self.run_name, overrides=self.run_overrides(values))
            summary = train_run(cfg, out, callback=callback)
            result = objective_values(rows or [summary.get("final") or {}], self.objectives)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                trial.set_user_attr("interrupted", True)
                trial.study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
            raise
        except Exception as exc:
            reason = _reason(exc)
            trial.set_user_attr("fail_reason", reason)
            self._free_memory()
            raise
        finally:
            with contextlib.suppress(Exception):
                trial.set_user_attr("epochs", len(rows))
                torch = sys.modules.get("torch")
                if torch is not None:  # CPU results are bit-identical only with the same count
                    trial.set_user_attr("torch_threads", int(torch.get_num_threads()))
            if not self.keep_checkpoints:
                for f in out.glob("*.pt"):
                    with contextlib.suppress(OSError):
                        f.unlink()
        return result if self.multi else result[0]

    @staticmethod
    def _free_memory() -> None:
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()

    def _log_trial(self, study, trial) -> None:
        kind = classify(trial)
        t = tally(study.get_trials(deepcopy=False))
        vals = ""
        if trial.values:
            vals = " " + ", ".join(f"{m} {v:.4f}" for m, v in zip(self.objectives, trial.values))
        extra = ""
        if kind == "failed":
            extra = f": {trial.user_attrs.get('fail_reason')}"
        elif kind == "pruned":
            extra = f" after epoch {trial.user_attrs.get('pruned_at')}"
        if kind == "surplus":
            log.debug("trial %d closed: the study already has its %d trials", trial.number, self.n_trials)
            return
        log.info("[%s] trial %d %s%s%s (%d/%d done)", self.worker_tag, trial.number, kind.upper(), vals, extra,
                 t["done"], self.n_trials)

    # ------------------------------------------------------------------ the worker loop
    def work(self, study) -> str:
        """Run trials until the study holds ``n_trials`` done trials: "done", "timeout" or
        "interrupted" (Ctrl-C / SIGTERM; the running trial is closed and queued again)."""
        deadline = None if self.timeout is None else time.time() + float(self.timeout)
        waiting_logged = False
        try:
            while True:
                fail_stale(study)
                t = tally(study.get_trials(deepcopy=False))
                if t["done"] >= self.n_trials:
                    return "done"
                if deadline is not None and time.time() >= deadline:
                    return "timeout"
                if t["done"] + t["running"] >= self.n_trials:
                    if not waiting_logged:
                        log.info("[%s] %d/%d done, %d running elsewhere: waiting for them (or for their "
                                 "workers to go silent)", self.worker_tag, t["done"], self.n_trials, t["running"])
                        waiting_logged = True
                    time.sleep(self.poll)
                    continue
                waiting_logged = False
                study.optimize(self.objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                               callbacks=[self._log_trial])
        except KeyboardInterrupt:
            return "interrupted"

    # ------------------------------------------------------------------ outputs
    def write_outputs(self, study, wall_seconds: float | None = None) -> dict:
        """best.yaml, best.args, summary.md, trials.csv, plots/*.png; returns the tally + best."""
        trials = study.get_trials(deepcopy=False)
        t = tally(trials)
        self.out.mkdir(parents=True, exist_ok=True)
        best = self._best_trials(trials)
        result: dict[str, Any] = {**t, "requested": self.n_trials, "study": self.study_name,
                                  "storage": self.storage.display, "out": str(self.out),
                                  "best_trial": None, "best_values": None}
        notes: list[str] = []
        if best:
            top = best[0]
            result["best_trial"], result["best_values"] = top.number, list(top.values)
            self._write_best(top)
            if self.multi:
                import yaml

                for tr in best:
                    body = yaml.safe_dump(self.best_overlay(tr), sort_keys=False)
                    atomic_write_text(self.out / "pareto" / f"trial_{tr.number:04d}.yaml", body)
        else:
            for f in ("best.yaml", "best.args"):
                with contextlib.suppress(FileNotFoundError):
                    (self.out / f).unlink()
            notes.append("no completed trial yet: no best.yaml")
        self._write_csv(study)
        plots = self._write_plots(study, notes) if self.tcfg.get("plots", True) else []
        atomic_write_text(self.out / "summary.md", self._summary_md(trials, t, best, plots, notes, wall_seconds))
        return result

    def _best_trials(self, trials) -> list:
        from optuna.trial import TrialState

        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        if not done:
            return []
        if not self.multi:
            return [max(done, key=lambda t: (t.values[0], -t.number))]
        front = []
        for t in done:
            dominated = any(all(o >= v for o, v in zip(u.values, t.values)) and any(o > v for o, v in zip(u.values, t.values))
                            for u in done)
            if not dominated:
                front.append(t)
        return sorted(front, key=lambda t: (-t.values[0], t.number))

    def retrain_commands(self, trial) -> tuple[list[str], str, str]:
        """(``dvc exp run`` arguments, the dvc one-liner, the ``sewerbench train`` one-liner)."""
        body = self.best_overlay(trial)["runs"][self.run_name]
        leaves = flatten(body)
        args = []
        for key, v in leaves.items():
            args += ["-S", f"++runs.{self.run_name}.{key}={hydra_value(v)}"]
        args += [f"train@{self.run_name}", f"evaluate@{self.run_name}"]
        from benchmark.matrix import seed_groups

        for name in (seed_groups({self.run_name: self.params["runs"][self.run_name]}).get(self.run_name) or [])[1:]:
            args += [f"train_seed@{name}", f"evaluate_seed@{name}"]   # its further seeds
        rel = os.path.relpath(self.out / "best.args")
        threads = trial.user_attrs.get("torch_threads")
        env = f"OMP_NUM_THREADS={threads} " if threads else ""
        dvc = f"{env}dvc exp run $(cat {rel})"
        sets = " ".join(f"--set {_shell_word(f'{k}={yaml_value(v)}')}" for k, v in leaves.items()
                        if k not in ("method", "recipe", "split"))
        train = f"{env}sewerbench train {self.run_name} {sets}".strip()
        if self.run_name not in self._orig_runs():
            train = f"(after adding runs.{self.run_name} from best.yaml to params.yaml) " + train
        return args, dvc, train

    def _write_best(self, trial) -> None:
        import yaml

        args, dvc, train = self.retrain_commands(trial)
        vals = ", ".join(f"{m} {v:.6g}" for m, v in zip(self.objectives, trial.values))
        head = [f"# sewerbench tune: study {self.study_name}, best trial {trial.number} ({vals}; validation split)",
                f"# A params.yaml overlay: these runs.{self.run_name} keys (the trial's sampled values over",
                "# the --set overrides, selection = the objective) re-train the trial. Through DVC:",
                f"#   {dvc}",
                "# Without DVC:",
                f"#   {train}",
                "# Drop keys that came from --set (e.g. a shortened epochs) to train the full recipe."]
        if trial.user_attrs.get("torch_threads"):
            head.append(f"# The trial ran with {trial.user_attrs['torch_threads']} torch thread(s): on a CPU the "
                        f"re-train repeats it bit for bit with the same count (OMP_NUM_THREADS).")
        body = yaml.safe_dump(self.best_overlay(trial), sort_keys=False, default_flow_style=False)
        atomic_write_text(self.out / "best.yaml", "\n".join(head) + "\n" + body)
        atomic_write_text(self.out / "best.args", "\n".join(args) + "\n")

    def _write_csv(self, study) -> None:
        attrs = ("number", "values" if self.multi else "value", "state", "params", "user_attrs", "duration",
                 "datetime_start", "datetime_complete")
        try:
            df = study.trials_dataframe(attrs=attrs)
        except Exception:  # noqa: BLE001 - an empty study has no columns
            import pandas as pd
            df = pd.DataFrame()
        if len(df):
            df = df.rename(columns=lambda c: c.replace("params_", "param.").replace("user_attrs_", "attr."))
            if self.multi:
                df = df.rename(columns={f"values_{i}": m for i, m in enumerate(self.objectives)})
            if "state" in df:
                df["state"] = df["state"].astype(str)
            df.insert(2, "class", [classify(t) for t in study.get_trials(deepcopy=False)])
            if "duration" in df:
                df["duration"] = df["duration"].dt.total_seconds()
        atomic_to_csv(df, self.out / "trials.csv")

    def _write_plots(self, study, notes: list[str]) -> list[tuple[str, str]]:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from optuna.trial import TrialState
        from optuna.visualization import matplotlib as ovm

        pdir = self.out / "plots"
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        jobs: list[tuple[str, str, Callable[[], Any]]] = []
        if not complete:
            notes.append("plots skipped: no completed trial yet")
            return []
        if self.multi:
            for i, m in enumerate(self.objectives):
                jobs.append((f"history_{m}.png", f"optimisation history ({m})",
                             lambda i=i, m=m: ovm.plot_optimization_history(study, target=lambda t: t.values[i],
                                                                            target_name=m)))
            jobs.append(("pareto_front.png", "Pareto front",
                         lambda: ovm.plot_pareto_front(study, target_names=list(self.objectives))))
        else:
            m = self.objectives[0]
            jobs.append(("history.png", "optimisation history",
                         lambda: ovm.plot_optimization_history(study, target_name=m)))
            if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
                jobs.append(("intermediate_values.png", "per-epoch reports (pruning)",
                             lambda: ovm.plot_intermediate_values(study)))
        target = (lambda t: t.values[0]) if self.multi else None
        if len(complete) >= 2:
            jobs.append(("importances.png", "parameter importances",
                         lambda: ovm.plot_param_importances(study, target=target, target_name=self.objectives[0])))
        else:
            notes.append(f"parameter importances skipped: they need at least 2 completed trials "
                         f"(the study has {len(complete)})")
        jobs.append(("parallel_coordinate.png", "parallel coordinates",
                     lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=self.objectives[0])))
        written = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, title, fn in jobs:
                try:
                    ax = fn()
                    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                    with atomic_path(pdir / name) as tmp:
                        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
                    plt.close(fig)
                    written.append((name, title))
                except Exception as exc:  # noqa: BLE001 - a plot must not lose the study's outputs
                    notes.append(f"{title} skipped: {' '.join(str(exc).split())[:200]}")
                    plt.close("all")
        return written

    def _summary_md(self, trials, t, best, plots, notes, wall_seconds) -> str:
        from optuna.trial import TrialState

        obj = ", ".join(self.objectives)
        lines = [f"# Tuning study `{self.study_name}`", "",
                 f"- method `{self.method}`, run `{self.run_name}`, split `{self.split}`, profile `{self.profile}`",
                 f"- objective: {obj} (validation split, maximised; per epoch the better of plain and EMA)",
                 f"- sampler: {'NSGA-II' if self.multi else 'TPE'} seeded per trial from seed {self.seed}; "
                 f"pruner: {self.pruner_name}",
                 f"- storage: `{self.storage.display}`",
                 f"- `--set`: {', '.join(f'`{k}={v}`' for k, v in flatten(self.sets).items()) or 'none'}",
                 "", "## Trials", "",
                 f"- requested: {self.n_trials}; done: {t['done']} (complete {t['complete']}, pruned {t['pruned']}, "
                 f"failed {t['failed']})",
                 f"- pruned fraction: {t['pruned'] / t['done']:.2f}" if t["done"] else "- pruned fraction: -",
                 f"- not counted: lost (worker died, retried) {t['lost']}, interrupted (queued again) "
                 f"{t['interrupted']}, surplus {t['surplus']}; now running {t['running']}, waiting {t['waiting']}"]
        durations = [(x.datetime_complete - x.datetime_start).total_seconds() for x in trials
                     if x.datetime_start and x.datetime_complete]
        starts = [x.datetime_start for x in trials if x.datetime_start]
        ends = [x.datetime_complete for x in trials if x.datetime_complete]
        if durations:
            lines.append(f"- trial time: {sum(durations):.0f} s in total; first start to last end "
                         f"{(max(ends) - min(starts)).total_seconds():.0f} s")
        if wall_seconds is not None:
            lines.append(f"- this command: {wall_seconds:.0f} s wall time")
        lines += ["", "## Best trial" + ("s (Pareto front)" if self.multi else ""), ""]
        if best:
            top = best[0]
            vals = ", ".join(f"{m} = {v:.4f}" for m, v in zip(self.objectives, top.values))
            lines.append(f"Trial {top.number}: {vals} (epochs {top.user_attrs.get('epochs')}, "
                         f"worker {top.user_attrs.get('worker')}).")
            lines += ["", "| key | value |", "|---|---|"]
            for k, v in flatten(self.best_overlay(top)["runs"][self.run_name]).items():
                src = "sampled" if k in top.params else "--set / fixed"
                lines.append(f"| `{k}` | `{v}` ({src}) |")
            args, dvc, train = self.retrain_commands(top)
            lines += ["", "Re-train it: `best.yaml` is a params.yaml overlay;", "",
                      "```bash", dvc, train, "```"]
            if self.multi:
                lines += ["", "| trial | " + " | ".join(self.objectives) + " |",
                          "|---|" + "---|" * len(self.objectives)]
                for tr in best:
                    lines.append(f"| {tr.number} | " + " | ".join(f"{v:.4f}" for v in tr.values) + " |")
                lines.append("")
                lines.append("`best.yaml` holds the front's best trial in the first objective; `pareto/` holds each.")
        else:
            lines.append("No completed trial yet.")
        failed = [x for x in trials if classify(x) in ("failed", "lost", "interrupted")]
        if failed:
            lines += ["", "## Failed trials", "", "| trial | kind | reason |", "|---|---|---|"]
            for x in failed:
                kind = classify(x)
                reason = x.user_attrs.get("fail_reason") or {
                    "lost": "worker died (no heartbeat); retried with the same parameters",
                    "interrupted": "stopped by Ctrl-C / SIGTERM; queued again"}.get(kind, "")
                lines.append(f"| {x.number} | {kind} | {str(reason).replace('|', '/')} |")
        lines += ["", "## All trials", ""]
        keys = list(self.space)
        lines.append("| trial | state | " + " | ".join(self.objectives) + " | epochs | s | " + " | ".join(
            f"`{k}`" for k in keys) + " |")
        lines.append("|---" * (4 + len(self.objectives) + len(keys)) + "|")
        for x in trials:
            vals = [f"{v:.4f}" for v in x.values] if x.values and x.state == TrialState.COMPLETE else (
                ["-"] * len(self.objectives))
            if x.state == TrialState.PRUNED and x.intermediate_values:
                last = x.intermediate_values[max(x.intermediate_values)]
                vals = [f"({last:.4f})"] + ["-"] * (len(self.objectives) - 1)
            dur = (f"{(x.datetime_complete - x.datetime_start).total_seconds():.0f}"
                   if x.datetime_start and x.datetime_complete else "-")
            ps = [_fmt(x.params.get(k)) for k in keys]
            lines.append(f"| {x.number} | {classify(x)} | " + " | ".join(vals)
                         + f" | {x.user_attrs.get('epochs', '-')} | {dur} | " + " | ".join(ps) + " |")
        if plots or notes:
            lines += ["", "## Plots", ""]
            for name, title in plots:
                lines.append(f"![{title}](plots/{name})")
            for n in notes:
                lines.append(f"- note: {n}")
        lines += ["", "The study is in its storage: `optuna-dashboard " + (
            str(self.storage.path) if self.storage.kind == "journal" else self.storage.display) + "` shows it live.", ""]
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def yaml_value(v: Any) -> str:
    """A value as ``--set`` / YAML reads it back."""
    import yaml

    text = yaml.safe_dump(v, default_flow_style=True, width=10 ** 6).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text.removesuffix("...").strip()


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")


def hydra_value(v: Any) -> str:
    """A value in Hydra's override grammar (``dvc exp run -S``), without whitespace."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if _PLAIN.fullmatch(s) and s.lower() not in ("null", "true", "false", "nan", "inf"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _shell_word(s: str) -> str:
    import shlex

    return shlex.quote(s)


# ----------------------------------------------------------------------------- processes
def worker_threads(tcfg: Mapping[str, Any], workers: int) -> int | None:
    """torch threads per worker: ``tune.threads_per_worker``, else the CPUs shared out."""
    n = tcfg.get("threads_per_worker")
    if n:
        return max(1, int(n))
    if workers <= 1:
        return None
    return max(1, usable_cpus() // workers)


def _gpu_list(device: str) -> list[str]:
    """The GPUs to deal out among workers: CUDA_VISIBLE_DEVICES, else nvidia-smi's list (not
    torch: initialising CUDA here would pin this process before its own share is set)."""
    if device.startswith("cpu") or device.startswith("cuda:"):
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM this worker when the command that started it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def install_stop_handlers() -> None:
    """The first SIGINT / SIGTERM stops the worker cleanly (KeyboardInterrupt); later ones are
    ignored so that the cleanup (closing the running trial, queueing it again) completes."""

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def run_workers(search: Search, study, worker_argv: Callable[[int], list[str]]) -> tuple[str, list[int]]:
    """``--workers K``: this process is worker 0 and starts K - 1 more processes of the same
    command on this machine (same study), then waits for them. Returns ("done" | "interrupted"
    | "timeout" | "incomplete", the other workers' exit codes)."""
    threads = worker_threads(search.tcfg, search.workers)
    gpus = _gpu_list(search.device)
    root = str(Path(__file__).resolve().parents[1])
    procs: list[subprocess.Popen] = []
    for i in range(1, search.workers):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        if threads:
            env[THREADS_ENV] = str(threads)
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        procs.append(subprocess.Popen(worker_argv(i), env=env,
                                      preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None))
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    set_threads(threads)
    search.worker_tag = f"w0@{search.worker_tag}"
    log.info("%d workers on study %s: this process and pids %s%s%s", search.workers, search.study_name,
             ", ".join(str(p.pid) for p in procs), f"; {threads} torch threads each" if threads else "",
             f"; GPUs {','.join(gpus)}" if gpus else "")
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install_stop_handlers()
    state = "interrupted"
    try:
        state = search.work(study)
        if state != "interrupted":
            while any(p.poll() is None for p in procs):
                time.sleep(0.2)
    except KeyboardInterrupt:
        state = "interrupted"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if state == "interrupted":
            log.info("interrupted: stopping the workers (their running trials are queued again)")
            for p in procs:
                if p.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(signal.SIGINT)
        deadline = time.time() + 120
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    codes = [p.returncode for p in procs]
    t = tally(study.get_trials(deepcopy=False))
    if t["done"] >= search.n_trials:
        bad = [c for c in codes if c not in (0, None)]
        if bad:
            log.warning("the study is complete, but %d worker(s) exited with %s", len(bad), bad)
        return "done", codes
    if state == "done":  # this worker saw the count reached, yet the study lost trials since
        state = "incomplete"
    return state, codes
