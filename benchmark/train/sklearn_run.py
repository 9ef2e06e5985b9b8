"""The scikit-learn path of the engine (Myrans2018: GIST features + Extra Trees).

Images are read chunk by chunk; a model whose spec says it has a feature stage (GIST) turns
each chunk into 512 floats per image right away, so the whole split never sits in memory as
pixels. A method whose features read the original images (``full_resolution``: Myrans2018,
whose GIST makes the image grey at full resolution and then resizes it without antialiasing,
as the reference) gets them undecimated from the image folder, not from the resized cache.
A model that searches hyper-parameters on the validation set (``needs_validation``: the
reference grid search of Myrans2018) gets the validation features too, and the run folder
keeps the search's rows in ``grid_search.json``.
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
SK_CHUNK_ORIGINAL = 128
MODEL_FILE = "model.pkl"
GRID_FILE = "grid_search.json"


def _sk_chunks(df, images, cfg: RunConfig, chunk: int = SK_CHUNK):
    """Yield (images, filenames) in order: (n, H, W, 3) uint8 at the run's resolution, or, for
    a ``full_resolution`` method, a list of each image's original HxWx3 uint8 pixels."""
    from benchmark.data.dataset import SewerMLDataset
    from benchmark.data.transforms import build_transform
    from methods.registry import get_spec

    size = cfg.image_size
    ds = SewerMLDataset(df, images, None)
    original = get_spec(cfg.method).full_resolution
    if original:   # original Sewer-ML frames are up to 768x576x3 (1.3 MB each)
        chunk = min(chunk, SK_CHUNK_ORIGINAL)
    need_resize = not original and getattr(images, "image_size", None) != (size, size)
    tf = build_transform("none", size, False) if need_resize else None
    for lo in range(0, len(ds), chunk):
        arrs = []
        for i in range(lo, min(len(ds), lo + chunk)):
            img = ds.load(i)
            if tf is not None:
                img = (tf(img).permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            arrs.append(img)
        yield (arrs if original else np.stack(arrs)), ds.filenames[lo:lo + chunk]


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
        if use_features:
            return model.features([]), []
        size = cfg.image_size
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.concatenate(xs), names


def _predict_inputs(model, x, cfg: RunConfig) -> np.ndarray:
    probs = model.predict_proba_features(x) if _has_features(cfg) else model.predict_proba(x)
    return np.asarray(probs, dtype=np.float64).reshape(len(x), -1)


def sklearn_predict(model, df, images, cfg: RunConfig) -> tuple[list[str], np.ndarray]:
    x, names = sklearn_inputs(df, images, cfg, model)
    return names, _predict_inputs(model, x, cfg)


def save_sklearn(model, out_dir: Path) -> None:
    with atomic_path(Path(out_dir) / MODEL_FILE) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_sklearn(out_dir: Path):
    with open(Path(out_dir) / MODEL_FILE, "rb") as fh:
        return pickle.load(fh)


def train_sklearn(cfg: RunConfig, out_dir: Path) -> dict:
    from benchmark.scores import write_scores
    from benchmark.train.inference import eval_sets
    from benchmark.train.data import read_frame

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
    xv, val_names = sklearn_inputs(val_df, images, cfg, model)
    yv = targets_of(val_df, cfg.binary)
    search = bool(getattr(model, "needs_validation", False))
    if search:
        yv_fit = (yv[:, 0] if cfg.binary else yv).astype(np.int64)
        if _has_features(cfg):
            model.fit_features(x, y, xv, yv_fit)
        else:
            model.fit(x, y, xv, yv_fit)
    elif _has_features(cfg):
        model.fit_features(x, y)
    else:
        model.fit(x, y)
    fit_s = time.perf_counter() - t_fit
    save_sklearn(model, out_dir)
    if getattr(model, "search_results_", None) is not None:
        atomic_write_json(out_dir / GRID_FILE, {
            "protocol": cfg.protocol, "rows": model.search_results_,
            "kept": {k: getattr(model, k) for k in ("n_estimators", "max_depth", "max_features")}})

    pv = _predict_inputs(model, xv, cfg)
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
