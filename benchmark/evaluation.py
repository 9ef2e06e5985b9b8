"""Evaluation of score files: official metrics JSON, paired comparisons, whole run folders.

* :func:`compute`: the official Sewer-ML metrics of a scores CSV against a ground-truth CSV
  (rows matched by Filename and evaluated in sorted-Filename order, as the official script
  does), plus the :data:`~benchmark.artifacts.BOOTSTRAP` block when asked;
  :func:`dumps_json` writes it like the official ``json.dump`` (nan as ``NaN``), indented.
* :func:`compare`: the paired bootstrap of two scores CSVs on the same ground truth.
* :func:`evaluate_run`: every scores file of a run folder against the matching ground truth
  of the prepared data (:meth:`benchmark.data.layout.PreparedLayout.ground_truths`):
  ``scores_val.csv`` -> ``val.json`` (full val set), ``scores_val_sub.csv`` -> ``val_sub.json``
  (the run's own subset val set, the paper's starred rows), ``scores_test.csv`` ->
  ``test.json`` when the prepared data has test labels. Binary stage-1 runs
  (Filename,Defect) get ``binary_<set>.json``. The run's ``history.csv`` and
  ``train_summary.json`` are copied beside the metrics (for plots, without depending on runs/).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import artifacts as A
from benchmark.classes import THRESHOLD
from benchmark.data.layout import PreparedLayout
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_write_json, atomic_write_text
from benchmark.metrics import to_jsonable

log = logging.getLogger(__name__)


def dumps_json(obj) -> str:
    """JSON text; nan/inf written as NaN/Infinity like the official ``json.dump``."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=True) + "\n"


def compute(scores_path, gt_path, n_bootstrap: int = 0, seed: int = 0) -> A.MetricsJSON:
    """Official metrics dict for two files, plus the bootstrap block when ``n_bootstrap`` > 0."""
    from benchmark import bootstrap, metrics
    from benchmark.scores import load_aligned

    data = load_aligned(scores_path, gt_path)
    result = metrics.evaluate(data.scores, data.targets)
    if n_bootstrap:
        ci = bootstrap.bootstrap_ci(data.scores, data.targets, n=n_bootstrap, seed=seed)
        result[A.BOOTSTRAP] = A.bootstrap_block(ci, n_bootstrap, seed, confidence=0.95)
    return result


def compare(a_path, b_path, gt_path, n: int = 1000, seed: int = 0) -> A.CompareResult:
    """Paired bootstrap (same images resampled) of scores ``b`` against ``a``: the input
    paths, then :func:`benchmark.bootstrap.paired_bootstrap`'s result (delta = b - a)."""
    from benchmark import bootstrap
    from benchmark.scores import align, read_ground_truth_csv, read_scores_csv

    gt = read_ground_truth_csv(gt_path)
    da = align(read_scores_csv(a_path), gt, a_path, gt_path)
    db = align(read_scores_csv(b_path), gt, b_path, gt_path)
    res = bootstrap.paired_bootstrap(da.scores, db.scores, da.targets, n=n, seed=seed)
    return A.compare_result(str(a_path), str(b_path), str(gt_path), res)


def binary_metrics(scores_csv: Path, gt_csv: Path) -> A.BinaryMetrics:
    """Defect/normal metrics of a stage-1 scores file (Defect score >= THRESHOLD)."""
    from benchmark import metrics
    s = pd.read_csv(scores_csv)[["Filename", "Defect"]].sort_values("Filename")
    g = pd.read_csv(gt_csv)[["Filename", "Defect"]].sort_values("Filename")
    if list(s["Filename"]) != list(g["Filename"]):
        raise SewerbenchError(f"{scores_csv}: filenames differ from {gt_csv}")
    p = s["Defect"].to_numpy(np.float64)
    y = g["Defect"].to_numpy(np.int64)
    pred = p >= THRESHOLD
    tp = float(np.sum(pred & (y == 1)))
    prec = tp / max(float(pred.sum()), 1.0)
    rec = tp / max(float((y == 1).sum()), 1.0)
    f1 = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return {"n": int(len(y)), "accuracy": float(np.mean(pred == (y == 1))), "precision": prec,
            "recall": rec, "F1": f1, "AP": float(metrics.average_precision(p, y))}


def is_binary_scores(path: str | os.PathLike) -> bool:
    """True for a stage-1 scores file (a Defect column and no class columns)."""
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    return "Defect" in header and "RB" not in header


def evaluate_run(run_dir: str | Path, out_dir: str | Path,
                 prepared: str | Path | PreparedLayout = "data/prepared",
                 split: str | None = None, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Path]:
    """Evaluate every scores file of ``run_dir`` for a run trained on ``split`` (default the
    full split); returns ``{evaluation set: written json}``."""
    layout = prepared if isinstance(prepared, PreparedLayout) else PreparedLayout.from_dir(prepared)
    split = layout.full_split if split is None else split
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    written: dict[str, Path] = {}
    for name, gt in layout.ground_truths(split).items():
        scores = run_dir / A.scores_file(name)
        if not scores.is_file():
            if name == A.EVAL_VAL:
                raise SewerbenchError(f"{scores}: missing (the run wrote no full-val scores)")
            log.info("%s: no %s, skipped", run_dir.name, scores.name)
            continue
        if is_binary_scores(scores):
            path = out_dir / A.binary_metrics_file(name)
            atomic_write_json(path, binary_metrics(scores, gt))
        else:
            path = out_dir / A.metrics_file(name)
            atomic_write_text(path, dumps_json(compute(scores, gt, n_bootstrap, seed)))
        written[name] = path
        log.info("%s: %s -> %s", run_dir.name, scores.name, path)
    for extra in (A.HISTORY_FILE, A.TRAIN_SUMMARY_FILE):  # for plots, without depending on runs/
        if (run_dir / extra).is_file():
            atomic_write_text(out_dir / extra, (run_dir / extra).read_text(encoding="utf-8"))
    return written
