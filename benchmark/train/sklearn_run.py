"""The scikit-learn path of the engine (Myrans2018: GIST features + Extra Trees).

Images are read at the run's resolution chunk by chunk; a model whose spec says it has a
feature stage (GIST) turns each chunk into 512 floats per image right away, so the whole
split never sits in memory as pixels.
"""
from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import torch

from benchmark import seed as seeding
from benchmark.config import RunConfig
from benchmark.io import atomic_path, atomic_write_json
from benchmark.train.data import image_source, targets_of, train_val_frames
from benchmark.train.runtime import build_model
from benchmark.train.selection import eval_metrics, metric_key
from benchmark.train.summary import make_summary
from benchmark.train.tracking import Tracker

SK_CHUNK = 2048
MODEL_FILE = "model.pkl"


def _sk_chunks(df, images, cfg: RunConfig, chunk: int = SK_CHUNK):
    """Yield ((n, H, W, 3) uint8 images at the run's resolution, filenames) in order."""
    from benchmark.data.dataset import SewerMLDataset
    from benchmark.data.transforms import build_transform

    size = cfg.image_size
    ds = SewerMLDataset(df, images, None)
    need_resize = getattr(images, "image_size", None) != (size, size)
    tf = build_transform("none", size, False) if need_resize else None
    for lo in range(0, len(ds), chunk):
        arrs = []
        for i in range(lo, min(len(ds), lo + chunk)):
            img = ds.load(i)
            if tf is not None:
                img = (tf(img).permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            arrs.append(img)
        yield np.stack(arrs), ds.filenames[lo:lo + chunk]


def _has_features(cfg: RunConfig) -> bool:
    from methods.registry import get_spec

    return get_spec(cfg.method).feature_stage


def sklearn_inputs(df, images, cfg: RunConfig, model=None) -> tuple[np.ndarray, list[str]]:
    """Model inputs of a frame and their filenames: the model's features computed chunk by
    chunk when the method has a feature stage, else the (N, H, W, 3) uint8 images."""
    xs, names = [], []
    use_features = model is not None and _has_features(cfg)
    for x, n in _sk_chunks(df, images, cfg):
        xs.append(model.features(x) if use_features else x)
        names += list(n)
    if not xs:
        size = cfg.image_size
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.concatenate(xs), names


def sklearn_predict(model, df, images, cfg: RunConfig) -> tuple[list[str], np.ndarray]:
    x, names = sklearn_inputs(df, images, cfg, model)
    probs = model.predict_proba_features(x) if _has_features(cfg) else model.predict_proba(x)
    return names, np.asarray(probs, dtype=np.float64).reshape(len(names), -1)


def save_sklearn(model, out_dir: Path) -> None:
    with atomic_path(Path(out_dir) / MODEL_FILE) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_sklearn(out_dir: Path):
    with open(Path(out_dir) / MODEL_FILE, "rb") as fh:
        return pickle.load(fh)


def train_sklearn(cfg: RunConfig, out_dir: Path) -> dict:
    from benchmark.train.inference import predict_splits

    t0 = time.perf_counter()
    seeding.seed_everything(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", cfg.to_dict())
    images = image_source(cfg)
    train_df, val_df = train_val_frames(cfg)
    model = build_model(cfg)
    t_fit = time.perf_counter()
    x, _ = sklearn_inputs(train_df, images, cfg, model)
    y = targets_of(train_df, cfg.binary)
    y = (y[:, 0] if cfg.binary else y).astype(np.int64)
    if _has_features(cfg):
        model.fit_features(x, y)
    else:
        model.fit(x, y)
    fit_s = time.perf_counter() - t_fit
    save_sklearn(model, out_dir)

    _, pv = sklearn_predict(model, val_df, images, cfg)
    yv = targets_of(val_df, cfg.binary)
    metrics = {f"val_{k}": v for k, v in eval_metrics(pv, yv, cfg.binary).items()}
    row = {"epoch": 1, "train_seconds": fit_s, "images_per_s": len(x) / max(fit_s, 1e-9), **metrics}
    tracker = Tracker(out_dir, True, cfg.to_dict())
    tracker.log_epoch(row)
    tracker.close()
    written = predict_splits(cfg, model, images, None, None, out_dir)
    summary = make_summary(
        cfg, best_epoch=1, selected_model="plain", selection_score=metrics.get(metric_key(cfg.selection)),
        epochs_run=1, stop_reason="fitted", wall_seconds=time.perf_counter() - t0, train_seconds=fit_s,
        train_images_seen=int(len(x)), device=torch.device("cpu"), world_size=1, params=None,
        trainable_params=None, reference_num_params=None, train_images=int(len(x)), val_images=int(len(pv)),
        final=row, scores=written)
    atomic_write_json(out_dir / "train_summary.json", summary)
    return summary
