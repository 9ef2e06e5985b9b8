"""Myrans2018 against the reference (Sewer-ML gist_extractor.py, myrans_trainer.py,
myrans_inference.py): the OpenCV resize and grey conversion of the GIST input, the grid
search and its selection rule, and what the ``published`` and ``corrected`` protocols change."""
from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.ensemble import ExtraTreesClassifier

from benchmark.config import resolve_run
from benchmark.data.dataset import SewerMLDataset
from benchmark.data.images import ImageIndex
from benchmark.errors import SewerbenchError
from benchmark.train.data import image_source
from benchmark.train.runtime import build_model
from helpers import make_tiny_dataset, tiny_params
from methods import registry
from methods.gist import gist_descriptor, gist_preprocess, reference_grey, resize_linear_cv2
from methods.myrans2018 import (GRID, MyransClassifier, grid_search, official_class_weights,
                                positive_weights, reference_loss)

SEWER_SIZES = [(288, 352), (576, 704), (576, 720), (576, 768), (284, 350), (96, 128)]


# ------------------------------------------------------------------ GIST input
@pytest.mark.parametrize("hw", SEWER_SIZES + [(256, 256), (64, 48), (127, 129), (300, 200), (128, 128),
                                              (13, 9), (1000, 999)])
def test_resize_linear_is_bit_exact_opencv(hw):
    rng = np.random.default_rng(sum(hw))
    images = [rng.integers(0, 256, hw, dtype=np.uint8),
              (np.add.outer(np.arange(hw[0]), 3 * np.arange(hw[1])) % 256).astype(np.uint8),
              np.full(hw, 255, np.uint8)]
    for g in images:
        for size in (128, 64, (40, 70)):
            h, w = (size, size) if isinstance(size, int) else size
            np.testing.assert_array_equal(resize_linear_cv2(g, size), cv2.resize(g, (w, h)))
    # three equal channels resize like the grey image (what the reference resizes)
    g = images[0]
    np.testing.assert_array_equal(cv2.resize(np.repeat(g[:, :, None], 3, axis=2), (128, 128))[..., 0],
                                  resize_linear_cv2(g, 128))


def test_resize_random_shapes_and_errors():
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 700, 2))
        th, tw = (int(v) for v in rng.integers(2, 200, 2))
        g = rng.integers(0, 256, (h, w), dtype=np.uint8)
        np.testing.assert_array_equal(resize_linear_cv2(g, (th, tw)), cv2.resize(g, (tw, th)))
    # the exact 2x downscale is OpenCV's 2x2 mean rounded half up, not half to even
    g = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_linear_cv2(g, 2), [[3, 5], [11, 13]])
    with pytest.raises(SewerbenchError, match="uint8"):
        resize_linear_cv2(g.astype(np.float32), 2)
    with pytest.raises(SewerbenchError, match="at least 8x8"):
        gist_preprocess([np.zeros((4, 4, 3), np.uint8)], 16)
    with pytest.raises(SewerbenchError, match="uint8"):
        gist_preprocess([np.zeros((20, 20, 3), np.float32)], 16)


def _reference_gist_input(path, size=128):
    """gist_extractor.py:25-31, line by line."""
    img = cv2.imread(str(path))
    grey = np.mean(img, axis=2)
    img[:, :, 0] = grey
    img[:, :, 1] = grey
    img[:, :, 2] = grey
    return cv2.resize(img, (size, size)).astype(np.uint8)


