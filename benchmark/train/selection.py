"""Model selection and early stopping of the references, and the selection metrics.

Every epoch the plain model and (when the recipe has one) its EMA are validated; the better
of the two competes with the best so far (MA-Q2L / Q2L / ASL ``main.py``); the Sewer-ML
recipe keeps the lowest validation loss. Early stopping waits ``patience`` epochs after the
best and, like the reference, also requires the EMA score to be below its own best.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmark.classes import THRESHOLD
from benchmark.config import RunConfig


def better(a: float | None, b: float | None, mode: str) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None:
        return True
    return a > b if mode == "max" else a < b


def metric_key(selection: str, prefix: str = "") -> str:
    """History column of a selection metric: val_loss, val_mAP, ema_val_F2_CIW, ..."""
    return f"{prefix}{selection}" if selection == "val_loss" else f"{prefix}val_{selection}"


def _fbeta(pos_t: np.ndarray, pos_p: np.ndarray, beta: float) -> float:
    nc = float(np.sum(pos_t & pos_p))
    npred = max(float(np.sum(pos_p)), 1.0)
    ng = float(np.sum(pos_t))
    p = nc / npred
    r = nc / ng if ng else 0.0
    den = beta * beta * p + r
    return (1 + beta * beta) * p * r / den if den > 0 else 0.0


def eval_metrics(probs: np.ndarray, targets: np.ndarray, binary: bool) -> dict[str, float]:
    """Selection metrics: mAP, F2_CIW, F1_Normal (official) for 17 classes; for a binary
    run mAP = AP of Defect, F2_CIW = F2 of Defect, F1_Normal = F1 of Normal (score < 0.5)."""
    from benchmark import metrics as M

    if not binary:
        m = M.evaluate(probs, targets)
        return {"mAP": float(m["Main"]["mAP"]), "F2_CIW": float(m["New"]["F2"]),
                "F1_Normal": float(m["New"]["F1_Normal"])}
    s = np.asarray(probs, dtype=np.float64).reshape(-1)
    t = np.asarray(targets).reshape(-1) >= 1
    pred = s >= THRESHOLD
    return {"mAP": float(M.average_precision(s, t.astype(np.int64))),
            "F2_CIW": _fbeta(t, pred, 2.0), "F1_Normal": _fbeta(~t, ~pred, 1.0),
            "accuracy": float(np.mean(pred == t)) if len(t) else float("nan")}


class Selector:
    """Best-model bookkeeping; ``state`` is plain data (it goes into the checkpoint)."""

    def __init__(self, cfg: RunConfig, state: dict[str, Any] | None = None):
        self.key, self.mode = cfg.selection, cfg.selection_mode
        self.patience = cfg.early_stop.patience if cfg.early_stop is not None else None
        self.stop_epoch = cfg.stop_epoch
        self.state: dict[str, Any] = dict(state) if state else {"best": None, "best_epoch": -1}

    def select(self, epoch: int, metrics: dict) -> tuple[bool, str]:
        """(is the epoch's better model the best so far, "plain" | "ema")."""
        plain = metrics[metric_key(self.key)]
        ema = metrics.get(metric_key(self.key, "ema_"))
        which, score = "plain", plain
        if ema is not None and better(ema, plain, self.mode):
            which, score = "ema", ema
        s = self.state
        if better(plain, s.get("best_plain"), self.mode):
            s["best_plain"], s["best_plain_epoch"] = plain, epoch
        if ema is not None and better(ema, s.get("best_ema"), self.mode):
            s["best_ema"], s["best_ema_epoch"] = ema, epoch
        s["last_ema"] = ema
        is_best = better(score, s.get("best"), self.mode)
        if is_best:
            s.update(best=score, best_epoch=epoch, best_which=which)
        return is_best, which

    def should_stop(self, epoch: int) -> str | None:
        s = self.state
        if self.patience is not None and s.get("best_epoch", -1) >= 0:
            last_best = max(s["best_epoch"], s.get("best_plain_epoch", -1))
            ema_stalled = s.get("last_ema") is None or s["last_ema"] != s.get("best_ema")
            if epoch - last_best > int(self.patience) and ema_stalled:
                return f"early stop: no improvement for {epoch - last_best} epochs"
        if self.stop_epoch is not None and epoch >= int(self.stop_epoch):
            return f"stop_epoch {self.stop_epoch} reached"
        return None
