"""Seeded bootstrap confidence intervals for F2-CIW and F1-Normal, and paired comparisons.

Images (rows) are resampled with replacement. Resample i draws ``N`` row indices with its
own generator spawned from ``SeedSequence(seed)`` (see :func:`resample_indices`).
Per-class counts of all resamples come from matrix products: rows are grouped by their 0/1
indicator pattern (target, prediction, hit for the 17 classes and Normal), and multiplicities
(B x patterns, one gather and one ``bincount`` per resample) @ patterns (patterns x K) gives
exact integer counts. The metrics then come from
:func:`benchmark.metrics.metrics_from_counts`, i.e. the official definitions.

CIs are percentile intervals (default 95%). The paired comparison resamples the same
images for both score arrays; delta = metric(b) - metric(a), two-sided p-value
``min(1, 2 * min((#{delta_b <= 0} + 1), (#{delta_b >= 0} + 1)) / (B + 1))``.

:func:`paired_seed_bootstrap` compares two systems trained with several seeds each (one
score array per seed): a two-level bootstrap. Resample i draws the images as above (the same
draw for every seed of both arms, paired), and, independently per arm, ``S_arm`` seeds with
replacement from that arm's seeds (generator ``default_rng([seed, SEED_STREAM])``, ``(B,
S_arm)`` indices, arm a then arm b); the replicate is mean over the drawn seeds of b's metric
minus that of a's. delta = mean over b's seeds minus mean over a's (point values); CI and
p-value as above. With one seed per arm it is :func:`paired_bootstrap`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from benchmark import artifacts as A
from benchmark import metrics as M
from benchmark.classes import CIW

#: The metrics with CIs and paired comparisons (their names in every artefact).
HEADLINE = A.CI_METRICS
_CHUNK_ELEMENTS = 8_000_000  # indices (or pattern multiplicities) per chunk (~32 MB)
#: Second entropy word of the seed draws of :func:`paired_seed_bootstrap` (a stream apart
#: from the image draws ``SeedSequence(seed).spawn(B)``).
SEED_STREAM = 0x5EED


def _indicators(scores, targets, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row 0/1 matrices (N, 18): ground truth and prediction incl. the Normal entry."""
    s, gt = M._prepared(scores, targets)
    pred = s >= threshold
    gt = np.concatenate([gt, ~gt.any(axis=1, keepdims=True)], axis=1)
    pred = np.concatenate([pred, ~pred.any(axis=1, keepdims=True)], axis=1)
    return gt, pred


