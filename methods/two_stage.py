"""Two-stage combination of a binary defect classifier and a multi-label defect classifier
(Sewer-ML ``combine_two_stage.py``).

- ``replace`` (used for all Sewer-ML results): where P(defect) < 0.5 every class score becomes
  P(defect); otherwise the stage-2 scores are kept (P(defect) = 0.5 keeps stage 2).
- ``multiply``: every class score is multiplied by P(defect).

The "Benchmark" of Sewer-ML is Xie2019 (binary) as stage 1 and TResNet-L trained on defect
images only as stage 2.
"""
from __future__ import annotations

import numpy as np

from benchmark.classes import THRESHOLD
from benchmark.errors import SewerbenchError

MODES = ("replace", "multiply")


def combine(stage1_probs: np.ndarray, stage2_probs: np.ndarray,
            mode: str = "replace") -> np.ndarray:
    """Combine (N,) or (N, 1) defect probabilities with (N, C) class probabilities -> (N, C)."""
    p = np.asarray(stage1_probs, dtype=np.float64)
    q = np.asarray(stage2_probs, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1:
        raise SewerbenchError(f"two-stage: stage-1 scores must be (N,) or (N, 1), got {p.shape}")
    if q.ndim != 2 or q.shape[0] != p.shape[0]:
        raise SewerbenchError(f"two-stage: stage-2 scores must be ({p.shape[0]}, C), got {q.shape}")
    if mode == "replace":
        return np.where((p < THRESHOLD)[:, None], p[:, None], q)
    if mode == "multiply":
        return p[:, None] * q
    raise SewerbenchError(f"two-stage: mode {mode!r} is not one of {', '.join(MODES)}")
