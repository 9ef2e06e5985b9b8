"""The official Sewer-ML metrics (Haurum & Moeslund, CVPR 2021), vectorised numpy.

Same definitions and edge cases as the official ``metrics.py`` / ``calculate_results.py``
(REFERENCE.md section 2):

* threshold ``score >= 0.5``; a target of ``-1`` counts as ``0`` (also for EMAcc);
* 18 count entries: the 17 classes plus an implicit "Normal" class (ground truth: all 17
  targets 0; prediction: no score >= threshold);
* ``Np == 0`` is set to 1 (all 18 entries) before any division, and the reported ``Np``
  carries that 1, like the official output;
* ``R = Nc / Ng`` follows numpy semantics (0/0 -> nan); F1 nan -> 0 (all 18), F2 nan -> 0
  (the 17 classes); the Normal F2, CP, CR, CF1, OP, OR and OF1 have no nan guard;
* AP ranks by ``np.argsort(scores)[::-1]`` (the same call, so ties break exactly like the
  official code on the same row order), stops once every positive is seen, and is 0 for a
  class without positives; mAP is the mean over the 17 classes. When no positive is tied
  with a negative the ranks follow from one value sort instead (argsort's order inside a
  tie run of positives cannot change which ranks are hits; see :func:`_ap_1d`).

Speed: the inputs are validated once, scores and targets are copied once to a class-major
(17, N) layout, and every count is a contiguous row reduction on boolean arrays.

Sums are taken with the same numpy reductions as the official code (and AP accumulates
left to right with ``cumsum``), so results are bit-identical to it, not just close.
numpy floating point warnings are silenced locally; results are unchanged.

Counts functions accept a leading batch axis (``(..., 18)``) so the bootstrap can reuse them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmark import artifacts as A
from benchmark.classes import CIW, CLASS_CODES, NUM_CLASSES, THRESHOLD
from benchmark.cpus import usable_cpus

__all__ = [
    "THRESHOLD", "prepare", "class_counts", "fix_np", "precision_recall", "f_beta",
    "f1_scores", "f2_scores", "f2_ciw", "f1_normal", "f2_normal", "overall_prf",
    "per_class_prf", "macro_f1", "micro_f1", "exact_match_accuracy", "average_precision",
    "mean_average_precision", "metrics_from_counts", "evaluate", "to_jsonable",
]


def _checked(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate like :func:`prepare`; return float64 scores and the raw targets array."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must be equal (N, C) arrays")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    # the same test as np.isin(t, (-1, 0, 1)), without isin's sort
    if t.dtype == np.bool_:
        pass
    elif t.dtype.kind in "iu":
        if t.size and (t.min() < -1 or t.max() > 1):
            raise ValueError("targets must be -1, 0 or 1")
    elif not ((t == 0) | (t == 1) | (t == -1)).all():
        raise ValueError("targets must be -1, 0 or 1")
    return s, t


def _prepared(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 scores and the boolean positives matrix ``targets == 1`` (-1 -> 0)."""
    s, t = _checked(scores, targets)
    return s, (t if t.dtype == np.bool_ else t == 1)


