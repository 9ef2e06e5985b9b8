"""Official Sewer-ML metrics: hand-computed edge cases, the official-code oracle, sklearn."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark import metrics as M
from benchmark.classes import CIW, CLASS_CODES

sys.path.insert(0, str(Path(__file__).parent))
from official_metrics_ref import OFFICIAL_LABELS, OFFICIAL_WEIGHTS, ref_results_dict  # noqa: E402

DATA = Path(__file__).parent / "data"
NAN = float("nan")


def _same(a, b) -> bool:
    """Exact equality of nested metric structures, nan == nan."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or a == b


def _pad(scores, targets, n_classes=17):
    """Place small (N, k) arrays into the first k of 17 columns (rest: target 0, score 0)."""
    s = np.zeros((len(scores), n_classes))
    t = np.zeros((len(scores), n_classes), dtype=int)
    s[:, :np.shape(scores)[1]] = scores
    t[:, :np.shape(targets)[1]] = targets
    return s, t


# ----------------------------------------------------------------------------- layout
def test_official_layout_and_json_serialisable():
    rng = np.random.default_rng(0)
    s, t = rng.random((20, 17)), (rng.random((20, 17)) < 0.3).astype(int)
    r = M.evaluate(s, t)
    assert list(r) == ["Labels", "LabelWeights", "New", "Main", "Auxillary"]
    assert list(r["New"]) == ["F2", "F2_class", "F1_Normal"]
    assert list(r["Main"]) == ["OP", "OR", "OF1", "CP", "CR", "CF1", "MF1", "mF1", "EMAcc", "mAP"]
    assert list(r["Auxillary"]) == ["P_class", "R_class", "F1_class", "AP", "Np", "Nc", "Ng"]
    assert r["Labels"] == list(CLASS_CODES) == OFFICIAL_LABELS
    assert r["LabelWeights"] == OFFICIAL_WEIGHTS == CIW.tolist()
    for key in ("P_class", "R_class", "F1_class", "Np", "Nc", "Ng"):
        assert len(r["Auxillary"][key]) == 18
    assert len(r["Auxillary"]["AP"]) == 17 and len(r["New"]["F2_class"]) == 18
    json.dumps(r)  # plain Python types only


def test_nan_serialises_like_official_json_dump():
    # class 0 has no positives -> R nan -> CR, CF1 nan; json writes NaN like json.dump does
    s, t = _pad([[0.9, 0.1], [0.2, 0.8]], [[0, 0], [0, 1]])
    r = M.evaluate(s, t)
    assert math.isnan(r["Auxillary"]["R_class"][0])
    text = json.dumps(M.to_jsonable(r))
    assert "NaN" in text
    assert _same(json.loads(text), r)


