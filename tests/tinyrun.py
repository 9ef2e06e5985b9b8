"""Test-side fixtures for tiny, fast engine runs of the registered ``tiny_cnn``: a tiny prepared
dataset in the official CSV layout whose train and validation labels differ on purpose, and a
params dict with a few runs.

Only the stable engine entry points are used by the tests built on this module:
``benchmark.config.resolve_run(params, run, overrides)`` and
``benchmark.train.engine.train_run(cfg, out_dir, resume=False, callback=None)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.classes import CLASS_CODES, CSV_COLUMNS, NUM_CLASSES

def _frame(names: list[str], y: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    df = pd.DataFrame(y, columns=list(CLASS_CODES))
    df.insert(0, "Filename", names)
    df.insert(1, "WaterLevel", rng.choice([0, 5, 10, 20, 30], size=len(names)))
    df.insert(2, "VA", 0)
    defect = y.max(axis=1)
    df["ND"] = 1 - defect
    df["Defect"] = defect
    return df[list(CSV_COLUMNS)]


def make_dataset(root: str | Path, n_train: int = 64, n_val: int = 32, n_test: int = 8,
                 size: int = 16, seed: int = 0) -> Path:
    """``root/images/*.png`` and ``root/prepared/full/{train,val,test,test_gt}.csv``.

    Class k paints a 4x4 cell with its own colour when positive, so a tiny CNN learns.
    Train and val labels are drawn with different class rates, so that any statistic of the
    labels (e.g. BCE pos_weight) differs between the two splits.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    colors = rng.integers(0, 256, size=(NUM_CLASSES, 3))
    cells = [(r, c) for r in range(0, size, 4) for c in range(0, size, 4)]
    total = n_train + n_val + n_test
    rate_train = np.linspace(0.45, 0.1, NUM_CLASSES)
    rate_val = np.linspace(0.1, 0.45, NUM_CLASSES)
    rate = np.vstack([np.tile(rate_train, (n_train, 1)), np.tile(rate_val, (n_val + n_test, 1))])
    y_all = (rng.random((total, NUM_CLASSES)) < rate).astype(np.int64)
    y_all[rng.random(total) < 0.3] = 0  # normal images
    y_all[:n_train, 14] = 0             # one class without training positives (pos_weight 0)
    names = [f"{i + 1:08d}.png" for i in range(total)]
    for name, y in zip(names, y_all):
        img = rng.integers(90, 140, size=(size, size, 3)).astype(np.uint8)
        for k in np.flatnonzero(y):
            r, c = cells[k % len(cells)]
            img[r:r + 4, c:c + 4] = colors[k]
        Image.fromarray(img).save(root / "images" / name)
    prep = root / "prepared" / "full"
    prep.mkdir(parents=True, exist_ok=True)
    tr, va = slice(0, n_train), slice(n_train, n_train + n_val)
    te = slice(n_train + n_val, total)
    _frame(names[tr], y_all[tr], rng).to_csv(prep / "train.csv", index=False)
    _frame(names[va], y_all[va], rng).to_csv(prep / "val.csv", index=False)
    test = _frame(names[te], y_all[te], rng)
    test[["Filename"]].to_csv(prep / "test.csv", index=False)
    test.to_csv(prep / "test_gt.csv", index=False)
    return root


def params(root: str | Path, **profile: Any) -> dict:
    """A params dict: profile ``test`` (CPU, 16 px, batch 16) and runs of the tiny CNN."""
    root = Path(root)
    prof = {"size": "tiny", "allow_pretrained": False, "image_size": 16, "epochs": 2, "batch_size": 16,
            "eval_batch_size": 32, "workers": 0, "device": "cpu", "amp": False, "progress": False,
            "use_cache": False}
    prof.update(profile)
    return {
        "seed": 0,
        "profile": "test",
        "data": {"prepared": str(root / "prepared"), "test": {"images": str(root / "images")}},
        "profiles": {"test": prof},
        "recipes": {
            "q2l": {"epochs": 2, "batch_size": 16,
                    "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-2, "decay_filter": "no_bias_1d"},
                    "schedule": {"name": "onecycle", "pct_start": 0.2},
                    "ema": {"enabled": True, "decay": 0.9},
                    "loss": {"name": "q2l_asl"}, "transform": "imagenet",
                    "aug": {"randaugment": False, "cutout": 0.0}, "selection": "mAP"},
            "sewerml": {"epochs": 2, "batch_size": 16,
                        "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 1e-4},
                        "schedule": {"name": "none"},
                        "loss": {"name": "bce", "pos_weight": "auto"}, "transform": "sewerml",
                        "aug": {"flip": 0.0, "jitter": 0.0}, "selection": "val_loss"},
        },
        "runs": {
            "tiny": _tiny_run("q2l", split="full"),
            "tiny_sewer": _tiny_run("sewerml", split="full"),
            "tiny_binary": _tiny_run("sewerml", split="full", target="binary"),
            "tiny_stage2": _tiny_run("sewerml", split="full", train_on="defect_only",
                                     model={"aux": True}),
        },
    }


def _tiny_run(recipe: str, **run: Any) -> dict:
    """A run of the registered ``tiny_cnn`` under ``recipe``."""
    return {"method": "tiny_cnn", "recipe": recipe, **run}


def as_dict(cfg: Any) -> dict:
    """The resolved configuration as a plain dict (a dict today, maybe a dataclass later)."""
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def label_matrix(csv: str | Path) -> np.ndarray:
    """(N, 17) int labels of an annotation CSV, read with pandas only."""
    return pd.read_csv(csv)[list(CLASS_CODES)].to_numpy(np.int64)