def prepare(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and values; return float64 scores and targets with -1 mapped to 0."""
    s, t = _checked(scores, targets)
    return s, np.where(t == -1, 0, t).astype(np.int64)


def _counts_t(pred_t: np.ndarray, gt_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw (Ng, Np, Nc) from boolean prediction and ground-truth matrices in class-major
    layout (C, N), C-contiguous: every count is a contiguous row reduction."""
    pred_normal = ~np.logical_or.reduce(pred_t, axis=0)
    gt_normal = ~np.logical_or.reduce(gt_t, axis=0)
    ng = np.append(np.count_nonzero(gt_t, axis=1), np.count_nonzero(gt_normal))
    np_ = np.append(np.count_nonzero(pred_t, axis=1), np.count_nonzero(pred_normal))
    nc = np.append(np.count_nonzero(gt_t & pred_t, axis=1),
                   np.count_nonzero(gt_normal & pred_normal))
    return ng.astype(np.float64), np_.astype(np.float64), nc.astype(np.float64)


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw (Ng, Np, Nc) from boolean prediction and ground-truth matrices (N, C)."""
    return _counts_t(np.ascontiguousarray(pred.T), np.ascontiguousarray(gt.T))


def class_counts(scores: Any, targets: Any, threshold: float = THRESHOLD
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw (Ng, Np, Nc) as float64 arrays of length C + 1 (last entry: Normal).

    Ng: ground-truth positives, Np: predicted positives (``score >= threshold``), Nc: true
    positives. Np is *not* yet fixed for zeros (see :func:`fix_np`).
    """
    s, gt = _prepared(scores, targets)
    return _counts(s >= threshold, gt)


def fix_np(np_: np.ndarray) -> np.ndarray:
    """Copy of Np with zeros replaced by 1 (the official guard against division by 0)."""
    out = np.array(np_, dtype=np.float64, copy=True)
    out[out == 0] = 1
    return out


def precision_recall(ng, np_, nc) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry precision Nc/Np (Np zeros -> 1) and recall Nc/Ng (0/0 -> nan)."""
    np_ = fix_np(np_)
    with np.errstate(divide="ignore", invalid="ignore"):
        return nc / np_, nc / np.asarray(ng, dtype=np.float64)


def f_beta(p, r, beta: float) -> np.ndarray:
    """Raw F-beta from precision and recall, no nan guard (0/0 -> nan)."""
    b2 = beta * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        if beta == 1:
            return (2 * p * r) / (p + r)
        if beta == 2:
            return (5 * p * r) / (4 * p + r)
        return ((1 + b2) * p * r) / (b2 * p + r)


def _nan_to_zero(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float64, copy=True)
    x[np.isnan(x)] = 0
    return x


def f1_scores(p, r) -> np.ndarray:
    """F1 per entry, nan -> 0 (official: over all 18 entries)."""
    return _nan_to_zero(f_beta(p, r, 1))


def f2_scores(p, r) -> np.ndarray:
    """F2 per entry, nan -> 0 (official: over the 17 classes)."""
    return _nan_to_zero(f_beta(p, r, 2))


def f2_ciw(f2_classes, weights=CIW) -> np.ndarray:
    """Class-importance weighted F2 over the last axis (17 guarded class F2 values)."""
    w = np.asarray(weights, dtype=np.float64)
    return np.sum(np.asarray(f2_classes) * w, axis=-1) / np.sum(w)


def f1_normal(ng, np_, nc) -> np.ndarray:
    """F1 of the Normal entry (last of 18), nan -> 0."""
    p, r = precision_recall(ng, np_, nc)
    return f1_scores(p, r)[..., -1]


def f2_normal(ng, np_, nc) -> np.ndarray:
    """F2 of the Normal entry, no nan guard (as reported in the official F2_class)."""
    p, r = precision_recall(ng, np_, nc)
    return f_beta(p[..., -1], r[..., -1], 2)


def overall_prf(ng, np_, nc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OP, OR, OF1 over all 18 entries (no nan guard)."""
    np_ = fix_np(np_)
    with np.errstate(divide="ignore", invalid="ignore"):
        op = np.sum(nc, axis=-1) / np.sum(np_, axis=-1)
        or_ = np.sum(nc, axis=-1) / np.sum(ng, axis=-1)
        of1 = (2 * op * or_) / (op + or_)
    return op, or_, of1


def per_class_prf(ng, np_, nc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CP, CR, CF1: means of the 18 per-entry P and R, then their F1 (no nan guard)."""
    p, r = precision_recall(ng, np_, nc)
    n = p.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cp = np.sum(p, axis=-1) / n
        cr = np.sum(r, axis=-1) / n
        cf1 = (2 * cp * cr) / (cp + cr)
    return cp, cr, cf1


def macro_f1(ng, np_, nc) -> np.ndarray:
    """MF1: mean of the 18 guarded F1 values."""
    p, r = precision_recall(ng, np_, nc)
    f1 = f1_scores(p, r)
    return np.sum(f1, axis=-1) / f1.shape[-1]


def micro_f1(ng, np_, nc) -> np.ndarray:
    """mF1 = 2 sum Nc / (sum Np + sum Ng) over the 18 entries (Np zeros -> 1)."""
    np_ = fix_np(np_)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (2 * np.sum(nc, axis=-1)) / (np.sum(np_, axis=-1) + np.sum(ng, axis=-1))


def _exact_match_t(pred_t: np.ndarray, gt_t: np.ndarray) -> float:
    """EMAcc from class-major (C, N) boolean matrices."""
    n = pred_t.shape[1]
    match = np.logical_and.reduce(pred_t == gt_t, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(np.count_nonzero(match)) / n)


def exact_match_accuracy(scores, targets, threshold: float = THRESHOLD) -> float:
    """Fraction of rows whose thresholded predictions all equal the targets (-1 as 0)."""
    s, gt = _prepared(scores, targets)
    return _exact_match_t(np.ascontiguousarray((s >= threshold).T), np.ascontiguousarray(gt.T))


def _ap_argsort(col: np.ndarray, pos: np.ndarray) -> float:
    """AP by walking ``np.argsort(col)[::-1]`` (the official ranking, ties included)."""
    order = np.argsort(col, axis=0)[::-1]
    ranks = np.flatnonzero(pos[order]).astype(np.float64) + 1.0
    npos = ranks.size
    prec = np.arange(1, npos + 1, dtype=np.float64) / ranks
    return float(np.cumsum(prec)[-1] / npos)


def _ap_1d(col: np.ndarray, pos: np.ndarray) -> float:
    """Official AP of one column: ``col`` float64 scores, ``pos`` boolean positives.

    The official code ranks by ``np.argsort(col)[::-1]``; a positive's rank is the number of
    rows ranked before it plus one. A row with a strictly higher score is always ranked
    before; only the order *inside* a run of equal scores is argsort's own. When every run of
    equal scores that holds a positive holds positives only, that order cannot change which
    ranks are hits, so the ranks follow from one value sort (no index sort): a run of ``c``
    positives at score ``v`` with ``g`` rows scoring above ``v`` takes ranks ``g+1..g+c``.
    Otherwise (a positive tied with a negative) the argsort is walked as the official code
    does. Either way the precisions ``seen / rank`` are the same floats summed left to right
    (``cumsum``) as the official loop, so the AP is bit-identical.
    """
    pvals = col[pos]
    npos = pvals.size
    if npos == 0:
        return 0.0
    u, c = np.unique(pvals, return_counts=True)
    srt = np.sort(col)
    lo = np.searchsorted(srt, u, side="left")
    hi = np.searchsorted(srt, u, side="right")
    if not np.array_equal(hi - lo, c):
        return _ap_argsort(col, pos)
    above = (col.size - hi)[::-1]            # rows strictly above each run, best run first
    c = c[::-1]
    before = np.cumsum(c) - c                # positives in the better runs
    ranks = (np.repeat(above - before, c) + np.arange(1, npos + 1)).astype(np.float64)
    prec = np.arange(1, npos + 1, dtype=np.float64) / ranks
    return float(np.cumsum(prec)[-1] / npos)


#: rows from which the per-class APs are computed on several threads (NumPy's sort, which
#: dominates, releases the GIL; each class is computed alone, so the values do not change)
PARALLEL_AP_ROWS = 20_000


def _ap_threads(n_rows: int, n_classes: int) -> int:
    if n_rows < PARALLEL_AP_ROWS or n_classes < 2:
        return 1
    return max(1, min(usable_cpus(), n_classes))


def _ap_columns_t(s_t: np.ndarray, gt_t: np.ndarray) -> np.ndarray:
    """Per-class AP from class-major (C, N) scores and positives (one class per thread on a
    large set: 1.6x on 2 cores at 130,046 x 17)."""
    threads = _ap_threads(s_t.shape[1], s_t.shape[0])
    if threads == 1:
        return np.array([_ap_1d(s_t[k], gt_t[k]) for k in range(s_t.shape[0])], dtype=np.float64)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return np.array(list(pool.map(_ap_1d, s_t, gt_t)), dtype=np.float64)


def _ap_columns(s: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return _ap_columns_t(np.ascontiguousarray(s.T), np.ascontiguousarray(gt.T))


def average_precision(scores: Any, targets: Any):
    """Official (non-interpolated) AP: per column for (N, C) input, a float for (N,) input."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s2, g2 = _prepared(s[:, None], np.asarray(targets)[:, None])
        return _ap_1d(np.ascontiguousarray(s2[:, 0]), np.ascontiguousarray(g2[:, 0]))
    s, gt = _prepared(s, targets)
    return _ap_columns(s, gt)


def mean_average_precision(ap) -> float:
    """mAP: plain mean of the per-class AP values."""
    return float(np.mean(np.asarray(ap, dtype=np.float64)))


def metrics_from_counts(ng, np_, nc, weights=CIW) -> dict[str, np.ndarray]:
    """All count-based metrics from raw (Ng, Np, Nc) of shape (..., C + 1)."""
    ng = np.asarray(ng, dtype=np.float64)
    nc = np.asarray(nc, dtype=np.float64)
    npf = fix_np(np_)
    p, r = precision_recall(ng, npf, nc)
    f1 = f1_scores(p, r)
    f2 = f2_scores(p[..., :-1], r[..., :-1])
    op, or_, of1 = overall_prf(ng, npf, nc)
    cp, cr, cf1 = per_class_prf(ng, npf, nc)
    return {
        "Ng": ng, "Np": npf, "Nc": nc, "P": p, "R": r, "F1": f1, "F2": f2,
        "F2_CIW": f2_ciw(f2, weights), "F2_Normal": f_beta(p[..., -1], r[..., -1], 2),
        "F1_Normal": f1[..., -1], "OP": op, "OR": or_, "OF1": of1, "CP": cp, "CR": cr,
        "CF1": cf1, "MF1": np.sum(f1, axis=-1) / f1.shape[-1], "mF1": micro_f1(ng, npf, nc),
    }


def evaluate(scores: Any, targets: Any, threshold: float = THRESHOLD,
             weights: Any = None, labels: Any = None) -> A.MetricsJSON:
    """Official Sewer-ML metrics of (N, 17) scores against (N, 17) targets.

    Returns the official JSON layout (``Labels``, ``LabelWeights``, ``New``, ``Main``,
    ``Auxillary``; :class:`benchmark.artifacts.MetricsJSON`) with Python floats on a 0-1 scale; nan stays nan (see :func:`to_jsonable`).
    AP tie order follows the row order given (the CLI sorts rows by Filename, as the
    official script does).
    """
    s, gt = _prepared(scores, targets)
    weights = CIW if weights is None else np.asarray(weights, dtype=np.float64)
    if labels is None:
        labels = (list(CLASS_CODES) if s.shape[1] == NUM_CLASSES
                  else [str(i) for i in range(s.shape[1])])
    if len(weights) != s.shape[1] or len(labels) != s.shape[1]:
        raise ValueError("weights and labels must have one entry per class")
    # class-major copies: each class is one contiguous row for the counts and the sorts
    s_t = np.ascontiguousarray(s.T)
    gt_t = np.ascontiguousarray(gt.T)
    pred_t = s_t >= threshold
    ng, np_, nc = _counts_t(pred_t, gt_t)
    m = metrics_from_counts(ng, np_, nc, weights)
    ap = _ap_columns_t(s_t, gt_t)
    def lst(a):
        return [float(x) for x in np.asarray(a).ravel()]

    return {
        A.LABELS: list(labels),
        A.LABEL_WEIGHTS: lst(weights),
        A.NEW: {
            A.F2: float(m["F2_CIW"]),
            A.F2_CLASS: lst(m["F2"]) + [float(m["F2_Normal"])],
            A.F1_NORMAL: float(m["F1_Normal"]),
        },
        A.MAIN: {
            "OP": float(m["OP"]), "OR": float(m["OR"]), "OF1": float(m["OF1"]),
            "CP": float(m["CP"]), "CR": float(m["CR"]), "CF1": float(m["CF1"]),
            "MF1": float(m["MF1"]), "mF1": float(m["mF1"]),
            "EMAcc": _exact_match_t(pred_t, gt_t),
            "mAP": mean_average_precision(ap),
        },
        A.AUXILLARY: {
            "P_class": lst(m["P"]), "R_class": lst(m["R"]), "F1_class": lst(m["F1"]),
            "AP": lst(ap), "Np": lst(m["Np"]), "Nc": lst(m["Nc"]), "Ng": lst(m["Ng"]),
        },
    }


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to Python types; nan/inf stay floats.

    ``json.dumps`` then writes nan as ``NaN`` and inf as ``Infinity``, exactly like the
    official script's ``json.dump`` (``allow_nan=True``).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    return obj


def isnan(x: Any) -> bool:
    """True for a float nan (helper for reports)."""
    return isinstance(x, float) and math.isnan(x)
