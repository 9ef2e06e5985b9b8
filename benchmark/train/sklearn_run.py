"""The scikit-learn path of the engine (Myrans2018): fit on the training split's features (with
the reference's grid search on the validation split where the model has one), write the fitted
model, the search table (``grid_search.json``) and the scores (see :mod:`benchmark.train.sklearn_io`)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmark import seed as seeding
from benchmark.config import RunConfig
from benchmark.io import atomic_write_json, claim_dir
from benchmark.scores import write_scores
from benchmark.train.data import image_source, read_frame, targets_of, train_val_frames
from benchmark.train.inference import eval_sets
from benchmark.train.runtime import build_model
from benchmark.train.selection import eval_metrics, metric_key
from benchmark.train.sklearn_io import (has_feature_stage, predict_inputs, save_sklearn, sklearn_inputs,
                                        sklearn_predict)
from benchmark.train.summary import make_summary
from benchmark.train.tracking import Tracker

GRID_FILE = "grid_search.json"


def train_sklearn(cfg: RunConfig, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    seeding.seed_everything(cfg.seed)
    images = image_source(cfg)
    train_df, val_df = train_val_frames(cfg)
    model = build_model(cfg)
    claim_dir(out_dir, "train", run=cfg.run)
    atomic_write_json(out_dir / "config.json", cfg.to_dict())
    t_fit = time.perf_counter()
    x, _ = sklearn_inputs(train_df, images, cfg, model)
    y = targets_of(train_df, cfg.binary)
    y = (y[:, 0] if cfg.binary else y).astype(np.int64)
    xv, val_names = sklearn_inputs(val_df, images, cfg, model)
    yv = targets_of(val_df, cfg.binary)
    search = bool(getattr(model, "needs_validation", False))
    if search:
        yv_fit = (yv[:, 0] if cfg.binary else yv).astype(np.int64)
        if has_feature_stage(cfg):
            model.fit_features(x, y, xv, yv_fit)
        else:
            model.fit(x, y, xv, yv_fit)
    elif has_feature_stage(cfg):
        model.fit_features(x, y)
    else:
        model.fit(x, y)
    fit_s = time.perf_counter() - t_fit
    save_sklearn(model, out_dir)
    if getattr(model, "search_results_", None) is not None:
        atomic_write_json(out_dir / GRID_FILE, {
            "protocol": cfg.protocol, "rows": model.search_results_,
            "kept": {k: getattr(model, k) for k in ("n_estimators", "max_depth", "max_features")}})

    pv = predict_inputs(model, xv, cfg)
    metrics = {f"val_{k}": v for k, v in eval_metrics(pv, yv, cfg.binary).items()}
    row = {"epoch": 1, "train_seconds": fit_s, "images_per_s": len(x) / max(fit_s, 1e-9), **metrics}
    tracker = Tracker(out_dir, True, cfg.to_dict())
    tracker.log_epoch(row)
    tracker.close()
    # the scores files (as inference.predict_splits), reusing the validation features above
    written = {}
    for name, csv in eval_sets(cfg).items():
        df = read_frame(csv, require_labels=False)
        if df["Filename"].astype(str).tolist() == val_names:
            names, probs = val_names, pv
        else:
            names, probs = sklearn_predict(model, df, images, cfg)
        write_scores(Path(out_dir) / f"scores_{name}.csv", names, probs, cfg.binary)
        written[name] = f"scores_{name}.csv"
    summary = make_summary(
        cfg, best_epoch=1, selected_model="plain", selection_score=metrics.get(metric_key(cfg.selection)),
        epochs_run=1, stop_reason="fitted", wall_seconds=time.perf_counter() - t0, train_seconds=fit_s,
        train_images_seen=int(len(x)), device=torch.device("cpu"), world_size=1, params=None,
        trainable_params=None, reference_num_params=None, train_images=int(len(x)), val_images=int(len(pv)),
        final=row, scores=written)
    atomic_write_json(out_dir / "train_summary.json", summary)
    return summary
