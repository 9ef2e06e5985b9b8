"""GIST descriptor and Myrans2018 (GIST + Extra Trees)."""
from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest

from benchmark.errors import SewerbenchError
from methods import registry
from methods.gist import gabor_bank, gist_descriptor, reference_grey, resize_linear_cv2
from methods.myrans2018 import (MyransClassifier, grid_search, official_class_weights,
                                weighted_log_loss)


def _images(n=20, h=48, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_gist_shape_and_determinism():
    imgs = _images(4, 130, 150)
    a = gist_descriptor(imgs)
    b = gist_descriptor(imgs.copy())
    assert a.shape == (4, 512) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all()
    np.testing.assert_array_equal(a, b)
    # chunking does not change values
    np.testing.assert_allclose(gist_descriptor(imgs, chunk=1), a, rtol=1e-6)


def test_gist_block_layout_is_x_block_major():
    img = np.full((1, 128, 128, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(0)
    img[0, :, :32] = rng.integers(0, 256, (128, 32, 1), dtype=np.uint8)  # texture in x-block 0
    d = gist_descriptor(img).reshape(32, 4, 4)  # filter, x block, y block
    assert d[:, 0, :].mean() > 3 * d[:, 2:, :].mean()
    # the texture spans every y block of x-block 0
    assert (d[:, 0, :].min(axis=1) > d[:, 3, :].max(axis=1)).mean() > 0.9


def test_grey_resize_and_gabor_bank():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[0, 0] = (10, 20, 31)  # mean 20.33 -> truncated to 20
    assert reference_grey(img)[0, 0] == 20
    g = np.arange(16, dtype=np.uint8).reshape(4, 4)
    # exact 2x downscale: OpenCV's 2x2 mean, rounded half up
    np.testing.assert_array_equal(resize_linear_cv2(g, 2), [[3, 5], [11, 13]])
    bank = gabor_bank(128, 128)
    assert bank.shape == (32, 128, 128) and bank.max() <= 1.0
    with pytest.raises(SewerbenchError):
        gist_descriptor(np.zeros((1, 4, 4, 3), dtype=np.uint8))


def test_myrans_multilabel_fit_predict_pickle(tmp_path):
    imgs = _images()
    y = (np.random.default_rng(1).random((20, 17)) < 0.3).astype(int)
    y[:, 5] = 0  # a class without positives scores 0
    model = registry.build("myrans2018", size="tiny", seed=3, grid_search=False, protocol="corrected")
    assert model.reference_num_params is None and model.n_jobs == 2
    model.fit(imgs, y)
    p = model.predict_proba(imgs)
    assert p.shape == (20, 17) and ((p >= 0) & (p <= 1)).all()
    assert (p[:, 5] == 0).all()
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(imgs), p)
    again = registry.build("myrans2018", size="tiny", seed=3, grid_search=False,
                           protocol="corrected").fit(imgs, y)
    np.testing.assert_array_equal(again.predict_proba(imgs), p)  # deterministic under the seed


def test_myrans_binary_and_inverted_scores():
    imgs = _images()
    y = np.array([1, 0] * 10)
    model = registry.build("myrans2018_binary", size="tiny", seed=0, grid_search=False,
                           protocol="corrected").fit(imgs, y[:, None])
    p = model.predict_proba(imgs)
    assert p.shape == (20, 1)
    inv = registry.build("myrans2018_binary", size="tiny", seed=0, grid_search=False, inverted_scores=True)
    np.testing.assert_allclose(inv.fit(imgs, y).predict_proba(imgs), 1 - p)
    pickle.loads(pickle.dumps(model))
    with pytest.raises(SewerbenchError, match="before fit"):
        MyransClassifier(True).predict_proba_features(np.zeros((1, 512)))
    with pytest.raises(SewerbenchError, match="0/1"):
        model.fit_features(np.zeros((3, 512)), np.array([0, 2, 1]))


def test_official_class_weights_and_loss_hand_cases():
    assert official_class_weights(np.array([1, 0, 0, 0]), binary=True) == {1: 3.0}
    w = official_class_weights(np.array([[1, 0], [1, 0], [0, 0], [1, 0]]), binary=False)
    assert w == [{0: 1.0, 1: 1 / 3}, {0: 1.0, 1: 0.0}]
    probs = np.array([[0.5], [0.25]])
    targets = np.array([[1], [0]])
    # -(2 * log 0.5 + log 0.75) / 1 class / 2 samples
    expected = -(2 * np.log(0.5) + np.log(0.75)) / 2
    assert weighted_log_loss(probs, targets, [2.0]) == pytest.approx(expected)
    # log of a probability <= 1e-10 counts as -10
    assert weighted_log_loss(np.array([[0.0]]), np.array([[1]]), [1.0]) == pytest.approx(10.0)


def test_grid_search_picks_lowest_val_loss():
    rng = np.random.default_rng(0)
    X = rng.random((30, 512)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    grid = {"n_estimators": (3, 5), "max_depth": (2,), "max_features": ("sqrt",)}
    best, rows = grid_search(X[:20], y[:20], X[20:], y[20:], binary=True, grid=grid)
    assert len(rows) == 2
    assert min(r["val_loss"] for r in rows) == pytest.approx(
        [r["val_loss"] for r in rows if r["n_estimators"] == best.n_estimators][0])
