"""The engine self-check of ``sewerbench check``: a tiny deterministic training run (a few
seconds on CPU) on a 16 px dataset written on the fly, with a learnable colour-cell signal
(each class paints its own 4x4 cell in its own colour), the registered ``tiny_cnn`` and the
Q2L-style recipe. The same dataset and params serve the engine tests."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS, NUM_CLASSES


def _labels(rng: np.random.Generator, n: int, p: float = 0.25) -> np.ndarray:
    y = (rng.random((n, NUM_CLASSES)) < p).astype(np.int64)
    y[rng.random(n) < 0.4] = 0  # a share of normal images
    return y


def _frame(names: list[str], y: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    df = pd.DataFrame(y, columns=list(CLASS_CODES))
    df.insert(0, "Filename", names)
    df.insert(1, "WaterLevel", rng.choice([0, 5, 10, 20, 30], size=len(names)))
    df.insert(2, "VA", 0)
    defect = y.max(axis=1)
    df["ND"] = 1 - defect
    df["Defect"] = defect
    return df[list(CSV_COLUMNS)]


def make_tiny_dataset(root: str | Path, n_train: int = 64, n_val: int = 32, n_test: int = 16,
                      size: int = 16, seed: int = 0, sub: bool = True) -> Path:
    """Write ``root/images/*.png`` and ``root/prepared/{full,sub_0.0625}/*.csv``; returns root.

    Each class owns a colour and a 4x4 cell; a positive class paints its cell with its colour,
    so a small CNN can learn the labels.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / "images" / "a"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "images" / "b").mkdir(parents=True, exist_ok=True)
    colors = rng.integers(0, 256, size=(NUM_CLASSES, 3))
    cells = [(r, c) for r in range(0, size, 4) for c in range(0, size, 4)]
    total = n_train + n_val + n_test
    y_all = _labels(rng, total)
    names = [f"{i + 1:08d}.png" for i in range(total)]
    for i, (name, y) in enumerate(zip(names, y_all)):
        img = rng.integers(90, 140, size=(size, size, 3)).astype(np.uint8)
        for k in np.flatnonzero(y):
            r, c = cells[k % len(cells)]
            img[r:r + 4, c:c + 4] = colors[k]
        folder = root / "images" / ("a" if i % 2 == 0 else "b")
        Image.fromarray(img).save(folder / name)
    tr = slice(0, n_train)
    va = slice(n_train, n_train + n_val)
    te = slice(n_train + n_val, total)
    prep = root / "prepared"
    for split in ("full",) + (("sub_0.0625",) if sub else ()):
        (prep / split).mkdir(parents=True, exist_ok=True)
    train = _frame(names[tr], y_all[tr], rng)
    val = _frame(names[va], y_all[va], rng)
    test = _frame(names[te], y_all[te], rng)
    train.to_csv(prep / "full" / "train.csv", index=False)
    val.to_csv(prep / "full" / "val.csv", index=False)
    test[["Filename"]].to_csv(prep / "full" / "test.csv", index=False)
    test.to_csv(prep / "full" / "test_gt.csv", index=False)
    if sub:
        train.iloc[::2].to_csv(prep / "sub_0.0625" / "train.csv", index=False)
        val.iloc[::2].to_csv(prep / "sub_0.0625" / "val.csv", index=False)
    return root


def tiny_params(root: str | Path, **profile: Any) -> dict:
    """A params dict for the tiny dataset: profile ``test`` and a few runs of the tiny CNN."""
    root = Path(root)
    prof = {"size": "tiny", "allow_pretrained": False, "image_size": 16, "epochs": 2, "batch_size": 16,
            "eval_batch_size": 32, "workers": 0, "device": "cpu", "amp": False, "progress": False,
            "use_cache": True}
    prof.update(profile)
    return {
        "seed": 0,
        "profile": "test",
        "data": {"prepared": str(root / "prepared"), "cache": str(root / "cache"),
                 "test": {"images": str(root / "images")}},
        "profiles": {"test": prof},
        "recipes": {
            "q2l": {"epochs": 2, "batch_size": 16,
                    "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-2, "decay_filter": "no_bias_1d"},
                    "schedule": {"name": "onecycle", "pct_start": 0.2},
                    "ema": {"enabled": True, "decay": 0.9},
                    "loss": {"name": "q2l_asl"}, "transform": "imagenet",
                    "aug": {"randaugment": False, "cutout": 0.0}, "selection": "mAP",
                    "early_stop": {"patience": 8}},
            "sewerml": {"epochs": 90, "batch_size": 16,
                        "optimizer": {"name": "sgd", "lr": 0.1, "lr_batch_scale": 256, "weight_decay": 1e-4},
                        "schedule": {"name": "multistep", "milestones": [30, 60, 80], "gamma": 0.1},
                        "loss": {"name": "bce", "pos_weight": "auto"}, "transform": "sewerml",
                        "aug": {"flip": 0.5, "jitter": 0.1}, "selection": "val_loss"},
            "sklearn": {"epochs": 1, "transform": "none", "selection": "F2_CIW"},
        },
        "runs": {
            "tiny": {"method": "tiny_cnn", "recipe": "q2l", "split": "full"},
            "tiny_sub": {"method": "tiny_cnn", "recipe": "q2l", "split": "sub_0.0625"},
            "tiny_sewer": {"method": "tiny_cnn", "recipe": "sewerml", "split": "full",
                           "model": {"batchnorm": True}},
            "tiny_binary": {"method": "tiny_cnn", "recipe": "sewerml", "split": "full", "target": "binary"},
            "tiny_stage2": {"method": "tiny_cnn", "recipe": "sewerml", "split": "full",
                            "train_on": "defect_only", "model": {"aux": True}},
            "myrans": {"method": "myrans2018", "recipe": "sklearn", "split": "full",
                       "sklearn": {"n_jobs": 1}},
            "myrans_binary": {"method": "myrans2018_binary", "recipe": "sklearn", "split": "full",
                              "sklearn": {"n_jobs": 1}},
        },
    }


def tiny_train_metrics(seed: int = 0) -> dict[str, float]:
    """Final-epoch validation metrics and best score of the tiny run."""
    import torch

    from benchmark.config import resolve_run
    from benchmark.train import train_run
    import logging

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    quiet = [logging.getLogger(n) for n in ("benchmark.train", "benchmark.data")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="sewerbench-check-") as tmp:
            root = make_tiny_dataset(Path(tmp) / "data", seed=seed)
            params = tiny_params(root)
            cfg = resolve_run(params, "tiny", seed=seed)
            summary = train_run(cfg, Path(tmp) / "run")
    finally:
        torch.set_num_threads(threads)
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    final = summary.get("final", {})
    out = {k: float(final[k]) for k in ("train_loss", "val_loss", "val_mAP", "val_F2_CIW",
                                        "val_F1_Normal", "ema_val_mAP") if k in final}
    out["selection_score"] = float(summary["selection_score"])
    out["best_epoch"] = float(summary["best_epoch"])
    return out
