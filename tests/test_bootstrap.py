"""Bootstrap CIs and paired comparisons: replicates equal the official metrics on resampled rows."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark import bootstrap as B
from benchmark import metrics as M


def _data(seed=0, n=300, noise=0.6):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 17)) < np.linspace(0.02, 0.3, 17)).astype(int)
    t[rng.random(n) < 0.4] = 0
    s = np.clip(0.5 * t + rng.random((n, 17)) * noise, 0, 1).round(2)
    return s, t


def test_replicates_equal_official_metrics_on_resampled_rows():
    s, t = _data()
    dist = B.bootstrap_distribution(s, t, n=25, seed=3)
    idx = np.concatenate(list(B.resample_indices(len(s), 25, 3)), axis=0)
    for b in range(25):
        r = M.evaluate(s[idx[b]], t[idx[b]])
        assert dist["F2_CIW"][b] == pytest.approx(r["New"]["F2"], abs=1e-12)
        assert dist["F1_Normal"][b] == pytest.approx(r["New"]["F1_Normal"], abs=1e-12)


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


def test_paired_replicates_are_differences_on_the_same_rows():
    s, t = _data(4)
    s2, _ = _data(4, noise=0.9)
    res = B.paired_bootstrap(s, s2, t, n=100, seed=9)
    da = B.bootstrap_distribution(s, t, n=100, seed=9)
    db = B.bootstrap_distribution(s2, t, n=100, seed=9)
    for name in ("F2_CIW", "F1_Normal"):
        delta = db[name] - da[name]
        lo, hi = np.quantile(delta, [0.025, 0.975])
        m = res["metrics"][name]
        assert m["ci"] == pytest.approx([lo, hi], abs=1e-12)
        assert m["delta"] == pytest.approx(m["b"] - m["a"])
        assert m["a"] == M.evaluate(s, t)["New"]["F2" if name == "F2_CIW" else "F1_Normal"]
        le, ge = np.sum(delta <= 0), np.sum(delta >= 0)
        assert m["p_value"] == pytest.approx(min(1.0, 2 * min(le + 1, ge + 1) / 101))


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