def test_gist_input_equals_reference_recipe_from_png(tmp_path):
    rng = np.random.default_rng(0)
    names, expected = [], []
    for k, (h, w) in enumerate(SEWER_SIZES):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[: h // 2] //= 3   # some structure, not only noise
        path = tmp_path / f"part{k % 2}" / f"{k + 1:08d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(path)
        names.append(path.name)
        ref = _reference_gist_input(path)
        assert (ref[..., 0] == ref[..., 1]).all() and (ref[..., 1] == ref[..., 2]).all()
        expected.append(ref[..., 0])
    # the engine's read path for a full-resolution method: the image folder, no resize
    ds = SewerMLDataset(pd.DataFrame({"Filename": names}), ImageIndex(tmp_path))
    originals = [ds.load(i) for i in range(len(ds))]
    assert [a.shape[:2] for a in originals] == SEWER_SIZES
    np.testing.assert_array_equal(gist_preprocess(originals, 128), np.stack(expected))
    # grey: the channel mean truncated (10 + 20 + 31) / 3 = 20.33 -> 20
    assert reference_grey(np.array([[[10, 20, 31]]], np.uint8))[0, 0] == 20
    # the descriptor of the originals = the descriptor of the reference's 128x128 input
    np.testing.assert_array_equal(gist_descriptor(originals), gist_descriptor(np.stack(expected)))


def test_engine_reads_originals_for_myrans(tmp_path):
    root = make_tiny_dataset(tmp_path / "d", n_train=8, n_val=4, n_test=4)
    params = tiny_params(root)
    cfg = resolve_run(params, "myrans")
    assert cfg.runtime.use_cache is True
    assert isinstance(image_source(cfg), ImageIndex)          # never the resized cache
    assert not isinstance(image_source(resolve_run(params, "tiny")), ImageIndex)


# ------------------------------------------------------------------ loss and scores
def test_reference_loss_columns_per_protocol():
    cols = np.array([[[0.8, 0.2], [0.3, 0.7], [0.0, 1.0]]])          # 1 class, 3 samples
    y = np.array([[1], [0], [1]])
    # published (lossFunc): positives scored with column 0, negatives with column 1
    pub = -(2 * np.log(0.8) + 2 * -10.0 + np.log(0.7)) / 3
    # corrected: positives with column 1, negatives with column 0
    cor = -(2 * np.log(0.2) + 2 * np.log(1.0) + np.log(0.3)) / 3
    assert reference_loss(cols, y, [2.0], "published") == pytest.approx(pub, rel=1e-15)
    assert reference_loss(cols, y, [2.0], "corrected") == pytest.approx(cor, rel=1e-15)
    # two classes: summed, then divided by classes and samples; weights of the training set
    cols2 = np.stack([cols[0], cols[0][::-1]])
    y2 = np.array([[1, 0], [0, 0], [1, 1]])
    one = reference_loss(cols2[:1], y2[:, :1], [2.0], "published") * 3
    two = reference_loss(cols2[1:], y2[:, 1:], [0.5], "published") * 3
    assert reference_loss(cols2, y2, [2.0, 0.5], "published") == pytest.approx((one + two) / 2 / 3)
    with pytest.raises(SewerbenchError, match="protocol"):
        reference_loss(cols, y, [1.0], "fixed")
    with pytest.raises(SewerbenchError, match="do not match"):
        reference_loss(cols, y, [1.0, 2.0], "published")
    assert list(positive_weights(np.array([[1, 0], [0, 0], [0, 0], [1, 0]]))) == [1.0, 0.0]


def _data(n=90, d=16, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d)).astype(np.float32)
    y = np.stack([(X[:, k] + 0.3 * rng.random(n) > 0.7) for k in range(c)], axis=1).astype(np.int64)
    return X[: n * 2 // 3], y[: n * 2 // 3], X[n * 2 // 3:], y[n * 2 // 3:]


def _naive_losses(X, y, Xv, yv, grid, protocol, binary=False):
    """The reference loop: a fresh forest per point, predict_proba, lossFunc."""
    weights = positive_weights(y)
    out = {}
    for n, depth, feats in itertools.product(grid["n_estimators"], grid["max_depth"], grid["max_features"]):
        forest = ExtraTreesClassifier(n_estimators=n, max_depth=depth, max_features=feats, n_jobs=1,
                                      random_state=0, min_samples_leaf=1,
                                      class_weight=official_class_weights(y, binary)).fit(X, y)
        proba = forest.predict_proba(Xv)
        proba = proba if isinstance(proba, list) else [proba]
        out[(n, depth, feats)] = reference_loss(np.stack(proba), yv, weights, protocol)
    return out


@pytest.mark.parametrize("protocol", ["published", "corrected"])
def test_grid_search_losses_and_choice_equal_the_reference_loop(protocol):
    X, y, Xv, yv = _data()
    grid = {"n_estimators": (4, 2, 7), "max_depth": (3, 6), "max_features": ("sqrt", 9)}
    model, rows = grid_search(X, y, Xv, yv, binary=False, n_jobs=2, grid=grid, protocol=protocol)
    naive = _naive_losses(X, y, Xv, yv, grid, protocol)
    order = list(itertools.product(*grid.values()))
    assert [(r["n_estimators"], r["max_depth"], r["max_features"]) for r in rows] == order
    assert [r["val_loss"] for r in rows] == [naive[p] for p in order]          # bit-identical
    first_min = min(order, key=lambda p: (naive[p], order.index(p)))
    assert (model.n_estimators, model.max_depth, model.max_features) == first_min
    # the kept model scores as a forest fitted afresh with the kept parameters
    fresh = MyransClassifier(False, *first_min, seed=0, n_jobs=1, protocol=protocol).fit_features(X, y)
    np.testing.assert_array_equal(model.predict_proba_features(Xv), fresh.predict_proba_features(Xv))
    assert len(model.forest_.estimators_) == first_min[0] and model.forest_.n_jobs == 1


def test_grid_search_keeps_the_first_of_equal_losses():
    X, y, Xv, yv = _data(d=16)          # 16 features: "sqrt" and "log2" both draw 4 -> equal forests
    for feats in (("log2", "sqrt"), ("sqrt", "log2")):
        model, rows = grid_search(X, y, Xv, yv, binary=False, n_jobs=1, protocol="corrected",
                                  grid={"n_estimators": (3,), "max_depth": (4,), "max_features": feats})
        assert rows[0]["val_loss"] == rows[1]["val_loss"]
        assert model.max_features == feats[0]


def test_published_and_corrected_select_and_score_differently():
    X, y, Xv, yv = _data(n=150, seed=3)
    grid = {"n_estimators": (2, 8), "max_depth": (1, 8), "max_features": ("sqrt",)}
    pub, _ = grid_search(X, y, Xv, yv, binary=False, n_jobs=1, grid=grid, protocol="published")
    cor, _ = grid_search(X, y, Xv, yv, binary=False, n_jobs=1, grid=grid, protocol="corrected")
    for model, protocol in ((pub, "published"), (cor, "corrected")):
        naive = _naive_losses(X, y, Xv, yv, grid, protocol)
        assert (model.n_estimators, model.max_depth, model.max_features) == min(naive, key=naive.get)
    # the inverted loss prefers the stump forest, the positive-class loss the deeper one
    assert (pub.n_estimators, pub.max_depth) != (cor.n_estimators, cor.max_depth)
    # scores: published writes column 0 = P(label 0), corrected P(label 1), of the same forest
    cols = pub.label_columns_features(Xv)
    np.testing.assert_array_equal(pub.predict_proba_features(Xv), cols[:, :, 0].T)
    pub.inverted_scores = False
    np.testing.assert_array_equal(pub.predict_proba_features(Xv), cols[:, :, 1].T)
    np.testing.assert_allclose(cols.sum(axis=2), 1.0, rtol=0, atol=1e-12)


def test_single_valued_class_and_binary_columns():
    X, y, Xv, yv = _data()
    y[:, 1] = 0                                    # never positive in training
    pub = MyransClassifier(False, 3, 3, "sqrt", protocol="published").fit_features(X, y)
    cor = MyransClassifier(False, 3, 3, "sqrt", protocol="corrected").fit_features(X, y)
    assert pub.inverted_scores and not cor.inverted_scores
    assert (pub.predict_proba_features(Xv)[:, 1] == 1.0).all()     # P(label 0) = 1
    assert (cor.predict_proba_features(Xv)[:, 1] == 0.0).all()
    yb = y[:, 0]
    b = MyransClassifier(True, 3, 3, "sqrt", protocol="published").fit_features(X, yb)
    p = b.forest_.predict_proba(Xv)
    np.testing.assert_array_equal(b.predict_proba_features(Xv), p[:, :1])  # myrans_inference: prob[0, :, 0]
    bb, rows = grid_search(X, yb, Xv, yv[:, 0], binary=True, n_jobs=1, protocol="published",
                           grid={"n_estimators": (2, 3), "max_depth": (2,), "max_features": ("sqrt",)})
    assert len(rows) == 2 and bb.predict_proba_features(Xv).shape == (len(Xv), 1)


# ------------------------------------------------------------------ configuration
def test_protocol_reaches_the_builder_and_bad_options_fail(tmp_path):
    root = make_tiny_dataset(tmp_path / "d", n_train=8, n_val=4, n_test=4)
    params = tiny_params(root)
    cfg = resolve_run(params, "myrans")
    assert cfg.protocol == "published"
    m = build_model(cfg)
    assert (m.protocol, m.inverted_scores, m.needs_validation, m.image_size) == ("published", True, True, 16)
    assert m.grid == {k: list(v) for k, v in GRID.items()}
    m = build_model(resolve_run(params, "myrans", {"protocol": "corrected"}))
    assert (m.protocol, m.inverted_scores) == ("corrected", False)
    m = build_model(resolve_run(params, "myrans", {"sklearn": {"inverted_scores": False}}))
    assert (m.protocol, m.inverted_scores) == ("published", False)
    fixed = build_model(resolve_run(params, "myrans", {"sklearn": {"grid_search": False, "n_estimators": 7}}))
    assert not fixed.needs_validation and fixed.n_estimators == 7
    with pytest.raises(SewerbenchError, match="protocol: expected one of 'published', 'corrected'"):
        resolve_run(params, "myrans", {"protocol": "fixed"})
    with pytest.raises(SewerbenchError, match="protocol is a run setting"):
        build_model(resolve_run(params, "myrans", {"sklearn": {"protocol": "corrected"}}))
    with pytest.raises(SewerbenchError, match="n_estimators are chosen by the grid search"):
        build_model(resolve_run(params, "myrans", {"sklearn": {"n_estimators": 7}}))
    with pytest.raises(SewerbenchError, match="unknown key 'sklearn.n_trees'"):
        resolve_run(params, "myrans", {"sklearn": {"n_trees": 7}})
    with pytest.raises(SewerbenchError, match="unknown grid key"):
        registry.build("myrans2018", grid={"depth": [1]})
    with pytest.raises(SewerbenchError, match="grid.max_features: invalid value 'all'"):
        registry.build("myrans2018", grid={"max_features": ["all"]})
    with pytest.raises(SewerbenchError, match="needs the validation set"):
        registry.build("myrans2018", grid={"n_estimators": [2]}).fit_features(*_data()[:2])


def test_smoke_profile_grid_is_the_capped_reference_grid():
    from benchmark.config.resolve import load_params
    from pathlib import Path

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = resolve_run(params, "myrans2018_full")
    m = build_model(cfg)
    assert m.grid == {"n_estimators": [5, 10, 25], "max_depth": [10, 20, 30], "max_features": ["sqrt", "log2", 170]}
    paper = build_model(resolve_run(params, "myrans2018_full", {"profile": "paper"}))
    assert paper.grid == {"n_estimators": [10, 100, 250], "max_depth": [10, 20, 30],
                          "max_features": ["sqrt", "log2", 170]}
    assert paper.image_size == 128 and paper.protocol == "published"


# ------------------------------------------------------------------ engine
def test_engine_run_writes_grid_and_protocol_scores(tmp_path):
    from benchmark.train import train_run
    from benchmark.train.sklearn_io import load_sklearn, sklearn_inputs
    from benchmark.train.data import train_val_frames

    root = make_tiny_dataset(tmp_path / "d", n_train=48, n_val=24, n_test=8)
    params = tiny_params(root)
    grid = {"n_estimators": [2, 4], "max_depth": [3], "max_features": ["sqrt", 40]}
    scores = {}
    for protocol in ("published", "corrected"):
        cfg = resolve_run(params, "myrans", {"protocol": protocol, "sklearn": {"grid": grid}})
        out = tmp_path / protocol
        train_run(cfg, out)
        found = json.loads((out / "grid_search.json").read_text())
        assert found["protocol"] == protocol and len(found["rows"]) == 4
        losses = [r["val_loss"] for r in found["rows"]]
        kept = found["rows"][losses.index(min(losses))]
        assert found["kept"] == {k: kept[k] for k in ("n_estimators", "max_depth", "max_features")}
        model = load_sklearn(out)
        _, val_df = train_val_frames(cfg)
        xv, names = sklearn_inputs(val_df, image_source(cfg), cfg, model)
        cols = model.label_columns_features(xv)
        val = pd.read_csv(out / "scores_val.csv")
        assert val["Filename"].tolist() == names
        column = 0 if protocol == "published" else 1
        np.testing.assert_allclose(val.iloc[:, 1:].to_numpy(), cols[:, :, column].T, rtol=0, atol=1e-12)
        scores[protocol] = val
    assert not scores["published"].equals(scores["corrected"])
