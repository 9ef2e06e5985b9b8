"""Regenerate the metrics regression fixture (run from the repo root; not run by the tests).

    .venv/bin/python tests/data/metrics_make_regression.py

Writes metrics_regression_scores.csv (rows shuffled), metrics_regression_gt.csv (official
header) and metrics_regression_expected.json: the metrics computed by the test oracle
(tests/official_metrics_ref.py, a transcription of the official code) on rows sorted by
Filename, as the official calculate_results.py would.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmark.classes import CLASS_CODES, CSV_COLUMNS  # noqa: E402
from official_metrics_ref import ref_results_dict  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(20210618)
    n = 160
    rate = np.linspace(0.02, 0.35, 17)
    t = (rng.random((n, 17)) < rate).astype(np.int64)
    t[rng.random(n) < 0.4] = 0          # plenty of Normal rows
    t[:, 14] = 0                         # OS: no positives (Ng = 0 -> R nan)
    s = np.clip(0.55 * t + rng.random((n, 17)) * 0.6 - 0.1, 0, 1).round(2)  # ties, 0.5s
    s[:, 15] = np.minimum(s[:, 15], 0.49)  # OP: never predicted (Np = 0 -> 1)
    s[:5, 3] = 0.5                       # exactly on the threshold
    names = np.array([f"{i:08d}.png" for i in rng.choice(10**6, size=n, replace=False)])

    gt = pd.DataFrame(t, columns=list(CLASS_CODES))
    gt.insert(0, "Filename", names)
    gt.insert(1, "WaterLevel", rng.choice([0, 5, 10, 20, 30], size=n))
    gt.insert(2, "VA", 0)
    gt["ND"] = (t.sum(1) == 0).astype(int)
    gt["Defect"] = (t.sum(1) > 0).astype(int)
    gt = gt[list(CSV_COLUMNS)]
    gt.to_csv(HERE / "metrics_regression_gt.csv", index=False)

    sc = pd.DataFrame(s, columns=list(CLASS_CODES))
    sc.insert(0, "Filename", names)
    sc = sc.iloc[rng.permutation(n)]
    sc.to_csv(HERE / "metrics_regression_scores.csv", index=False)

    order = np.argsort(names)
    expected = ref_results_dict(s[order], t[order])

    def plain(o):
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        return float(o) if isinstance(o, (np.floating, float, np.integer)) else o

    (HERE / "metrics_regression_expected.json").write_text(
        json.dumps(plain(expected), indent=2, allow_nan=True) + "\n")


if __name__ == "__main__":
    main()
