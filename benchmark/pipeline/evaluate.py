"""Evaluate one run folder: every scores file it holds against the matching ground truth.

``runs/<run>/scores_val.csv`` -> full val set (``val.json``), ``scores_val_sub.csv`` -> the
run's own (subset) val set (``val_sub.json``, the paper's starred rows), ``scores_test.csv``
-> test labels when the prepared data has them (``test.json``). Each JSON is exactly what
``sewerbench evaluate --bootstrap N`` writes (official layout + its "Bootstrap" block). Binary stage-1 runs
(Filename,Defect) get ``binary_<split>.json`` (accuracy, F1, AP of the Defect column).
The run's ``history.csv`` and ``train_summary.json`` are copied beside the metrics.

Run as ``python -m benchmark.pipeline.evaluate --run-dir runs/X --out results/metrics/X``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import SewerbenchError
from benchmark.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def ground_truths(prepared: Path, split: str) -> dict[str, Path]:
    """Ground-truth CSV per evaluation split for a run trained on ``split``."""
    out = {"val": prepared / "full" / "val.csv"}
    if split != "full":
        out["val_sub"] = prepared / split / "val.csv"
    if (prepared / "full" / "test_gt.csv").is_file():
        out["test"] = prepared / "full" / "test_gt.csv"
    return out


def binary_metrics(scores_csv: Path, gt_csv: Path) -> dict:
    """Defect/normal metrics of a stage-1 scores file (threshold 0.5)."""
    from benchmark import metrics
    s = pd.read_csv(scores_csv)[["Filename", "Defect"]].sort_values("Filename")
    g = pd.read_csv(gt_csv)[["Filename", "Defect"]].sort_values("Filename")
    if list(s["Filename"]) != list(g["Filename"]):
        raise SewerbenchError(f"{scores_csv}: filenames differ from {gt_csv}")
    p = s["Defect"].to_numpy(np.float64)
    y = g["Defect"].to_numpy(np.int64)
    pred = p >= 0.5
    tp = float(np.sum(pred & (y == 1)))
    prec = tp / max(float(pred.sum()), 1.0)
    rec = tp / max(float((y == 1).sum()), 1.0)
    f1 = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return {"n": int(len(y)), "accuracy": float(np.mean(pred == (y == 1))), "precision": prec,
            "recall": rec, "F1": f1, "AP": float(metrics.average_precision(p, y))}


def evaluate_run(run_dir: str | Path, out_dir: str | Path, prepared: str | Path = "data/prepared",
                 split: str = "full", n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Path]:
    """Evaluate every scores file of ``run_dir``; returns ``{split: written json}``."""
    from benchmark.commands.evaluate import compute, dumps_json

    run_dir, out_dir, prepared = Path(run_dir), Path(out_dir), Path(prepared)
    written: dict[str, Path] = {}
    for name, gt in ground_truths(prepared, split).items():
        scores = run_dir / f"scores_{name}.csv"
        if not scores.is_file():
            if name == "val":
                raise SewerbenchError(f"{scores}: missing (the run wrote no full-val scores)")
            log.info("%s: no %s, skipped", run_dir.name, scores.name)
            continue
        header = scores.open(encoding="utf-8").readline().strip().split(",")
        if "Defect" in header and "RB" not in header:
            path = out_dir / f"binary_{name}.json"
            atomic_write_json(path, binary_metrics(scores, gt))
        else:
            path = out_dir / f"{name}.json"
            atomic_write_text(path, dumps_json(compute(scores, gt, n_bootstrap, seed)))
        written[name] = path
        log.info("%s: %s -> %s", run_dir.name, scores.name, path)
    for extra in ("history.csv", "train_summary.json"):  # for plots, without depending on runs/
        if (run_dir / extra).is_file():
            atomic_write_text(out_dir / extra, (run_dir / extra).read_text(encoding="utf-8"))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.pipeline.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--params", default="params.yaml", help="reads runs.<run>.split, tables.bootstrap, seed")
    ap.add_argument("--run", default=None, help="run name in params.yaml (default: the folder name)")
    ap.add_argument("--split", default=None, help="training split (default from params.yaml)")
    ap.add_argument("--bootstrap", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from benchmark.pipeline.matrix import load_params, run_split
        params = load_params(args.params)
        run = args.run or Path(args.run_dir).name
        split = args.split or run_split(params, run)
        tables = params.get("tables") or {}
        n = args.bootstrap if args.bootstrap is not None else int(tables.get("bootstrap", 1000))
        seed = args.seed if args.seed is not None else int(params.get("seed", 0))
        evaluate_run(args.run_dir, args.out, args.prepared, split, n, seed)
    except SewerbenchError as exc:
        print(f"sewerbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
