"""Inputs, predictions and storage of the scikit-learn methods (Myrans2018: GIST features +
Extra Trees).

Images are read chunk by chunk; a method whose spec says it has a feature stage (GIST) turns
each chunk into 512 floats per image right away, so the whole split never sits in memory as
pixels. A method whose features read the original images (``full_resolution``: Myrans2018,
whose GIST makes the image grey at full resolution and then resizes it without antialiasing,
as the reference) gets them undecimated from the image folder, not from the resized cache.
Fitted models are stored with skops (:mod:`benchmark.sk_io`), which loads without running code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.config import RunConfig
from benchmark.sk_io import MODEL_FILE, load_sklearn_model, save_sklearn_model

SK_CHUNK = 2048
SK_CHUNK_ORIGINAL = 128
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
        if use_features:
            return model.features([]), []
        size = cfg.image_size
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.concatenate(xs), names


def predict_inputs(model, x, cfg: RunConfig) -> np.ndarray:
    probs = model.predict_proba_features(x) if has_feature_stage(cfg) else model.predict_proba(x)
    return np.asarray(probs, dtype=np.float64).reshape(len(x), -1)


def sklearn_predict(model, df, images, cfg: RunConfig) -> tuple[list[str], np.ndarray]:
    x, names = sklearn_inputs(df, images, cfg, model)
    return names, predict_inputs(model, x, cfg)


def save_sklearn(model, out_dir: Path) -> None:
    save_sklearn_model(model, Path(out_dir) / MODEL_FILE)


def load_sklearn(out_dir: Path):
    return load_sklearn_model(Path(out_dir) / MODEL_FILE)
