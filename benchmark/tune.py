"""Hyper-parameter search with Optuna over any method of the registry.

The search space of a method comes from ``params.yaml`` ``tune.spaces.<method>`` or, failing
that, ``tune.spaces.<family>``: a mapping from a dotted config key (``optimizer.lr``,
``loss.gamma_neg``...) to ``{type: float|int|categorical, low, high, log, step, choices}``.
Each trial resolves the run configuration (``benchmark.config.resolve_run``), applies the
sampled values, and trains with ``benchmark.train.train_run``; its per-epoch callback
reports the objective metric (the better of plain and EMA model) to Optuna and raises ``optuna.TrialPruned`` when the pruner
says so. The sampler is a seeded TPE sampler, the pruner a median pruner.

Outputs (atomic): ``<out>/best_params.json`` and ``<out>/trials.csv``.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping


from benchmark.errors import SewerbenchError
from benchmark.io import atomic_to_csv, atomic_write_json

log = logging.getLogger(__name__)

TrainFn = Callable[..., Mapping[str, Any]]

DEFAULT_TUNE = {"seed": 0, "metric": "F2_CIW", "direction": "maximize",
                "pruner": {"n_startup_trials": 2, "n_warmup_steps": 0}, "spaces": {}}


def tune_config(params: Mapping[str, Any]) -> dict:
    """The ``tune:`` section with defaults filled in."""
    sec = dict(params.get("tune") or {})
    out = copy.deepcopy(DEFAULT_TUNE)
    out.update({k: v for k, v in sec.items() if v is not None})
    return out


def search_space(params: Mapping[str, Any], method: str, family: str | None = None) -> dict:
    """The search space for ``method`` (method entry first, then its family)."""
    spaces = tune_config(params)["spaces"] or {}
    if method in spaces:
        return dict(spaces[method])
    if family and family in spaces:
        return dict(spaces[family])
    raise SewerbenchError(f"params.yaml: tune.spaces: no search space for method {method!r}"
                          + (f" or family {family!r}" if family else ""))


def suggest(trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sample every dotted key of ``space`` from ``trial``."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec.get("type", "float")
        if kind == "float":
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=bool(spec.get("log", False)),
                                              step=spec.get("step"))
        elif kind == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                            log=bool(spec.get("log", False)),
                                            step=int(spec.get("step", 1)))
        elif kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        else:
            raise SewerbenchError(f"params.yaml: tune.spaces: {key}: unknown type {kind!r}")
    return values


def apply_dotted(cfg: dict, values: Mapping[str, Any]) -> dict:
    """Copy of ``cfg`` with ``a.b.c`` keys set."""
    out = copy.deepcopy(cfg)
    for key, v in values.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = v
    return out


def objective_value(summary: Mapping[str, Any], metric: str) -> float:
    """The objective from a ``train_run`` summary (tolerant of a few layouts)."""
    if summary.get("selection_metric") == metric and isinstance(summary.get("selection_score"), (int, float)):
        return float(summary["selection_score"])
    for path in ((f"best_{metric}",), ("best", metric), ("best_metrics", metric), (metric,),
                 ("val", metric), ("final", f"val_{metric}"), ("final", metric)):
        node: Any = summary
        for p in path:
            node = node.get(p) if isinstance(node, Mapping) else None
        if isinstance(node, (int, float)):
            return float(node)
    if summary.get("selection") == metric and isinstance(summary.get("best_value"), (int, float)):
        return float(summary["best_value"])
    raise SewerbenchError(f"training summary has no {metric!r} (keys: {', '.join(summary)})")


def epoch_metric(metrics: Mapping[str, Any], metric: str, direction: str = "maximize") -> float | None:
    """The epoch's objective: the better of the plain and EMA model (as model selection does)."""
    vals = []
    for key in (metric, f"val_{metric}", f"ema_val_{metric}"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not math.isnan(float(v)):
            vals.append(float(v))
    if not vals:
        return None
    return max(vals) if direction == "maximize" else min(vals)


def run_study(params: Mapping[str, Any], method: str, trials: int, out_dir: str | Path, *,
              run: str | None = None, split: str = "full", study_name: str | None = None,
              storage: str | None = None, metric: str | None = None, seed: int | None = None,
              train_fn: TrainFn | None = None, resolve_fn: Callable[..., dict] | None = None,
              timeout: float | None = None) -> dict:
    """Run ``trials`` Optuna trials; write best params + trials CSV; return the summary."""
    import optuna

    tcfg = tune_config(params)
    metric = metric or tcfg["metric"]
    direction = tcfg.get("direction", "maximize")
    seed = int(tcfg["seed"] if seed is None else seed)
    out_dir = Path(out_dir)

    if resolve_fn is None:
        from benchmark.config import resolve_run as resolve_fn  # type: ignore[no-redef]
    if train_fn is None:
        from benchmark.train import train_run as train_fn  # type: ignore[no-redef]

    p = copy.deepcopy(dict(params))
    runs = dict(p.get("runs") or {})
    if run is None:
        run = f"tune_{method}_{split}"
        runs[run] = {"method": method, "split": split}
    elif run not in runs:
        raise SewerbenchError(f"params.yaml: runs: no run named {run!r}")
    p["runs"] = runs
    base = resolve_fn(p, run)
    space = search_space(params, base.get("method", method), base.get("family"))

    pr = tcfg.get("pruner") or {}
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction=direction, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=int(pr.get("n_startup_trials", 2)),
                                           n_warmup_steps=int(pr.get("n_warmup_steps", 0))))

    def objective(trial) -> float:
        values = suggest(trial, space)
        cfg = apply_dotted(base, values)
        cfg["seed"] = int(base.get("seed", 0))
        trial_dir = out_dir / "trials" / f"{trial.number:04d}"

        seen: list[float] = []

        def callback(epoch: int, metrics: Mapping[str, Any]) -> None:
            v = epoch_metric(metrics, metric, direction)
            if v is None:
                return
            seen.append(v)
            trial.report(v, step=int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric}={v:.4f})")

        summary = train_fn(cfg, trial_dir, callback=callback)
        if seen:  # the best epoch, like the engine's model selection
            return max(seen) if direction == "maximize" else min(seen)
        return objective_value(summary, metric)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=int(trials), timeout=timeout, catch=())

    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "datetime_start",
                                       "datetime_complete"))
    df = df.rename(columns=lambda c: c.replace("params_", "param."))
    if "state" in df:
        df["state"] = df["state"].astype(str)
    atomic_to_csv(df, out_dir / "trials.csv")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    result = {"method": base.get("method", method), "run": run, "metric": metric,
              "direction": direction, "seed": seed, "study_name": study.study_name,
              "n_trials": len(study.trials), "n_complete": len(complete),
              "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)}
    if complete:
        result.update({"best_value": study.best_value, "best_params": study.best_params,
                       "best_trial": study.best_trial.number})
    else:
        result.update({"best_value": None, "best_params": {}, "best_trial": None})
    atomic_write_json(out_dir / "best_params.json", result)
    return result
