"""Calibration of the synthetic dataset's difficulty.

A small CNN (written here, CPU) is trained a few epochs on the synthetic train split and
evaluated on val with the official metrics. A usable benchmark lands clearly above the chance
baselines (random scores with the training marginals; the all-positive predictor) and clearly
below perfect F2-CIW.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.classes import CIW, CLASS_CODES
from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)


def _metrics(scores: np.ndarray, targets: np.ndarray) -> dict:
    """F2-CIW, F1-Normal, mAP via the official metrics module."""
    try:
        from benchmark.metrics import evaluate
    except ImportError:  # pragma: no cover - fallback while metrics.py is absent
        evaluate = None
    if evaluate is not None:
        r = evaluate(scores, targets)
        return {"F2_CIW": float(r["New"]["F2"]), "F1_Normal": float(r["New"]["F1_Normal"]),
                "mAP": float(r["Main"]["mAP"]),
                "F2_class": dict(zip(r["Labels"], map(float, r["New"]["F2_class"])))}
    pred = scores >= 0.5  # pragma: no cover
    t = targets > 0
    ng = np.r_[t.sum(0), (~t.any(1)).sum()].astype(float)
    npred = np.r_[pred.sum(0), (~pred.any(1)).sum()].astype(float)
    nc = np.r_[(pred & t).sum(0), ((~pred.any(1)) & (~t.any(1))).sum()].astype(float)
    npred[npred == 0] = 1
    with np.errstate(divide="ignore", invalid="ignore"):
        p, r = nc / npred, nc / ng
        f2 = np.nan_to_num(5 * p * r / (4 * p + r), nan=0.0)
        f1 = np.nan_to_num(2 * p * r / (p + r), nan=0.0)
    return {"F2_CIW": float((f2[:17] * CIW).sum() / CIW.sum()), "F1_Normal": float(f1[17])}


def _load_split(root: Path, csv_name: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(root / csv_name)
    index = {p.name: p for p in root.glob("*/*.png")}
    try:
        imgs = np.stack([np.asarray(Image.open(index[f]).convert("RGB")) for f in df["Filename"]])
    except KeyError as exc:
        raise SewerbenchError(f"{root / csv_name}: image {exc} not found under {root}") from None
    return imgs, df[list(CLASS_CODES)].to_numpy(np.float32)


def _build_cnn(num_classes: int, width: int = 32):
    """Stride-2 stem + 3 conv stages + global mean/max pooling + linear head (~0.3M params)."""
    import torch
    import torch.nn as nn

    def conv(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.features = nn.Sequential(
                *conv(3, w, 2), *conv(w, w), nn.MaxPool2d(2),
                *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
                *conv(2 * w, 3 * w), *conv(3 * w, 3 * w), nn.MaxPool2d(2),
                *conv(3 * w, 4 * w))
            self.head = nn.Linear(8 * w, num_classes)

        def forward(self, x):
            h = self.features(x)
            return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))

    return SmallCNN()


def chance_baselines(train_targets: np.ndarray, val_targets: np.ndarray, seed: int = 0, reps: int = 20) -> dict:
    """Random Bernoulli scores with the training marginals, the all-positive predictor (best
    trivial F2) and the all-negative one (predicts Normal everywhere: best trivial F1-Normal)."""
    rng = np.random.default_rng(seed)
    prior = train_targets.mean(0)
    rand = [_metrics((rng.random(val_targets.shape) < prior).astype(float), val_targets) for _ in range(reps)]
    allpos = _metrics(np.ones_like(val_targets, dtype=float), val_targets)
    allneg = _metrics(np.zeros_like(val_targets, dtype=float), val_targets)
    return {"random_marginals": {"F2_CIW": float(np.mean([r["F2_CIW"] for r in rand])),
                                 "F1_Normal": float(np.mean([r["F1_Normal"] for r in rand]))},
            "all_positive": {"F2_CIW": allpos["F2_CIW"], "F1_Normal": allpos["F1_Normal"]},
            "all_negative": {"F2_CIW": allneg["F2_CIW"], "F1_Normal": allneg["F1_Normal"]}}


def calibrate(root: str | Path, seed: int = 0, epochs: int = 8, batch_size: int = 64, lr: float = 2e-3,
              width: int = 32, threads: int = 2, max_pos_weight: float = 10.0) -> dict:
    """Train the small CNN on ``root``'s train split, evaluate on val; return numbers + baselines."""
    import torch
    import torch.nn.functional as F

    root = Path(root)
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    xtr, ytr = _load_split(root, "SewerML_Train.csv")
    xva, yva = _load_split(root, "SewerML_Val.csv")
    mean = xtr.reshape(-1, 3).mean(0) / 255
    std = xtr.reshape(-1, 3).std(0) / 255

    def to_tensor(x):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
        return (t - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(std, dtype=torch.float32)[:, None, None]

    model = _build_cnn(len(CLASS_CODES), width)
    pos = ytr.sum(0)
    pos_weight = torch.tensor(np.clip((len(ytr) - pos) / np.maximum(pos, 1), 1, max_pos_weight), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(xtr) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    gen = np.random.default_rng(seed)
    ytr_t = torch.from_numpy(ytr)
    history = []
    for epoch in range(epochs):
        model.train()
        order = gen.permutation(len(xtr))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb = to_tensor(xtr[idx])
            if gen.random() < 0.5:
                xb = xb.flip(3)
            loss = F.binary_cross_entropy_with_logits(model(xb), ytr_t[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(xtr))
        log.info("calibrate epoch %d/%d loss %.4f", epoch + 1, epochs, history[-1])
    model.eval()
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(model(to_tensor(xva[i:i + 256]))) for i in range(0, len(xva), 256)]).numpy()
    result = _metrics(scores.astype(np.float64), yva)
    return {
        "dataset": str(root),
        "epochs": epochs,
        "train_images": int(len(xtr)),
        "val_images": int(len(xva)),
        "cnn": {k: result[k] for k in ("F2_CIW", "F1_Normal", "mAP") if k in result},
        "cnn_F2_class": result.get("F2_class"),
        "chance": chance_baselines(ytr, yva, seed),
        "train_loss": history,
        "seconds": round(time.perf_counter() - t0, 1),
    }