# ----------------------------------------------------------------------------- hand cases
def test_hand_computed_counts_and_scores():
    # 5 images, classes RB, OB used; others all zero
    scores = [[0.9, 0.2], [0.6, 0.7], [0.4, 0.5], [0.1, 0.1], [0.3, 0.2]]
    targets = [[1, 0], [0, 1], [1, 1], [0, 0], [0, 1]]
    s, t = _pad(scores, targets)
    r = M.evaluate(s, t)
    aux = r["Auxillary"]
    # RB: Ng 2, Np 2 (0.9, 0.6), Nc 1; OB: Ng 3, Np 2 (0.7, 0.5), Nc 2
    # Normal: gt rows {3} -> Ng 1; predicted normal rows {3, 4} -> Np 2; Nc 1
    assert aux["Ng"][:2] == [2.0, 3.0] and aux["Np"][:2] == [2.0, 2.0] and aux["Nc"][:2] == [1.0, 2.0]
    assert (aux["Ng"][-1], aux["Np"][-1], aux["Nc"][-1]) == (1.0, 2.0, 1.0)
    assert aux["Np"][2:17] == [1.0] * 15  # Np == 0 reported as 1
    assert aux["P_class"][0] == 0.5 and aux["R_class"][0] == 0.5
    assert aux["P_class"][1] == 1.0 and aux["R_class"][1] == pytest.approx(2 / 3)
    assert aux["F1_class"][1] == pytest.approx(0.8)
    f2_ob = 5 * 1 * (2 / 3) / (4 * 1 + 2 / 3)
    assert r["New"]["F2_class"][1] == pytest.approx(f2_ob)
    assert r["New"]["F2_class"][0] == pytest.approx(0.5)
    # Normal: P 1/2, R 1 -> F1 2/3, F2 5*0.5/(2+1) = 5/6
    assert r["New"]["F1_Normal"] == pytest.approx(2 / 3)
    assert r["New"]["F2_class"][-1] == pytest.approx(5 / 6)
    # F2-CIW: classes without positives count 0 in the numerator but stay in the denominator
    assert r["New"]["F2"] == pytest.approx((1.0 * 0.5 + 0.5518 * f2_ob) / CIW.sum())
    # overall: sum Nc 4, sum Np 2+2+15+2=21, sum Ng 2+3+1=6
    main = r["Main"]
    assert main["OP"] == pytest.approx(4 / 21) and main["OR"] == pytest.approx(4 / 6)
    assert main["OF1"] == pytest.approx(2 * (4 / 21) * (4 / 6) / (4 / 21 + 4 / 6))
    assert main["mF1"] == pytest.approx(8 / 27)
    assert main["MF1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 18)
    # CP over 18 entries (the 15 empty classes give 0/1 = 0); CR is nan (0/0 for them)
    assert main["CP"] == pytest.approx((0.5 + 1.0 + 0.5) / 18)
    assert math.isnan(main["CR"]) and math.isnan(main["CF1"])
    # exact match: rows 0 (RB only? no: OB 0.2 < .5 ok -> match), 3 and 4? row 4 has OB=1 missed
    assert main["EMAcc"] == pytest.approx(2 / 5)
    # AP RB: ranking 0.9(1) 0.6(0) 0.4(1) -> (1 + 2/3)/2; OB: 0.7(1) 0.5(1) 0.2 tie(row0:0,row4:1)
    assert aux["AP"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert aux["AP"][2:] == [0.0] * 15  # no positives -> 0
    assert main["mAP"] == pytest.approx(np.mean(aux["AP"]))


def test_threshold_is_greater_equal_half():
    s, t = _pad([[0.5], [np.nextafter(0.5, 0)], [0.0]], [[1], [1], [0]])
    aux = M.evaluate(s, t)["Auxillary"]
    assert aux["Np"][0] == 1.0 and aux["Nc"][0] == 1.0
    # row 1 and 2 predicted Normal; row 2 is Normal
    assert (aux["Np"][-1], aux["Ng"][-1], aux["Nc"][-1]) == (2.0, 1.0, 1.0)


def test_minus_one_targets_count_as_zero_everywhere():
    s, t = _pad([[0.9, 0.1], [0.1, 0.1], [0.1, 0.8]], [[1, -1], [-1, -1], [-1, 1]])
    r = M.evaluate(s, t)
    t0 = np.where(t == -1, 0, t)
    assert _same(r, M.evaluate(s, t0))
    assert r["Auxillary"]["Ng"][-1] == 1.0  # row 1 is Normal
    assert r["Main"]["EMAcc"] == 1.0


def test_np_zero_and_ng_zero_edge_cases():
    # class 0: positives but never predicted -> P 0/1 = 0, R 0, F1 nan->0, F2 nan->0
    # class 1: predicted but no positives -> R 0/0 nan, F1 0, F2 0
    s, t = _pad([[0.1, 0.9], [0.2, 0.1]], [[1, 0], [1, 0]])
    r = M.evaluate(s, t)
    aux = r["Auxillary"]
    assert aux["Np"][0] == 1.0 and aux["P_class"][0] == 0.0 and aux["R_class"][0] == 0.0
    assert aux["F1_class"][0] == 0.0 and r["New"]["F2_class"][0] == 0.0
    assert aux["P_class"][1] == 0.0 and math.isnan(aux["R_class"][1])
    assert aux["F1_class"][1] == 0.0 and r["New"]["F2_class"][1] == 0.0
    assert r["New"]["F2"] == 0.0


def test_normal_f2_has_no_nan_guard_but_f1_normal_does():
    # every image defective -> Ng(Normal) = 0 -> R nan -> F2 nan, F1-Normal 0
    s, t = _pad([[0.9], [0.2]], [[1], [1]])
    r = M.evaluate(s, t)
    assert r["Auxillary"]["Ng"][-1] == 0.0
    assert math.isnan(r["New"]["F2_class"][-1])
    assert r["New"]["F1_Normal"] == 0.0 and r["Auxillary"]["F1_class"][-1] == 0.0


def test_overall_f1_nan_when_nothing_correct():
    s, t = _pad([[0.9, 0.1], [0.1, 0.1]], [[0, 1], [0, 1]])
    main = M.evaluate(s, t)["Main"]
    assert main["OP"] == 0.0 and main["OR"] == 0.0 and math.isnan(main["OF1"])
    assert main["mF1"] == 0.0


def test_perfect_prediction():
    t = np.eye(17, dtype=int)
    t = np.vstack([t, np.zeros((3, 17), dtype=int)])
    r = M.evaluate(t.astype(float), t)
    assert r["New"]["F2"] == pytest.approx(1.0) and r["New"]["F1_Normal"] == 1.0
    assert r["Main"]["EMAcc"] == 1.0 and r["Main"]["mAP"] == 1.0


def test_average_precision_hand_and_ties_follow_argsort():
    assert M.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision([0.9, 0.8], [0, 0]) == 0.0
    assert M.average_precision([0.1, 0.2, 0.3], [1, 1, 1]) == 1.0
    # -1 counts as 0
    assert M.average_precision([0.9, 0.8, 0.7], [-1, 0, 1]) == pytest.approx(1 / 3)
    # ties, asymmetric: the official np.argsort(scores)[::-1] ranks tied rows in *reverse* row
    # order (argsort keeps small tied runs in row order; the reversal flips them). Hard-coded:
    # a stable descending sort (row order) would give 1.0, 5/6 and 3/4 instead.
    assert M.average_precision([0.5, 0.5], [1, 0]) == 0.5                      # ranks: row 1, row 0
    assert M.average_precision([0.5, 0.5], [0, 1]) == 1.0
    assert M.average_precision([0.5, 0.5, 0.2], [1, 0, 1]) == pytest.approx((1 / 2 + 2 / 3) / 2)  # 7/12
    col = M.average_precision(np.array([[0.5, 0.5], [0.5, 0.5], [0.2, 0.5]]),
                              np.array([[1, 0], [0, 0], [1, 1]]))
    assert col.tolist() == pytest.approx([7 / 12, 1.0])                       # per column, same rule
    # the same through evaluate (17 columns; class RB carries the tie)
    s17 = np.zeros((3, 17))
    s17[:, 0] = [0.5, 0.5, 0.2]
    t17 = np.zeros((3, 17), dtype=int)
    t17[:, 0] = [1, 0, 1]
    assert M.evaluate(s17, t17)["Auxillary"]["AP"][0] == pytest.approx(7 / 12)
    # longer tie runs: whatever np.argsort(scores)[::-1] gives, as in the official code
    s = np.array([0.5, 0.5, 0.5, 0.2, 0.5])
    y = np.array([1, 0, 0, 1, 1])
    order = np.argsort(s)[::-1]
    hits = y[order] == 1
    ranks = np.flatnonzero(hits) + 1
    expected = np.mean(np.arange(1, 4) / ranks)
    assert M.average_precision(s, y) == pytest.approx(expected)


def test_input_validation():
    with pytest.raises(ValueError):
        M.evaluate(np.zeros((3, 17)), np.zeros((3, 16)))
    with pytest.raises(ValueError):
        M.evaluate(np.full((2, 17), np.nan), np.zeros((2, 17)))
    with pytest.raises(ValueError):
        M.evaluate(np.zeros((2, 17)), np.full((2, 17), 2))


# ----------------------------------------------------------------------------- oracle
def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    decimals = int(rng.integers(0, 3))
    s = rng.random((n, 17))
    if decimals:
        s = s.round(decimals)  # many ties, exact 0.5
    rate = rng.random(17) * rng.choice([0.1, 0.5, 1.0])
    t = (rng.random((n, 17)) < rate).astype(np.int64)
    if seed % 4 == 0:
        t[rng.random((n, 17)) < 0.15] = -1
    if seed % 5 == 0:
        s[:, rng.integers(0, 17, size=3)] = 0.5
    if seed % 7 == 0:
        t[rng.random(n) < 0.5] = 0  # many Normal rows
    if seed % 11 == 0:
        s[:] = 0.0  # nothing predicted
    if seed % 13 == 0:
        t[:, :] = 0
        t[:, 0] = 1  # no Normal rows
    return s, t


@pytest.mark.parametrize("block", range(4))
def test_identical_to_official_transcription_on_random_inputs(block):
    for seed in range(block * 100, block * 100 + 100):
        s, t = _random_case(seed)
        ours = M.evaluate(s, t)
        ref = M.to_jsonable(ref_results_dict(s, t))
        assert _same(ours, ref), f"seed {seed}"
        # bit-identical, including the JSON text
        assert json.dumps(ours) == json.dumps(ref), f"seed {seed}"


def test_identical_to_official_on_a_larger_input():
    rng = np.random.default_rng(7)
    n = 3000
    t = (rng.random((n, 17)) < np.linspace(0.001, 0.3, 17)).astype(int)
    s = np.clip(0.4 * t + rng.random((n, 17)) * 0.7, 0, 1).round(3)
    assert json.dumps(M.evaluate(s, t)) == json.dumps(M.to_jsonable(ref_results_dict(s, t)))


def test_threaded_average_precision_is_the_serial_one(monkeypatch):
    """Above PARALLEL_AP_ROWS the classes' APs are computed on threads: the same floats as one
    thread and as the official code, ties (the argsort walk) included."""
    rng = np.random.default_rng(11)
    n = 3000
    t = (rng.random((n, 17)) < np.linspace(0.001, 0.3, 17)).astype(int)
    s = np.clip(0.4 * t + rng.random((n, 17)) * 0.7, 0, 1).round(2)         # many ties
    serial = M.evaluate(s, t)
    monkeypatch.setattr(M, "_ap_threads", lambda n_rows, n_classes: 3)      # 3 threads even on 1 core
    threaded = M.evaluate(s, t)
    assert json.dumps(threaded) == json.dumps(serial) == json.dumps(M.to_jsonable(ref_results_dict(s, t)))


def test_does_not_modify_inputs():
    s, t = _random_case(4)
    s0, t0 = s.copy(), t.copy()
    M.evaluate(s, t)
    assert np.array_equal(s, s0) and np.array_equal(t, t0)


# ----------------------------------------------------------------------------- sklearn
def test_agrees_with_sklearn_where_definitions_coincide():
    from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_score, recall_score

    for seed in range(8):
        rng = np.random.default_rng(1000 + seed)
        n = 200
        t = (rng.random((n, 17)) < rng.random(17) * 0.4).astype(int)
        s = rng.random((n, 17))  # continuous: tie-free
        r = M.evaluate(s, t)
        aux, pred = r["Auxillary"], (s >= 0.5).astype(int)
        for k in range(17):
            if aux["Ng"][k] > 0 and pred[:, k].sum() > 0:
                assert aux["P_class"][k] == pytest.approx(precision_score(t[:, k], pred[:, k]))
                assert aux["R_class"][k] == pytest.approx(recall_score(t[:, k], pred[:, k]))
                assert aux["F1_class"][k] == pytest.approx(f1_score(t[:, k], pred[:, k]))
                assert r["New"]["F2_class"][k] == pytest.approx(
                    fbeta_score(t[:, k], pred[:, k], beta=2))
            if aux["Ng"][k] > 0:
                assert aux["AP"][k] == pytest.approx(average_precision_score(t[:, k], s[:, k]))
        gt_n = (t.sum(1) == 0).astype(int)
        pr_n = (pred.sum(1) == 0).astype(int)
        if gt_n.sum() and pr_n.sum():
            assert r["New"]["F1_Normal"] == pytest.approx(f1_score(gt_n, pr_n))
        assert r["Main"]["EMAcc"] == pytest.approx(np.mean((pred == t).all(1)))


# ----------------------------------------------------------------------------- regression
def test_recorded_regression_case():
    from benchmark.scores import load_aligned

    data = load_aligned(DATA / "metrics_regression_scores.csv", DATA / "metrics_regression_gt.csv")
    expected = json.loads((DATA / "metrics_regression_expected.json").read_text())
    got = M.evaluate(data.scores, data.targets)
    assert _same(got, expected)
    # the fixture exercises the edge cases
    assert math.isnan(expected["Auxillary"]["R_class"][14])
    assert expected["Auxillary"]["Np"][15] == 1.0
    assert list(data.filenames) == sorted(data.filenames)


def test_counts_api_batch_axis():
    s, t = _random_case(3)
    ng, np_, nc = M.class_counts(s, t)
    single = M.metrics_from_counts(ng, np_, nc)
    batch = M.metrics_from_counts(np.stack([ng, ng]), np.stack([np_, np_]), np.stack([nc, nc]))
    r = M.evaluate(s, t)
    assert float(single["F2_CIW"]) == r["New"]["F2"]
    assert np.allclose(batch["F2_CIW"], r["New"]["F2"], rtol=0, atol=1e-15)
    assert np.allclose(batch["F1_Normal"], r["New"]["F1_Normal"], rtol=0, atol=1e-15)
