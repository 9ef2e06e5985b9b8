"""Bootstrap CIs and paired comparisons, checked from outside the code: resamples drawn with
replacement (about 63.2 % unique rows), replicates equal the official metrics on rows drawn
here by the documented seeding contract, replicate means near the point estimate, and
paired deltas / CIs / p-values equal a paired bootstrap written in tests/indep_stats.py."""
from __future__ import annotations

import numpy as np
import pytest

import indep_stats as I
from benchmark import bootstrap as B
from benchmark import metrics as M


def _data(seed=0, n=300, noise=0.6):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 17)) < np.linspace(0.02, 0.3, 17)).astype(int)
    t[rng.random(n) < 0.4] = 0
    s = np.clip(0.5 * t + rng.random((n, 17)) * noise, 0, 1).round(2)
    return s, t


def test_resamples_are_drawn_with_replacement():
    n, b = 1000, 200
    idx = np.concatenate(list(B.resample_indices(n, b, 0)), axis=0)
    assert idx.shape == (b, n) and idx.min() >= 0 and idx.max() <= n - 1
    unique = np.array([len(np.unique(row)) for row in idx]) / n
    expect = 1 - (1 - 1 / n) ** n                               # 0.6323
    assert abs(unique.mean() - expect) < 0.005
    assert unique.max() < 0.7                                    # every resample has duplicates
    counts = np.stack([np.bincount(row, minlength=n) for row in idx])
    assert abs(np.mean(counts == 2) - 0.5 * np.exp(-1)) < 0.005  # Poisson(1) multiplicities
    assert abs(np.mean(idx) - (n - 1) / 2) < 2                   # every row can be drawn
    assert {0, n - 1} <= set(np.unique(idx).tolist())
    # the documented contract: resample i = default_rng(SeedSequence(seed).spawn(B)[i]).integers(0, N, N)
    for row, mine in zip(idx[:20], I.draws(n, 20, 0)):
        assert np.array_equal(row, mine)


def test_replicates_equal_official_metrics_on_rows_drawn_here():
    s, t = _data()
    dist = B.bootstrap_distribution(s, t, n=25, seed=3)
    for b, rows in enumerate(I.draws(len(s), 25, 3)):
        r = M.evaluate(s[rows], t[rows])
        h = I.headline(s[rows], t[rows])
        assert dist["F2_CIW"][b] == pytest.approx(r["New"]["F2"], abs=1e-12)
        assert dist["F1_Normal"][b] == pytest.approx(r["New"]["F1_Normal"], abs=1e-12)
        assert dist["F2_CIW"][b] == pytest.approx(h["F2_CIW"], abs=1e-12)
        assert dist["F1_Normal"][b] == pytest.approx(h["F1_Normal"], abs=1e-12)


def test_replicate_mean_and_spread_agree_with_an_outside_bootstrap():
    s, t = _data(7, n=1000, noise=0.55)
    dist = B.bootstrap_distribution(s, t, n=400, seed=0)
    point = I.headline(s, t)
    rng = np.random.default_rng(12345)  # an unrelated generator: only the statistics must agree
    mine = {k: [] for k in point}
    for _ in range(400):
        rows = rng.integers(0, len(s), len(s))
        for k, v in I.headline(s[rows], t[rows]).items():
            mine[k].append(v)
    for k in point:
        sd = float(np.std(mine[k]))
        assert sd > 0.005
        assert abs(float(np.mean(dist[k])) - point[k]) < 0.25 * sd      # centred on the estimate
        assert 0.8 < float(np.std(dist[k])) / sd < 1.25                  # same spread
        lo, hi = B.bootstrap_ci(s, t, n=400, seed=0)[k]
        assert (lo, hi) == pytest.approx(tuple(np.quantile(dist[k], [0.025, 0.975])), abs=1e-12)
        assert lo < point[k] < hi and hi - lo == pytest.approx(3.92 * sd, rel=0.25)


def test_chunking_does_not_change_the_draws(monkeypatch):
    s, t = _data(1)
    full = B.bootstrap_distribution(s, t, n=40, seed=5)
    monkeypatch.setattr(B, "_CHUNK_ELEMENTS", 7 * len(s))  # 7 resamples per chunk
    chunked = B.bootstrap_distribution(s, t, n=40, seed=5)
    for k in full:
        assert np.array_equal(full[k], chunked[k])


