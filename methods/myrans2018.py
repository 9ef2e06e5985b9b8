"""Myrans et al. 2018: GIST features + Extra Trees, as in the Sewer-ML benchmark code.

Sewer-ML (``gist_extractor.py``, ``myrans_trainer.py``, ``myrans_inference.py``):
- features: the 512-d grey-level GIST of each image at its original resolution, made grey
  and resized to 128x128 with OpenCV's non-antialiased INTER_LINEAR (``methods.gist``);
- classifier: ``ExtraTreesClassifier(n_estimators, max_depth, max_features,
  min_samples_leaf=1, random_state=0, n_jobs=-1, class_weight=...)``, one multi-output
  forest for the 17 classes; class weights: binary ``{1: N_neg / N_pos}``, multi-label
  ``[{0: 1, 1: N_neg_c / N_pos_c}]`` (0 where a class has no positives);
- hyper-parameters (``myrans_trainer.py:162-181``): every point of n_estimators {10, 100, 250}
  x max_depth {10, 20, 30} x max_features {"sqrt", "log2", 170} (that loop order) is fitted on
  the training set and the one with the strictly lowest validation loss is kept (the first
  one on ties);
- the loss (``myrans_trainer.py:103-131``): per class, ``-(sum over positives of w_c log
  P[:, 0] + sum over negatives of log P[:, 1])``, summed over classes, divided by the number
  of classes and of samples; ``w_c`` = N_neg / N_pos of the training labels (for the
  validation loss too) and log(x) = -10 where x <= 1e-10.

Quirk of the reference: column 0 of ``predict_proba`` is P(label 0), the probability of the
*negative* class. The loss uses it as the positive-class probability, so the search keeps the
configuration that best predicts the inverted labels, and ``myrans_inference.py:56`` writes
the same column as the defect score. ``protocol``:

- ``published``: both as the reference (selection loss on column 0, scores = column 0);
- ``corrected``: the loss on the positive class (``log P[:, 1]`` on positives, ``log P[:, 0]``
  on negatives) and scores = P(label 1).

``inverted_scores`` (null = the protocol's choice) can still pick the score column alone.
Where a class has a single value in the training labels, scikit-learn returns one column for
it (the reference then fails); here the missing column is the probability 0 of the unseen label.

Search speed: the first n trees of a forest fitted with ``random_state`` r are the trees of the
n-tree forest fitted with r (each tree's seed is the next draw of r; ExtraTrees does not
bootstrap), so each (max_depth, max_features) is fitted once with the largest n_estimators
and the smaller forests are its prefixes, with their probabilities summed tree by tree in the
same order scikit-learn uses. ``tests/test_myrans_protocol.py`` checks this equality.

Here ``n_jobs=2`` (fit; prediction is sequential for bit-identical scores) and
``random_state=seed`` (the reference's 0 is the default seed).
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
from typing import Any, Iterable, Mapping

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier

from benchmark.errors import SewerbenchError
from methods.gist import IMAGE_SIZE, gist_descriptor

logger = logging.getLogger(__name__)

PROTOCOLS = ("published", "corrected")
#: The reference grid (``myrans_trainer.py:162-164``), in its loop order.
GRID = {
    "n_estimators": (10, 100, 250),
    "max_depth": (10, 20, 30),
    "max_features": ("sqrt", "log2", 512 // 3),
}
DEFAULTS = {"reference": dict(n_estimators=100, max_depth=20, max_features="sqrt",
                              image_size=IMAGE_SIZE),
            "tiny": dict(n_estimators=10, max_depth=10, max_features="sqrt", image_size=64)}
LOG_FLOOR = -10.0
LOG_EPS = 1e-10


def official_class_weights(y: np.ndarray, binary: bool) -> Any:
    """Sewer-ML's class weights: N_neg / N_pos for the positive class."""
    if binary:
        pos = int((y == 1).sum())
        if pos == 0:
            raise SewerbenchError("myrans2018_binary: the training labels hold no defect image")
        return {1: (len(y) - pos) / pos}
    weights = []
    for c in range(y.shape[1]):
        pos = int((y[:, c] == 1).sum())
        weights.append({0: 1.0, 1: (len(y) - pos) / pos if pos > 0 else 0.0})
    return weights


