"""The engine's entry point: ``train_run(cfg, out_dir)`` trains one resolved run
(:class:`benchmark.config.RunConfig`) and writes its run folder::

    config.json  checkpoint.pt (latest, atomic)  best.pt  history.csv  dvclive/
    scores_val.csv  [scores_val_sub.csv]  scores_test.csv  train_summary.json

Neural methods go through :mod:`benchmark.train.loop` (with :mod:`.selection` for model
selection and early stopping, :mod:`.runtime` for the device-side helpers and inference);
scikit-learn methods through :mod:`benchmark.train.sklearn_run`. Scores are written by
:mod:`benchmark.train.inference`, the same path ``sewerbench predict --run`` takes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from benchmark.config import RunConfig
import benchmark.train.distributed as distributed


def train_run(cfg: RunConfig | Mapping[str, Any], out_dir: str | os.PathLike, resume: bool = False,
              callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train run ``cfg`` into ``out_dir``; returns the train summary dict.

    ``resume``: continue from ``out_dir/checkpoint.pt`` when it exists (else start fresh).
    ``callback(epoch, row)`` runs after every epoch's checkpoint with the epoch's history row
    (it may raise, e.g. ``optuna.TrialPruned``; the run folder then holds that epoch's checkpoint).
    """
    from benchmark.train.loop import Trainer
    from benchmark.train.sklearn_run import train_sklearn

    if not isinstance(cfg, RunConfig):
        cfg = RunConfig.from_dict(cfg)
    out_dir = Path(out_dir)
    if cfg.kind == "sklearn":
        return train_sklearn(cfg, out_dir)
    ctx = distributed.init(cfg.runtime.device)
    try:
        return Trainer(cfg, out_dir, ctx, resume, callback).run()
    finally:
        ctx.close()
