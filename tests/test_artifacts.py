"""benchmark.artifacts: every producer writes exactly the schema its consumers read."""
from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import pytest

from benchmark import artifacts as A
from benchmark import tables
from benchmark.bootstrap import paired_bootstrap
from benchmark.classes import THRESHOLD
from benchmark.evaluation import binary_metrics, compare, compute
from helpers import gt_frame, scores_frame


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 17)) < 0.2).astype(int)
    s = np.clip(0.6 * y + 0.5 * rng.random(y.shape), 0, 1)
    return [f"{i:08d}.png" for i in range(n)], s, y


def _write(tmp_path, names, s, y):
    gt_frame(names, y).to_csv(tmp_path / "gt.csv", index=False)
    for name, sc in (("a", s), ("b", s[::-1])):
        scores_frame(names, sc).to_csv(tmp_path / f"{name}.csv", index=False)
    pd.DataFrame({"Filename": names, "Defect": s.max(axis=1)}).to_csv(tmp_path / "bin.csv", index=False)


def _keys(td) -> tuple[str, ...]:
    return tuple(typing.get_type_hints(td))


def test_typed_dicts_match_the_key_tuples():
    assert _keys(A.MetricsJSON) == A.METRICS_KEYS + (A.BOOTSTRAP,)
    assert _keys(A.MetricsNew) == A.NEW_KEYS and _keys(A.MetricsMain) == A.MAIN_KEYS
    assert _keys(A.MetricsAuxillary) == A.AUX_KEYS
    assert _keys(A.BootstrapBlock) == A.BOOTSTRAP_KEYS
    assert _keys(A.PairedComparison) == A.PAIRED_KEYS
    assert _keys(A.PairedMetric) == A.PAIRED_METRIC_KEYS
    assert _keys(A.CompareResult) == A.COMPARE_INPUT_KEYS + A.PAIRED_KEYS
    assert _keys(A.BinaryMetrics) == A.BINARY_KEYS
    assert _keys(A.TrainSummary) == A.TRAIN_SUMMARY_KEYS
    assert A.CI_METRICS == ("F2_CIW", "F1_Normal") and THRESHOLD == 0.5


def test_producers_write_the_schema(tmp_path):
    names, s, y = _data()
    _write(tmp_path, names, s, y)
    m = compute(tmp_path / "a.csv", tmp_path / "gt.csv", n_bootstrap=20, seed=1)
    assert tuple(m) == A.METRICS_KEYS + (A.BOOTSTRAP,)
    assert tuple(m[A.NEW]) == A.NEW_KEYS and tuple(m[A.MAIN]) == A.MAIN_KEYS
    assert tuple(m[A.AUXILLARY]) == A.AUX_KEYS
    assert tuple(m[A.BOOTSTRAP]) == A.BOOTSTRAP_KEYS and m[A.BOOTSTRAP]["n"] == 20
    assert tuple(compute(tmp_path / "a.csv", tmp_path / "gt.csv")) == A.METRICS_KEYS

    p = paired_bootstrap(s, s[::-1], y, n=20, seed=0)
    assert tuple(p) == A.PAIRED_KEYS and tuple(p[A.PAIRED_METRICS]) == A.CI_METRICS
    for entry in p[A.PAIRED_METRICS].values():
        assert tuple(entry) == A.PAIRED_METRIC_KEYS
    c = compare(tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "gt.csv", n=20)
    assert tuple(c) == A.COMPARE_INPUT_KEYS + A.PAIRED_KEYS
    assert tuple(binary_metrics(tmp_path / "bin.csv", tmp_path / "gt.csv")) == A.BINARY_KEYS


def test_consumers_read_one_spelling():
    names, s, y = _data()
    from benchmark.metrics import evaluate
    m = evaluate(s, y)
    old = {**m, "CI": {"F2_CIW": [0.1, 0.2], "F1_Normal": [0.3, 0.4]}}
    assert tables.ci_block(old) == {} and "F2_lo" not in tables.headline(old)
    new = {**m, A.BOOTSTRAP: A.bootstrap_block({"F2_CIW": (0.1, 0.2), "F1_Normal": (0.3, 0.4)}, 10, 0)}
    assert tables.headline(new)["F2_lo"] == pytest.approx(10.0)
    p = paired_bootstrap(s, s[::-1], y, n=20, seed=0)
    assert tables._p_value(p, "F2_CIW") == p["metrics"]["F2_CIW"]["p_value"]
    assert tables._delta({"F2_CIW": {"delta": 0.3}}, "F2_CIW") is None  # no other layouts
    assert tables._p_value(None, "F2_CIW") is None


def test_train_summary_schema():
    summary = {k: None for k in A.TRAIN_SUMMARY_KEYS}
    A.check_train_summary(summary)
    A.check_train_summary({k: v for k, v in summary.items() if k not in A.TORCH_ONLY_SUMMARY_KEYS})
    with pytest.raises(ValueError, match="missing key 'best_epoch'"):
        A.check_train_summary({k: v for k, v in summary.items() if k != "best_epoch"})
    with pytest.raises(ValueError, match="unknown key 'best_value'"):
        A.check_train_summary({**summary, "best_value": 1.0})