def _children(n_resamples: int, seed: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(n_resamples)


def _draw(child: np.random.SeedSequence, n: int) -> np.ndarray:
    """The row indices of one resample (the documented contract: int32, ``[0, n)``)."""
    return np.random.default_rng(child).integers(0, n, size=n, dtype=np.int32)


def resample_indices(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) int32 index arrays, chunk by chunk, for all ``n_resamples`` resamples.

    Resample i uses its own generator ``default_rng(SeedSequence(seed).spawn(...)[i])``, so
    the draws do not depend on the chunking.
    """
    children = _children(n_resamples, seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_resamples, per_chunk):
        part = children[start:start + per_chunk]
        out = np.empty((len(part), n), dtype=np.int32)
        for i, c in enumerate(part):
            out[i] = _draw(c, n)
        yield out


def _row_patterns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the rows of a boolean (N, K) matrix by their 0/1 pattern.

    Returns ``(first, inverse)``: the row index of one representative per distinct pattern
    (U of them) and, per row, the number of its pattern (``0 <= inverse < U``). Rows are
    packed into 64-bit words, so this is one 1-D ``unique`` per word instead of a row sort.
    """
    n, k = x.shape
    packed = np.packbits(x, axis=1)                          # (N, ceil(K / 8)) uint8
    width = -(-packed.shape[1] // 8) * 8
    if width != packed.shape[1]:
        packed = np.concatenate(
            [packed, np.zeros((n, width - packed.shape[1]), dtype=np.uint8)], axis=1)
    words = np.ascontiguousarray(packed).view(np.uint64)     # (N, W)
    inverse = None
    for w in range(words.shape[1]):
        if inverse is None:
            key = words[:, w]
        else:
            _, code = np.unique(words[:, w], return_inverse=True)
            key = inverse.astype(np.int64) * (int(code.max()) + 1) + code.reshape(-1)
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    if inverse is None:                                      # K == 0
        return np.zeros(min(n, 1), dtype=np.intp), np.zeros(n, dtype=np.intp)
    return first, inverse


def _resampled_counts(blocks: list[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """For each (N, K) 0/1 block, the (B, K) column sums over every resample.

    Rows are first grouped by their 0/1 pattern (U distinct patterns, usually far fewer
    than N); each resample's pattern multiplicities (one gather and one ``bincount`` per
    resample) times the pattern matrix (U x K) gives the exact counts. Resamples are
    multiplied in chunks of at most ``_CHUNK_ELEMENTS`` multiplicities.
    """
    x = np.concatenate(blocks, axis=1).astype(bool)
    n = x.shape[0]
    if n >= 2**24:
        raise ValueError("too many rows for exact float32 counts (max 16,777,215)")
    first, inverse = _row_patterns(x)
    patterns = x[first].astype(np.float32)  # (U, K); float32 sums of integers < 2**24 are exact
    u = patterns.shape[0]
    # the smallest index type that holds every pattern number makes the gather cheapest
    inverse = inverse.astype(np.int16 if u <= np.iinfo(np.int16).max else np.intp)
    children = _children(n_resamples, seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(u, 1))
    allc = np.empty((n_resamples, x.shape[1]), dtype=np.float64)
    mult = np.empty((min(per_chunk, n_resamples), u), dtype=np.float32)
    for start in range(0, n_resamples, per_chunk):
        part = children[start:start + per_chunk]
        for i, c in enumerate(part):
            mult[i] = np.bincount(np.take(inverse, _draw(c, n)), minlength=u)
        allc[start:start + len(part)] = mult[:len(part)] @ patterns
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


def _delta_summary(delta: np.ndarray, n: int, confidence: float) -> tuple[list[float], float]:
    """Percentile CI and two-sided p-value of resampled deltas."""
    lo, hi = _interval(delta, confidence)
    le = int(np.sum(delta <= 0))
    ge = int(np.sum(delta >= 0))
    return [lo, hi], min(1.0, 2.0 * min(le + 1, ge + 1) / (n + 1))


def paired_seed_bootstrap(scores_a, scores_b, targets, n: int = 1000, seed: int = 0,
                          confidence: float = 0.95, threshold: float = M.THRESHOLD,
                          weights=CIW) -> A.SeedPairedComparison:
    """Two-level paired bootstrap of two systems with several seeds each (module docstring).

    ``scores_a`` / ``scores_b``: sequences of score arrays, one per seed (rows aligned with
    ``targets``, the same images for every array). Returns
    :class:`benchmark.artifacts.SeedPairedComparison`: the :func:`paired_bootstrap` keys plus
    ``method``, ``n_seeds_a`` and ``n_seeds_b``; per metric ``a`` / ``b`` are the means over the
    seeds, ``delta`` = b - a (0-1 scale).
    """
    if n < 1:
        raise ValueError("number of bootstrap resamples must be >= 1")
    arms = []
    for name, arm in (("a", scores_a), ("b", scores_b)):
        arrays = [np.asarray(x, dtype=np.float64) for x in arm]
        if not arrays:
            raise ValueError(f"arm {name}: no score arrays (one per seed)")
        arms.append(arrays)
    shape = arms[0][0].shape
    for arrays in arms:
        for x in arrays:
            if x.shape != shape:
                raise ValueError(f"score arrays differ in shape: {shape} vs {x.shape}")
    gt = None
    blocks: list[np.ndarray] = []
    for arrays in arms:
        for x in arrays:
            g, p = _indicators(x, targets, threshold)
            if gt is None:
                gt = g
                blocks.append(gt)
            blocks += [p, gt & p]
    counts = _resampled_counts(blocks, n, seed)        # the same image draws for every array
    ng = counts[0]
    per_arm: list[dict[str, np.ndarray]] = []           # metric -> (B, S_arm) replicates
    points: list[dict[str, float]] = []                 # metric -> mean of the seeds' points
    i = 1
    for arrays in arms:
        reps = {name: np.empty((n, len(arrays))) for name in HEADLINE}
        pts = {name: [] for name in HEADLINE}
        for j, x in enumerate(arrays):
            h = _headline(ng, counts[i], counts[i + 1], weights)
            i += 2
            point = M.evaluate(x, targets, threshold, weights)
            for name in HEADLINE:
                reps[name][:, j] = h[name]
                pts[name].append(point[A.NEW][A.POINT_KEY[name]])
        per_arm.append(reps)
        points.append({name: float(np.mean(v)) for name, v in pts.items()})
    rng = np.random.default_rng([int(seed), SEED_STREAM])
    picks = [rng.integers(0, len(arrays), size=(n, len(arrays))) for arrays in arms]
    entries: dict[str, A.PairedMetric] = {}
    for name in HEADLINE:
        mean_a, mean_b = (np.take_along_axis(per_arm[k][name], picks[k], axis=1).mean(axis=1)
                          for k in (0, 1))
        ci, p = _delta_summary(mean_b - mean_a, n, confidence)
        a, b = points[0][name], points[1][name]
        entries[name] = A.paired_metric(a, b, b - a, ci, p)
    return A.seed_paired_comparison(int(n), int(seed), float(confidence), len(arms[0]),
                                    len(arms[1]), entries)