def test_ci_seeded_and_sensible():
    s, t = _data(2)
    a = B.bootstrap_ci(s, t, n=300, seed=0)
    b = B.bootstrap_ci(s, t, n=300, seed=0)
    c = B.bootstrap_ci(s, t, n=300, seed=1)
    assert a == b and a != c
    assert set(a) == {"F2_CIW", "F1_Normal"}
    r = M.evaluate(s, t)
    for key, point in (("F2_CIW", r["New"]["F2"]), ("F1_Normal", r["New"]["F1_Normal"])):
        lo, hi = a[key]
        assert 0.0 <= lo < hi <= 1.0
        assert lo <= point <= hi


def test_ci_degenerate_for_perfect_scores():
    t = np.vstack([np.tile(np.eye(17, dtype=int), (30, 1)), np.zeros((50, 17), dtype=int)])
    ci = B.bootstrap_ci(t.astype(float), t, n=50, seed=0)
    assert ci["F1_Normal"] == (1.0, 1.0)
    assert ci["F2_CIW"] == pytest.approx((1.0, 1.0))
    # one positive per class: resamples miss classes (F2 0 for them, still weighted)
    t1 = np.vstack([np.eye(17, dtype=int), np.zeros((5, 17), dtype=int)])
    lo, hi = B.bootstrap_ci(t1.astype(float), t1, n=50, seed=0)["F2_CIW"]
    assert lo < hi < 1.0


def test_paired_identical_inputs():
    s, t = _data(3)
    res = B.paired_bootstrap(s, s, t, n=200, seed=0)
    assert res["n_resamples"] == 200 and res["seed"] == 0
    for m in res["metrics"].values():
        assert m["delta"] == 0.0 and m["ci"] == [0.0, 0.0] and m["p_value"] == 1.0
        assert m["a"] == m["b"]


@pytest.mark.parametrize("seed", [9, 10])
def test_paired_equals_an_independent_paired_bootstrap(seed):
    s, t = _data(4)
    s2, _ = _data(4, noise=0.9)
    res = B.paired_bootstrap(s, s2, t, n=120, seed=seed)
    mine = I.paired(s, s2, t, 120, seed)
    assert res["n_resamples"] == 120 and res["seed"] == seed
    for name in ("F2_CIW", "F1_Normal"):
        m, e = res["metrics"][name], mine[name]
        assert m["a"] == pytest.approx(e["a"], abs=1e-12) and m["b"] == pytest.approx(e["b"], abs=1e-12)
        assert m["delta"] == pytest.approx(e["delta"], abs=1e-12)
        assert m["ci"] == pytest.approx(e["ci"], abs=1e-12)
        assert m["p_value"] == pytest.approx(e["p_value"], abs=1e-12)
    # deltas are b - a: swapping the systems flips them and mirrors the CI
    rev = B.paired_bootstrap(s2, s, t, n=120, seed=seed)["metrics"]["F2_CIW"]
    m = res["metrics"]["F2_CIW"]
    assert rev["delta"] == pytest.approx(-m["delta"], abs=1e-12)
    assert rev["ci"] == pytest.approx([-m["ci"][1], -m["ci"][0]], abs=1e-12)
    assert rev["p_value"] == pytest.approx(m["p_value"], abs=1e-12)


def test_paired_p_value_hand_case():
    """Two systems differing on one Normal row only: every replicate containing that row has
    delta > 0, the others 0; p = 2 * (#{d <= 0} + 1) / (B + 1)."""
    t = np.zeros((10, 17), dtype=int)
    t[:5, 0] = 1
    a = np.where(t == 1, 0.9, 0.1)
    b = a.copy()
    a[9, 3] = 0.7                      # A predicts a defect on Normal row 9, B does not
    res = B.paired_bootstrap(a, b, t, n=50, seed=2)["metrics"]["F1_Normal"]
    has_row = [9 in rows for rows in I.draws(10, 50, 2)]
    n_zero = 50 - sum(has_row)
    assert 0 < n_zero < 50
    assert res["p_value"] == pytest.approx(min(1.0, 2 * (n_zero + 1) / 51), abs=1e-12)
    assert res["delta"] == pytest.approx(1.0 - 2 * 4 / 9, abs=1e-12)  # F1 normal 1 vs 8/9
    assert res["ci"][1] > 0


def test_paired_detects_a_clearly_worse_system():
    s, t = _data(5, n=400)
    worse = np.clip(s + np.random.default_rng(0).normal(0, 0.35, s.shape), 0, 1)
    res = B.paired_bootstrap(s, worse, t, n=300, seed=0)
    m = res["metrics"]["F2_CIW"]
    assert m["delta"] < 0 and m["ci"][1] < 0 and m["p_value"] < 0.01


def test_errors():
    s, t = _data(6, n=20)
    with pytest.raises(ValueError):
        B.bootstrap_ci(s, t, n=0)
    with pytest.raises(ValueError):
        B.paired_bootstrap(s, s[:10], t)
