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
from benchmark.errors import SewerbenchError
import benchmark.train.distributed as distributed


def prepare_run_dir(cfg: RunConfig, out_dir: Path, resume: bool, force: bool) -> None:
    """Refuse an output folder that is, holds or lies inside an input, a folder that another
    command made, and a finished run (unless resumed, a no-op, or ``force``)."""
    from benchmark.artifacts import TRAIN_SUMMARY_FILE
    from benchmark.io import check_disjoint_from_inputs, check_replaceable_dir

    d = cfg.data
    check_disjoint_from_inputs(out_dir, [("data.prepared", d.prepared), ("data.images", d.images),
                                         ("data.cache", d.cache)])
    check_replaceable_dir(out_dir, "train", force=force,
                          recognise=lambda p: (p / "config.json").is_file() or (p / "checkpoint.pt").is_file())
    if (out_dir / TRAIN_SUMMARY_FILE).is_file() and not (resume or force):
        raise SewerbenchError(f"{out_dir}: holds a finished run ({TRAIN_SUMMARY_FILE}); resume it (--resume), "
                              "choose another --out, or replace it with --force")


def train_run(cfg: RunConfig | Mapping[str, Any], out_dir: str | os.PathLike, resume: bool = False,
              callback: Callable[[int, dict], None] | None = None, force: bool = False) -> dict:
    """Train run ``cfg`` into ``out_dir``; returns the train summary dict.

    ``resume``: continue from ``out_dir/checkpoint.pt`` when it exists (else start fresh).
    ``callback(epoch, row)`` runs after every epoch's checkpoint with the epoch's history row
    (it may raise, e.g. ``optuna.TrialPruned``; the run folder then holds that epoch's checkpoint).
    ``force``: replace a finished run or a folder that another command made.
    """
    from benchmark.train.loop import Trainer
    from benchmark.train.runtime import intra_op_threads
    from benchmark.train.sklearn_run import train_sklearn

    if not isinstance(cfg, RunConfig):
        cfg = RunConfig.from_dict(cfg)
    out_dir = Path(out_dir)
    # a bad thread count is refused before the run folder is touched
    with intra_op_threads(cfg.runtime.threads, f"run {cfg.run}: threads"):
        prepare_run_dir(cfg, out_dir, resume, force)
        if cfg.kind == "sklearn":
            return train_sklearn(cfg, out_dir)
        ctx = distributed.init(cfg.runtime.device)
        try:
            return Trainer(cfg, out_dir, ctx, resume, callback).run()
        finally:
            ctx.close()
