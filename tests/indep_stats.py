"""Test-side re-implementation of the headline metrics and the (paired) bootstrap.

Written from the definitions (REFERENCE.md section 2 and the contract documented in
``benchmark/bootstrap.py``), not from the library code, so tests can compare the library's
bootstrap, ``sewerbench compare`` and the ablation table against it:

* F2-CIW: per class Nc / Np / Ng at ``score >= 0.5``, Np = 0 -> 1, P = Nc/Np, R = Nc/Ng,
  F2 = 5PR / (4P + R), nan -> 0, weighted mean with the official class-importance weights;
* F1-Normal: F1 of "all 17 targets 0" vs "no score >= 0.5", nan -> 0;
* resample i draws N row indices with replacement from
  ``default_rng(SeedSequence(seed).spawn(B)[i]).integers(0, N, size=N)``;
* percentile CI (``np.quantile``, linear) of the replicate deltas b - a; two-sided p-value
  ``min(1, 2 * min(#{d <= 0} + 1, #{d >= 0} + 1) / (B + 1))``.
"""
from __future__ import annotations

import math

import numpy as np

WEIGHTS = [1.00, 0.5518, 0.2896, 0.1622, 0.6419, 0.1847, 0.3559, 0.3131, 0.0811, 0.2275,
           0.2477, 0.0901, 0.4167, 0.4167, 0.9009, 0.3829, 0.4396]


def _ratio(a: float, b: float) -> float:
    return a / b if b != 0 else float("nan")


def headline(scores, targets) -> dict[str, float]:
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    pred = s >= 0.5
    pos = t == 1
    f2 = []
    for k in range(s.shape[1]):
        nc = float(np.sum(pos[:, k] & pred[:, k]))
        npred = max(float(np.sum(pred[:, k])), 1.0)
        ng = float(np.sum(pos[:, k]))
        p, r = nc / npred, _ratio(nc, ng)
        v = _ratio(5 * p * r, 4 * p + r)
        f2.append(0.0 if math.isnan(v) else v)
    f2_ciw = sum(w * v for w, v in zip(WEIGHTS, f2)) / sum(WEIGHTS)
    gt_n, pr_n = ~pos.any(axis=1), ~pred.any(axis=1)
    nc = float(np.sum(gt_n & pr_n))
    p, r = nc / max(float(np.sum(pr_n)), 1.0), _ratio(nc, float(np.sum(gt_n)))
    f1 = _ratio(2 * p * r, p + r)
    return {"F2_CIW": f2_ciw, "F1_Normal": 0.0 if math.isnan(f1) else f1}


def draws(n: int, n_resamples: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(c).integers(0, n, size=n)
            for c in np.random.SeedSequence(seed).spawn(n_resamples)]


def replicates(scores, targets, n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    s, t = np.asarray(scores), np.asarray(targets)
    reps = [headline(s[i], t[i]) for i in draws(len(s), n_resamples, seed)]
    return {k: np.array([r[k] for r in reps]) for k in ("F2_CIW", "F1_Normal")}


def paired(scores_a, scores_b, targets, n_resamples: int, seed: int) -> dict[str, dict]:
    sa, sb, t = np.asarray(scores_a), np.asarray(scores_b), np.asarray(targets)
    pa, pb = headline(sa, t), headline(sb, t)
    out = {}
    idx = draws(len(t), n_resamples, seed)
    for name in ("F2_CIW", "F1_Normal"):
        d = np.array([headline(sb[i], t[i])[name] - headline(sa[i], t[i])[name] for i in idx])
        le, ge = int(np.sum(d <= 0)), int(np.sum(d >= 0))
        out[name] = {"a": pa[name], "b": pb[name], "delta": pb[name] - pa[name],
                     "ci": [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))],
                     "p_value": min(1.0, 2.0 * min(le + 1, ge + 1) / (n_resamples + 1)),
                     "replicates": d}
    return out