def positive_weights(y: np.ndarray) -> np.ndarray:
    """N_neg / N_pos per class of (N,) or (N, C) 0/1 training labels (0 without positives)."""
    y = np.asarray(y).reshape(len(y), -1) == 1
    pos = y.sum(axis=0).astype(np.float64)
    return np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 0.0)


def safe_log(x: np.ndarray) -> np.ndarray:
    """log(x) where x > 1e-10, else -10 (the reference's ``safe_log``)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > LOG_EPS, np.log(np.where(x > LOG_EPS, x, 1.0)), LOG_FLOOR)


def reference_loss(columns: np.ndarray, targets: np.ndarray, pos_weights: Iterable[float],
                   protocol: str = "published") -> float:
    """The search loss of ``myrans_trainer.py``'s ``lossFunc`` on (C, N, 2) probabilities
    [P(label 0), P(label 1)] per class: ``published`` scores positives with column 0 (as the
    reference), ``corrected`` with column 1."""
    if protocol not in PROTOCOLS:
        raise SewerbenchError(f"myrans2018: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    columns = np.asarray(columns, dtype=np.float64)
    targets = np.asarray(targets).reshape(len(targets), -1).astype(bool)
    weights = np.asarray(list(pos_weights), dtype=np.float64).reshape(-1)
    if columns.shape != (targets.shape[1], targets.shape[0], 2) or len(weights) != targets.shape[1]:
        raise SewerbenchError(f"myrans2018: loss inputs do not match: probabilities {columns.shape}, "
                              f"targets {targets.shape}, {len(weights)} weights")
    pos_col, neg_col = (0, 1) if protocol == "published" else (1, 0)
    loss = 0.0
    for c in range(targets.shape[1]):
        pos = np.sum(weights[c] * safe_log(columns[c, :, pos_col])[targets[:, c]])
        neg = np.sum(safe_log(columns[c, :, neg_col])[~targets[:, c]])
        loss += -(pos + neg)
    return loss / targets.shape[1] / targets.shape[0]


def weighted_log_loss(probs: np.ndarray, targets: np.ndarray,
                      pos_weights: Iterable[float]) -> float:
    """The corrected search loss on (N, C) positive-class probabilities (P(label 0) = 1 - p)."""
    p = np.asarray(probs, dtype=np.float64).reshape(len(targets), -1)
    columns = np.stack([1.0 - p.T, p.T], axis=-1)
    return reference_loss(columns, targets, pos_weights, "corrected")


def _label_columns(proba: list[np.ndarray], classes: list[np.ndarray]) -> np.ndarray:
    """scikit-learn's per-output probabilities -> (C, N, 2) [P(label 0), P(label 1)]."""
    n = proba[0].shape[0]
    out = np.zeros((len(proba), n, 2), dtype=np.float64)
    for c, (p, cls) in enumerate(zip(proba, classes)):
        for j, label in enumerate(np.asarray(cls).tolist()):
            out[c, :, int(label)] = p[:, j]
    return out


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _check_grid(grid: Mapping[str, Any]) -> dict[str, tuple]:
    if not isinstance(grid, Mapping):
        raise SewerbenchError(f"myrans2018: grid must be a mapping of n_estimators, max_depth, "
                              f"max_features, got {grid!r}")
    unknown = sorted(set(grid) - set(GRID))
    if unknown:
        raise SewerbenchError(f"myrans2018: unknown grid key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(GRID)}")
    out = {}
    for key in GRID:
        values = grid.get(key, GRID[key])
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not values:
            raise SewerbenchError(f"myrans2018: grid.{key} is empty")
        for v in values:
            ok = {"n_estimators": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  "max_depth": v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                  "max_features": v in ("sqrt", "log2") or (isinstance(v, int) and not isinstance(v, bool)
                                                            and 1 <= v <= 512)
                  or (isinstance(v, float) and 0 < v <= 1)}[key]
            if not ok:
                raise SewerbenchError(f"myrans2018: grid.{key}: invalid value {v!r}")
        out[key] = values
    return out


