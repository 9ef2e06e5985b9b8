"""Seeded bootstrap confidence intervals for F2-CIW and F1-Normal, and paired comparisons.

Images (rows) are resampled with replacement. Resample i draws ``N`` row indices with its
own generator spawned from ``SeedSequence(seed)`` (see :func:`resample_indices`).
Per-class counts of all resamples come from matrix products: rows are grouped by their 0/1 indicator pattern (target, prediction,
hit for the 17 classes and Normal), and multiplicities (B x patterns) @ patterns (patterns x
K) gives exact integer counts. The metrics then come from
:func:`benchmark.metrics.metrics_from_counts`, i.e. the official definitions.

CIs are percentile intervals (default 95%). The paired comparison resamples the same
images for both score arrays; delta = metric(b) - metric(a), two-sided p-value
``min(1, 2 * min((#{delta_b <= 0} + 1), (#{delta_b >= 0} + 1)) / (B + 1))``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from benchmark import artifacts as A
from benchmark import metrics as M
from benchmark.classes import CIW

#: The metrics with CIs and paired comparisons (their names in every artefact).
HEADLINE = A.CI_METRICS
_CHUNK_ELEMENTS = 8_000_000  # indices per chunk (~32 MB int32)


def _indicators(scores, targets, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row 0/1 matrices (N, 18): ground truth and prediction incl. the Normal entry."""
    s, t = M.prepare(scores, targets)
    pred = s >= threshold
    gt = t == 1
    gt = np.concatenate([gt, ~gt.any(axis=1, keepdims=True)], axis=1)
    pred = np.concatenate([pred, ~pred.any(axis=1, keepdims=True)], axis=1)
    return gt, pred


def resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) int32 index arrays, chunk by chunk, for all ``n_resamples`` resamples.

    Resample i uses its own generator ``default_rng(SeedSequence(seed).spawn(...)[i])``, so
    the draws do not depend on the chunking.
    """
    children = np.random.SeedSequence(seed).spawn(n_resamples)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_resamples, per_chunk):
        yield np.stack([np.random.default_rng(c).integers(0, n, size=n, dtype=np.int32)
                        for c in children[start:start + per_chunk]])


def _resampled_counts(blocks: list[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """For each (N, K) 0/1 block, the (B, K) column sums over every resample.

    Rows are first grouped by their 0/1 pattern (U distinct patterns, usually far fewer
    than N); each resample's pattern multiplicities (B x U, one ``bincount``) times the
    pattern matrix (U x K) gives the exact counts.
    """
    x = np.concatenate(blocks, axis=1).astype(bool)
    n = x.shape[0]
    if n >= 2**24:
        raise ValueError("too many rows for exact float32 counts (max 16,777,215)")
    _, first, inverse = np.unique(np.packbits(x, axis=1), axis=0, return_index=True,
                                  return_inverse=True)
    inverse = inverse.reshape(-1)
    patterns = x[first].astype(np.float32)  # (U, K); float32 sums of integers < 2**24 are exact
    u = patterns.shape[0]
    out = []
    for idx in resample_indices(n, n_resamples, seed):
        b = idx.shape[0]
        flat = (inverse[idx] + (np.arange(b) * u)[:, None]).ravel()
        mult = np.bincount(flat, minlength=b * u).reshape(b, u).astype(np.float32)
        out.append((mult @ patterns).astype(np.float64))
    allc = np.concatenate(out, axis=0)
    res, start = [], 0
    for blk in blocks:
        res.append(allc[:, start:start + blk.shape[1]])
        start += blk.shape[1]
    return res


def _headline(ng, np_, nc, weights) -> dict[str, np.ndarray]:
    m = M.metrics_from_counts(ng, np_, nc, weights)
    return {A.F2_CIW: m["F2_CIW"], A.F1_NORMAL: m["F1_Normal"]}


def bootstrap_distribution(scores, targets, n: int = 1000, seed: int = 0,
                           threshold: float = M.THRESHOLD, weights=CIW) -> dict[str, np.ndarray]:
    """The ``n`` bootstrap replicates of F2-CIW and F1-Normal (arrays of shape (n,))."""
    if n < 1:
        raise ValueError("number of bootstrap resamples must be >= 1")
    gt, pred = _indicators(scores, targets, threshold)
    ng, np_, nc = _resampled_counts([gt, pred, gt & pred], n, seed)
    return _headline(ng, np_, nc, weights)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [a, 1.0 - a])
    return float(lo), float(hi)


def bootstrap_ci(scores, targets, n: int = 1000, seed: int = 0, confidence: float = 0.95,
                 threshold: float = M.THRESHOLD, weights=CIW) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs: ``{"F2_CIW": (lo, hi), "F1_Normal": (lo, hi)}`` (0-1 scale)."""
    dist = bootstrap_distribution(scores, targets, n, seed, threshold, weights)
    return {k: _interval(v, confidence) for k, v in dist.items()}


def paired_bootstrap(scores_a, scores_b, targets, n: int = 1000, seed: int = 0,
                     confidence: float = 0.95, threshold: float = M.THRESHOLD,
                     weights=CIW) -> A.PairedComparison:
    """Paired bootstrap of two score arrays on the same images (rows aligned).

    Returns ``{"n_resamples", "seed", "confidence", "metrics": {name: {"a", "b", "delta",
    "ci": [lo, hi], "p_value"}}}`` (:class:`benchmark.artifacts.PairedComparison`) for
    F2_CIW and F1_Normal; delta = b - a (0-1 scale).
    """
    if n < 1:
        raise ValueError("number of bootstrap resamples must be >= 1")
    sa = np.asarray(scores_a, dtype=np.float64)
    sb = np.asarray(scores_b, dtype=np.float64)
    if sa.shape != sb.shape:
        raise ValueError(f"score arrays differ in shape: {sa.shape} vs {sb.shape}")
    gt, pa = _indicators(sa, targets, threshold)
    _, pb = _indicators(sb, targets, threshold)
    ng, npa, nca, npb, ncb = _resampled_counts([gt, pa, gt & pa, pb, gt & pb], n, seed)
    da = _headline(ng, npa, nca, weights)
    db = _headline(ng, npb, ncb, weights)
    point_a = M.evaluate(sa, targets, threshold, weights)
    point_b = M.evaluate(sb, targets, threshold, weights)
    entries: dict[str, A.PairedMetric] = {}
    for name in HEADLINE:
        a = point_a[A.NEW][A.POINT_KEY[name]]
        b = point_b[A.NEW][A.POINT_KEY[name]]
        delta = db[name] - da[name]
        lo, hi = _interval(delta, confidence)
        le = int(np.sum(delta <= 0))
        ge = int(np.sum(delta >= 0))
        p = min(1.0, 2.0 * min(le + 1, ge + 1) / (n + 1))
        entries[name] = A.paired_metric(a, b, b - a, [lo, hi], p)
    return A.paired_comparison(int(n), int(seed), float(confidence), entries)
