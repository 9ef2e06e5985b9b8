"""Test-only oracle: a loop-style rewrite of the official Sewer-ML metric functions.

Written from the official ``metrics.py`` / ``calculate_results.py`` (Sewer-ML, Haurum &
Moeslund 2021; GitHub copy dineshsoudagar/sewer-ml-classification, commit cf20dd0) to
have the same semantics, step by step, including its quirks:

* targets of -1 are overwritten with 0 *in place* before anything else reads them, so
  EMAcc and the Normal class also see 0 (the official code mutates the caller's array;
  this oracle works on a copy);
* ``Np[Np == 0] = 1`` on all 18 entries before any division, and the fixed Np is reported;
* F1 nan -> 0 over 18 entries, F2 nan -> 0 over 17 classes, Normal F2 unguarded;
* AP walks ``np.argsort(column)[::-1]`` and stops once every positive was seen.

Deliberately simple and slow; never imported by the package.
"""
from __future__ import annotations

import numpy as np

OFFICIAL_WEIGHTS = [1.00, 0.5518, 0.2896, 0.1622, 0.6419, 0.1847, 0.3559, 0.3131, 0.0811,
                    0.2275, 0.2477, 0.0901, 0.4167, 0.4167, 0.9009, 0.3829, 0.4396]
OFFICIAL_LABELS = ["RB", "OB", "PF", "DE", "FS", "IS", "RO", "IN", "AF", "BE", "FO", "GR",
                   "PH", "PB", "OS", "OP", "OK"]


def ref_average_precision(col_scores, col_targets):
    ranking = np.argsort(col_scores, axis=0)[::-1]
    wanted = np.sum(col_targets)
    seen = 0.0
    visited = 0.0
    acc = 0.0
    for idx in ranking:
        visited += 1
        if col_targets[idx] == 1:
            seen += 1
            acc += seen / visited
        if seen == wanted:
            break
    if seen > 0:
        return acc / seen
    return 0


def ref_evaluation(scores, targets, weights=None, threshold=0.5):
    """Return (new, main, auxillary) dicts like the official ``evaluation``."""
    if weights is None:
        weights = OFFICIAL_WEIGHTS
    scores = np.array(scores, dtype=np.float64)
    targets = np.array(targets, copy=True)
    assert scores.shape == targets.shape
    n_rows, n_cls = scores.shape

    tp = np.zeros(n_cls + 1)
    pp = np.zeros(n_cls + 1)
    gp = np.zeros(n_cls + 1)
    ap = np.zeros(n_cls)

    for k in range(n_cls):
        col_s = scores[:, k]
        col_t = targets[:, k]          # a view: the fix below writes into ``targets``
        col_t[col_t == -1] = 0
        gp[k] = np.sum(col_t == 1)
        pp[k] = np.sum(col_s >= threshold)
        tp[k] = np.sum(col_t * (col_s >= threshold))
        ap[k] = ref_average_precision(col_s, col_t)

    # implicit Normal class
    fired = np.sum(scores >= threshold, axis=1)
    fired[fired > 0] = 1
    pred_normal = np.abs(fired - 1)
    gt = targets.copy()
    gt[targets == -1] = 0
    gt = np.sum(gt, axis=1)
    gt[gt > 0] = 1
    gt_normal = np.abs(gt - 1)
    gp[-1] = np.sum(gt_normal == 1)
    pp[-1] = np.sum(pred_normal >= threshold)
    tp[-1] = np.sum(gt_normal * (pred_normal >= threshold))

    pp[pp == 0] = 1

    with np.errstate(divide="ignore", invalid="ignore"):
        # overall
        o_p = np.sum(tp) / np.sum(pp)
        o_r = np.sum(tp) / np.sum(gp)
        o_f1 = (2 * o_p * o_r) / (o_p + o_r)
        # per-class averages (no guard)
        m = len(gp)
        c_p = np.sum(tp / pp) / m
        c_r = np.sum(tp / gp) / m
        c_f1 = (2 * c_p * c_r) / (c_p + c_r)
        # macro F1
        prec = tp / pp
        rec = tp / gp
        f1 = (2 * prec * rec) / (prec + rec)
        f1[np.isnan(f1)] = 0
        mf1_macro = np.sum(f1) / m
        # micro F1
        mf1_micro = (2 * np.sum(tp)) / (np.sum(pp) + np.sum(gp))
        # exact match
        same = np.equal(targets, scores >= threshold)
        row_ok = same.sum(axis=1)
        perfect = np.zeros(row_ok.shape)
        perfect[row_ok == n_cls] = 1
        emacc = np.sum(perfect) / n_rows
        m_ap = np.mean(ap)
        # CIW F2 over the 17 classes
        p17 = tp[:-1] / pp[:-1]
        r17 = tp[:-1] / gp[:-1]
        f2 = (5 * p17 * r17) / (4 * p17 + r17)
        f2[np.isnan(f2)] = 0
        f2_ciw = np.sum(f2 * weights) / np.sum(weights)
        f2_norm = (5 * prec[-1] * rec[-1]) / (4 * prec[-1] + rec[-1])

    new = {"F2": f2_ciw, "F2_class": list(f2) + [f2_norm], "F1_Normal": f1[-1]}
    main = {"OP": o_p, "OR": o_r, "OF1": o_f1, "CP": c_p, "CR": c_r, "CF1": c_f1,
            "MF1": mf1_macro, "mF1": mf1_micro, "EMAcc": emacc, "mAP": m_ap}
    aux = {"P_class": list(prec), "R_class": list(rec), "F1_class": list(f1), "AP": list(ap),
           "Np": list(pp), "Nc": list(tp), "Ng": list(gp)}
    return new, main, aux


def ref_results_dict(scores, targets):
    """The dict the official ``calculate_results.py`` dumps to JSON."""
    new, main, aux = ref_evaluation(scores, targets, OFFICIAL_WEIGHTS)
    return {"Labels": OFFICIAL_LABELS, "LabelWeights": OFFICIAL_WEIGHTS, "New": new,
            "Main": main, "Auxillary": aux}
