"""Myrans et al. 2018: GIST features + Extra Trees, as in the Sewer-ML benchmark code.

Sewer-ML (``gist_extractor.py``, ``myrans_trainer.py``, ``myrans_inference.py``):
- features: the 512-d grey-level GIST of a 128x128 image (``methods.gist``);
- classifier: ``ExtraTreesClassifier(n_estimators, max_depth, max_features,
  min_samples_leaf=1, random_state=0, n_jobs=-1, class_weight=...)``, one multi-output
  forest for the 17 classes; class weights: binary ``{1: N_neg / N_pos}``, multi-label
  ``[{0: 1, 1: N_neg_c / N_pos_c}]`` (0 where a class has no positives);
- hyper-parameters: grid search over n_estimators {10, 100, 250} x max_depth {10, 20, 30} x
  max_features {"sqrt", "log2", 170}, keeping the lowest validation loss (``grid_search``).

Known quirk of the reference: ``myrans_inference.py`` writes ``predict_proba(...)[..., 0]``,
the probability of the *negative* class, as the defect score (and its grid-search loss uses
the same column). ``inverted_scores=True`` reproduces that; the default returns P(positive).

Here we use ``n_jobs=2`` and ``random_state=seed``.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Iterable

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier

from benchmark.errors import SewerbenchError
from methods.gist import IMAGE_SIZE, gist_descriptor

logger = logging.getLogger(__name__)

GRID = {
    "n_estimators": (10, 100, 250),
    "max_depth": (10, 20, 30),
    "max_features": ("sqrt", "log2", 512 // 3),
}
DEFAULTS = {"reference": dict(n_estimators=100, max_depth=20, max_features="sqrt",
                              image_size=IMAGE_SIZE),
            "tiny": dict(n_estimators=10, max_depth=10, max_features="sqrt", image_size=64)}


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


def weighted_log_loss(probs: np.ndarray, targets: np.ndarray,
                      pos_weights: Iterable[float]) -> float:
    """Sewer-ML's forest selection loss: class-weighted binary log loss (log clipped at
    1e-10 -> -10), summed over classes and averaged over classes and samples."""
    probs = np.asarray(probs, dtype=np.float64).reshape(len(targets), -1)
    targets = np.asarray(targets).reshape(len(targets), -1).astype(bool)
    pos_weights = np.asarray(list(pos_weights), dtype=np.float64)

    def safe_log(x):
        return np.where(x > 1e-10, np.log(np.maximum(x, 1e-10)), -10.0)

    loss = 0.0
    for c in range(targets.shape[1]):
        pos = safe_log(probs[:, c])[targets[:, c]]
        neg = safe_log(1.0 - probs[:, c])[~targets[:, c]]
        loss += -(pos_weights[c] * pos.sum() + neg.sum())
    return loss / targets.shape[1] / targets.shape[0]


class MyransClassifier:
    """GIST + Extra Trees with a scikit-learn style API on uint8 images (N, H, W, 3).

    ``predict_proba`` returns (N, 1) for the binary model and (N, C) for the multi-label one.
    The ``*_features`` methods take precomputed GIST features instead of images.
    """

    reference_num_params = None

    def __init__(self, binary: bool, n_estimators: int = 100, max_depth: int | None = 20,
                 max_features: Any = "sqrt", image_size: int = IMAGE_SIZE, seed: int = 0,
                 n_jobs: int = 2, inverted_scores: bool = False):
        self.binary = binary
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.image_size = image_size
        self.input_size = image_size
        self.seed = seed
        self.n_jobs = n_jobs
        self.inverted_scores = inverted_scores
        self.forest_: ExtraTreesClassifier | None = None
        self.num_outputs_: int | None = None

    # ---- features
    def features(self, images: np.ndarray) -> np.ndarray:
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

    # ---- training / inference
    def fit_features(self, X: np.ndarray, y: np.ndarray) -> "MyransClassifier":
        y = self._targets(y)
        if len(X) != len(y):
            raise SewerbenchError(f"myrans2018: {len(X)} images but {len(y)} labels")
        self.forest_ = ExtraTreesClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            max_features=self.max_features, min_samples_leaf=1, random_state=self.seed,
            n_jobs=self.n_jobs, class_weight=official_class_weights(y, self.binary))
        self.forest_.fit(X, y)
        # sklearn's parallel predict_proba adds the trees' probabilities in thread completion
        # order, so the last bits vary run to run: predict sequentially for identical scores
        self.forest_.set_params(n_jobs=1)
        self.num_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        return self

    def fit(self, images: np.ndarray, y: np.ndarray) -> "MyransClassifier":
        return self.fit_features(self.features(images), y)

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        if self.forest_ is None:
            raise SewerbenchError("myrans2018: predict_proba called before fit")
        proba = self.forest_.predict_proba(X)
        if not isinstance(proba, list):
            proba = [proba]
        classes = self.forest_.classes_
        if not isinstance(classes, list):
            classes = [classes]
        out = np.zeros((len(X), len(proba)), dtype=np.float64)
        for c, (p, cls) in enumerate(zip(proba, classes)):
            cls = list(np.asarray(cls))
            out[:, c] = p[:, cls.index(1)] if 1 in cls else 0.0
        if self.inverted_scores:
            out = 1.0 - out
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_proba_features(self.features(images))


def grid_search(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                binary: bool, seed: int = 0, n_jobs: int = 2,
                grid: dict[str, Iterable[Any]] | None = None,
                ) -> tuple[MyransClassifier, list[dict]]:
    """The reference's search: fit every grid point on GIST features, keep the lowest
    ``weighted_log_loss`` on validation (positive weights N_neg / N_pos of the training set)."""
    grid = grid or GRID
    y_tr = np.asarray(y_train).reshape(len(y_train), -1)
    pos = y_tr.sum(0)
    pos_w = np.where(pos > 0, (len(y_tr) - pos) / np.maximum(pos, 1), 0.0)
    best, best_loss, rows = None, np.inf, []
    for n, d, f in itertools.product(grid["n_estimators"], grid["max_depth"], grid["max_features"]):
        model = MyransClassifier(binary, n, d, f, seed=seed, n_jobs=n_jobs)
        model.fit_features(X_train, y_train)
        loss = weighted_log_loss(model.predict_proba_features(X_val), y_val, pos_w)
        rows.append({"n_estimators": n, "max_depth": d, "max_features": f, "val_loss": loss})
        if loss < best_loss:
            best, best_loss = model, loss
    return best, rows


def _build(binary: bool, size: str, seed: int, n_jobs: int, kwargs: dict) -> MyransClassifier:
    if size not in DEFAULTS:
        raise SewerbenchError(f"myrans2018: size {size!r} is not one of reference, tiny")
    known = {"n_estimators", "max_depth", "max_features", "image_size", "inverted_scores"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        logger.debug("myrans2018: ignoring options %s", unknown)
    opts = {**DEFAULTS[size], **{k: v for k, v in kwargs.items() if k in known}}
    return MyransClassifier(binary, seed=seed, n_jobs=n_jobs, **opts)


def build_myrans2018_binary(size: str = "reference", num_classes: int = 1, pretrained: Any = False,
                            seed: int = 0, n_jobs: int = 2, **kwargs: Any) -> MyransClassifier:
    """Binary (defect / normal) GIST + Extra Trees; predict_proba -> (N, 1)."""
    if pretrained:
        raise SewerbenchError("myrans2018_binary: has no pretrained weights")
    return _build(True, size, seed, n_jobs, kwargs)


def build_myrans2018(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                     seed: int = 0, n_jobs: int = 2, **kwargs: Any) -> MyransClassifier:
    """Multi-label GIST + Extra Trees; predict_proba -> (N, C)."""
    if pretrained:
        raise SewerbenchError("myrans2018: has no pretrained weights")
    return _build(False, size, seed, n_jobs, kwargs)
