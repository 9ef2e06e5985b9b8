"""Inputs, predictions and storage of the scikit-learn methods (Myrans2018: GIST features +
Extra Trees). Images are read at the run's resolution chunk by chunk; a method whose spec says
it has a feature stage (GIST) turns each chunk into 512 floats per image right away, so the
whole split never sits in memory as pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.config import RunConfig
from benchmark.sk_io import MODEL_FILE, load_sklearn_model, save_sklearn_model

SK_CHUNK = 2048


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


def has_feature_stage(cfg: RunConfig) -> bool:
    from methods.registry import get_spec

    return get_spec(cfg.method).feature_stage


def sklearn_inputs(df, images, cfg: RunConfig, model=None) -> tuple[np.ndarray, list[str]]:
    """Model inputs of a frame and their filenames: the model's features computed chunk by
    chunk when the method has a feature stage, else the (N, H, W, 3) uint8 images."""
    xs, names = [], []
    use_features = model is not None and has_feature_stage(cfg)
    for x, n in _sk_chunks(df, images, cfg):
        xs.append(model.features(x) if use_features else x)
        names += list(n)
    if not xs:
        size = cfg.image_size
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.concatenate(xs), names


def sklearn_predict(model, df, images, cfg: RunConfig) -> tuple[list[str], np.ndarray]:
    x, names = sklearn_inputs(df, images, cfg, model)
    probs = model.predict_proba_features(x) if has_feature_stage(cfg) else model.predict_proba(x)
    return names, np.asarray(probs, dtype=np.float64).reshape(len(names), -1)


def save_sklearn(model, out_dir: Path) -> None:
    """The fitted model as skops (loads without running code; see benchmark.sk_io)."""
    save_sklearn_model(model, Path(out_dir) / MODEL_FILE)


def load_sklearn(out_dir: Path):
    return load_sklearn_model(Path(out_dir) / MODEL_FILE)