class MyransClassifier:
    """GIST + Extra Trees with a scikit-learn style API on uint8 images (N, H, W, 3) or a
    list of HxWx3 images of any sizes (their original resolution).

    ``predict_proba`` returns (N, 1) for the binary model and (N, C) for the multi-label one.
    The ``*_features`` methods take precomputed GIST features instead of images. With
    ``grid`` set, ``fit`` / ``fit_features`` need the validation set and run the reference
    search (``search_results_`` holds its rows, the chosen point becomes the parameters).
    """

    reference_num_params = None

    def __init__(self, binary: bool, n_estimators: int = 100, max_depth: int | None = 20,
                 max_features: Any = "sqrt", image_size: int = IMAGE_SIZE, seed: int = 0,
                 n_jobs: int = 2, inverted_scores: bool | None = None,
                 protocol: str = "corrected", grid: Mapping[str, Any] | None = None):
        if protocol not in PROTOCOLS:
            raise SewerbenchError(f"myrans2018: protocol must be one of {', '.join(PROTOCOLS)}, "
                                  f"got {protocol!r}")
        self.binary = binary
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.image_size = int(image_size)
        self.input_size = self.image_size
        self.seed = seed
        self.n_jobs = n_jobs
        self.protocol = protocol
        self.inverted_scores = (protocol == "published") if inverted_scores is None else bool(inverted_scores)
        self.grid = None if grid is None else {k: list(v) for k, v in _check_grid(grid).items()}
        self.forest_: ExtraTreesClassifier | None = None
        self.num_outputs_: int | None = None
        self.search_results_: list[dict] | None = None

    @property
    def needs_validation(self) -> bool:
        """True when fitting runs the grid search (and so needs the validation set)."""
        return self.grid is not None

    # ---- features
    def features(self, images) -> np.ndarray:
        return gist_descriptor(images, image_size=self.image_size)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if self.binary:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise SewerbenchError(f"myrans2018_binary: labels must be (N,) or (N, 1), "
                                      f"got {y.shape}")
        elif y.ndim != 2:
            raise SewerbenchError(f"myrans2018: labels must be (N, C), got {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise SewerbenchError("myrans2018: labels must be 0/1")
        return y.astype(np.int64)

    def _forest(self, n_estimators: int, max_depth, max_features, y: np.ndarray) -> ExtraTreesClassifier:
        return ExtraTreesClassifier(
            n_estimators=n_estimators, max_depth=max_depth, max_features=max_features,
            min_samples_leaf=1, random_state=self.seed, n_jobs=self.n_jobs,
            class_weight=official_class_weights(y, self.binary))

    # ---- training / inference
    def fit_features(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
                     y_val: np.ndarray | None = None) -> "MyransClassifier":
        y = self._targets(y)
        if len(X) != len(y):
            raise SewerbenchError(f"myrans2018: {len(X)} images but {len(y)} labels")
        if self.grid is not None:
            if X_val is None or y_val is None:
                raise SewerbenchError("myrans2018: the grid search needs the validation set "
                                      "(fit(X, y, X_val, y_val)); set grid: null for a fixed fit")
            return self._search(X, y, np.asarray(X_val), self._targets(y_val))
        self.forest_ = self._forest(self.n_estimators, self.max_depth, self.max_features, y)
        self.forest_.fit(X, y)
        self._finish(y)
        return self

    def _finish(self, y: np.ndarray) -> None:
        # sklearn's parallel predict_proba adds the trees' probabilities in thread completion
        # order, so the last bits vary run to run: predict sequentially for identical scores
        self.forest_.set_params(n_jobs=1)
        self.num_outputs_ = 1 if y.ndim == 1 else y.shape[1]

    def _search(self, X, y, X_val, y_val) -> "MyransClassifier":
        if len(X_val) != len(y_val):
            raise SewerbenchError(f"myrans2018: {len(X_val)} validation images but {len(y_val)} labels")
        if len(X_val) == 0:
            raise SewerbenchError("myrans2018: the grid search needs a non-empty validation set")
        grid = self.grid
        order = {point: i for i, point in enumerate(itertools.product(
            grid["n_estimators"], grid["max_depth"], grid["max_features"]))}
        weights = positive_weights(y)
        sizes = sorted(set(grid["n_estimators"]))
        X_val = np.ascontiguousarray(X_val, dtype=np.float32)
        losses: dict[tuple, float] = {}
        best, best_key, best_forest = None, None, None
        for depth, feats in itertools.product(dict.fromkeys(grid["max_depth"]),
                                              dict.fromkeys(grid["max_features"])):
            forest = self._forest(sizes[-1], depth, feats, y).fit(X, y)
            total = None
            for t, tree in enumerate(forest.estimators_, start=1):
                # the forest's own predict_proba: tree probabilities summed in tree order
                p = _as_list(tree.predict_proba(X_val))
                if total is None:
                    total = [np.zeros(q.shape, dtype=np.float64) for q in p]
                for acc, q in zip(total, p):
                    acc += q
                if t in sizes:
                    cols = _label_columns([acc / t for acc in total], _as_list(forest.classes_))
                    losses[(t, depth, feats)] = reference_loss(cols, y_val, weights, self.protocol)
            for n in sizes:
                loss, point = losses[(n, depth, feats)], (n, depth, feats)
                # the reference keeps the first point of the strictly lowest loss in its loop order
                key = (loss, order[point])
                if math.isfinite(loss) and (best_key is None or key < best_key):
                    best, best_key, best_forest = point, key, forest
            del forest
        rows = [{"n_estimators": n, "max_depth": d, "max_features": f, "val_loss": float(losses[(n, d, f)])}
                for (n, d, f) in order]
        if best is None:
            raise SewerbenchError("myrans2018: every grid point gave a non-finite validation loss")
        n, depth, feats = best
        chosen = copy.copy(best_forest)
        chosen.estimators_ = list(best_forest.estimators_[:n])
        chosen.n_estimators = n
        self.n_estimators, self.max_depth, self.max_features = n, depth, feats
        self.forest_ = chosen
        self.search_results_ = rows
        self._finish(y)
        logger.info("myrans2018: grid search (%s loss) kept n_estimators=%s max_depth=%s "
                    "max_features=%s, val loss %.6f", self.protocol, n, depth, feats, best_key[0])
        return self

    def fit(self, images, y: np.ndarray, val_images=None, y_val: np.ndarray | None = None
            ) -> "MyransClassifier":
        X_val = None if val_images is None else self.features(val_images)
        return self.fit_features(self.features(images), y, X_val, y_val)

    def label_columns_features(self, X: np.ndarray) -> np.ndarray:
        """(C, N, 2) [P(label 0), P(label 1)] per class."""
        if self.forest_ is None:
            raise SewerbenchError("myrans2018: predict_proba called before fit")
        proba = _as_list(self.forest_.predict_proba(X))
        return _label_columns(proba, _as_list(self.forest_.classes_))

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        """(N, C) scores: P(label 1), or with ``inverted_scores`` the reference's column 0 =
        P(label 0)."""
        cols = self.label_columns_features(X)
        return np.ascontiguousarray(cols[:, :, 0 if self.inverted_scores else 1].T)

    def predict_proba(self, images) -> np.ndarray:
        return self.predict_proba_features(self.features(images))


def grid_search(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                binary: bool, seed: int = 0, n_jobs: int = 2,
                grid: Mapping[str, Iterable[Any]] | None = None, protocol: str = "published",
                ) -> tuple[MyransClassifier, list[dict]]:
    """The reference search on GIST features: (the fitted model of the kept point, one row
    per grid point in the reference's loop order with its validation loss)."""
    model = MyransClassifier(binary, seed=seed, n_jobs=n_jobs, protocol=protocol,
                             grid=GRID if grid is None else grid)
    model.fit_features(X_train, y_train, X_val, y_val)
    return model, list(model.search_results_ or [])


def _build(binary: bool, size: str, seed: int, n_jobs: int, protocol: str, grid_search: bool,
           grid: Mapping[str, Any] | None, inverted_scores: bool | None, fixed: dict) -> MyransClassifier:
    if size not in DEFAULTS:
        raise SewerbenchError(f"myrans2018: size {size!r} is not one of reference, tiny")
    if protocol not in PROTOCOLS:
        raise SewerbenchError(f"myrans2018: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not isinstance(grid_search, bool):
        raise SewerbenchError(f"myrans2018: grid_search must be true or false, got {grid_search!r}")
    if grid is not None and not grid_search:
        raise SewerbenchError("myrans2018: grid is set but grid_search is false")
    chosen = sorted(k for k in ("n_estimators", "max_depth", "max_features") if fixed.get(k) is not None)
    if grid_search and chosen:
        raise SewerbenchError(f"myrans2018: {', '.join(chosen)} are chosen by the grid search; set "
                              "grid_search: false to fix them, or narrow the grid instead")
    opts = {**DEFAULTS[size], **{k: v for k, v in fixed.items() if v is not None}}
    return MyransClassifier(binary, seed=seed, n_jobs=n_jobs, protocol=protocol,
                            inverted_scores=inverted_scores,
                            grid=(GRID if grid is None else grid) if grid_search else None, **opts)


def build_myrans2018_binary(size: str = "reference", num_classes: int = 1, pretrained: Any = False,
                            seed: int = 0, n_jobs: int = 2, protocol: str = "published",
                            grid_search: bool = True, grid: Mapping[str, Any] | None = None,
                            inverted_scores: bool | None = None, n_estimators: int | None = None,
                            max_depth: int | None = None, max_features: Any = None,
                            image_size: int | None = None) -> MyransClassifier:
    """Binary (defect / normal) GIST + Extra Trees; predict_proba -> (N, 1).

    ``grid_search`` (default, the reference) searches ``grid`` (null = the reference's 27
    points); ``grid_search: false`` fits ``n_estimators`` / ``max_depth`` / ``max_features``
    (the size's defaults where null)."""
    if pretrained:
        raise SewerbenchError("myrans2018_binary: has no pretrained weights")
    return _build(True, size, seed, n_jobs, protocol, grid_search, grid, inverted_scores,
                  dict(n_estimators=n_estimators, max_depth=max_depth, max_features=max_features,
                       image_size=image_size))


def build_myrans2018(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                     seed: int = 0, n_jobs: int = 2, protocol: str = "published",
                     grid_search: bool = True, grid: Mapping[str, Any] | None = None,
                     inverted_scores: bool | None = None, n_estimators: int | None = None,
                     max_depth: int | None = None, max_features: Any = None,
                     image_size: int | None = None) -> MyransClassifier:
    """Multi-label GIST + Extra Trees; predict_proba -> (N, C). Options as
    :func:`build_myrans2018_binary`."""
    if pretrained:
        raise SewerbenchError("myrans2018: has no pretrained weights")
    return _build(False, size, seed, n_jobs, protocol, grid_search, grid, inverted_scores,
                  dict(n_estimators=n_estimators, max_depth=max_depth, max_features=max_features,
                       image_size=image_size))
