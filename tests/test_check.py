"""`sewerbench check`: committed references, tolerances, failure on perturbation."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import check
from benchmark.classes import CLASS_CODES
from benchmark.cli import main

REF = Path(__file__).resolve().parents[1] / "results" / "reference"
FAST = ["evaluate_a", "evaluate_b", "bootstrap_a", "paired_ab", "combine_replace"]


@pytest.fixture()
def ref_copy(tmp_path):
    dst = tmp_path / "reference"
    shutil.copytree(REF, dst)
    return dst


def test_committed_reference_passes():
    misses, n = check.run_checks(REF, FAST)
    assert misses == []
    assert n > 300


def test_reference_metrics_equal_the_official_oracle():
    sys.path.insert(0, str(Path(__file__).parent))
    from official_metrics_ref import ref_results_dict  # the test-only loop rewrite

    ref = check.load_reference(REF)["cases"]
    for which in ("a", "b"):
        s = pd.read_csv(REF / f"scores_{which}.csv").sort_values("Filename")
        g = pd.read_csv(REF / "gt.csv").sort_values("Filename")
        oracle = ref_results_dict(s[list(CLASS_CODES)].to_numpy(), g[list(CLASS_CODES)].to_numpy())
        flat = check.flatten_metrics(oracle)
        exp = ref[f"evaluate_{which}"]["expected"]
        assert set(flat) == set(exp)
        for k, v in flat.items():
            if isinstance(v, float) and np.isnan(v):
                assert np.isnan(exp[k]), k
            else:
                assert exp[k] == pytest.approx(v, abs=1e-12), k


def test_committed_inputs_have_edge_cases():
    g = pd.read_csv(REF / "gt.csv")
    assert g["OS"].sum() == 0                       # a class without positives
    assert (g[list(CLASS_CODES)].sum(axis=1) == 0).any()  # Normal rows
    exp = check.load_reference(REF)["cases"]["evaluate_a"]["expected"]
    assert np.isnan(exp["R_class.OS"])              # 0/0 recall stays nan, like the official code


def test_perturbed_reference_fails(ref_copy, capsys):
    ref = json.loads((ref_copy / "reference.json").read_text())
    ref["cases"]["evaluate_a"]["expected"]["F2_CIW"] += 1e-6
    ref["cases"]["paired_ab"]["expected"]["F2_CIW.p_value"] = 0.5
    (ref_copy / "reference.json").write_text(json.dumps(ref))
    misses, _ = check.run_checks(ref_copy, FAST)
    assert {(m.case, m.metric) for m in misses} == {("evaluate_a", "F2_CIW"), ("paired_ab", "F2_CIW.p_value")}
    rc = main(["check", "--reference-dir", str(ref_copy), "--case", "evaluate_a"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "evaluate_a | F2_CIW |" in out and "| 1e-09" in out
    assert "expected" in out and "got" in out and "tolerance" in out


def test_perturbed_scores_fail(ref_copy):
    s = pd.read_csv(ref_copy / "scores_a.csv")
    s.loc[0, "RB"] = 1.0 - s.loc[0, "RB"]
    s.to_csv(ref_copy / "scores_a.csv", index=False)
    misses, _ = check.run_checks(ref_copy, ["evaluate_a"])
    assert misses and all(m.case == "evaluate_a" for m in misses)
    assert any(m.metric.endswith(".RB") or m.metric == "mAP" for m in misses)


def test_tolerance_respected_and_nan_handling(ref_copy):
    ref = json.loads((ref_copy / "reference.json").read_text())
    case = ref["cases"]["evaluate_b"]
    case["expected"]["mAP"] += 0.004
    case["tolerances"] = {"mAP": 0.005}
    (ref_copy / "reference.json").write_text(json.dumps(ref))
    misses, _ = check.run_checks(ref_copy, ["evaluate_b"])
    assert misses == []
    assert check._close(float("nan"), float("nan"), 0) and not check._close(float("nan"), 0.0, 1)
    assert not check._close(1.0, None, 1) and check._close(float("inf"), float("inf"), 0)


def test_missing_reference_is_a_clean_error(tmp_path, capsys):
    rc = main(["check", "--reference-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("sewerbench: error:") and "reference.json" in err


def test_update_roundtrip(tmp_path, capsys):
    """`check --update` writes values computed independently here (official loop oracle,
    tests/indep_stats.py bootstrap), keeps edited tolerances, repairs a wrong value, and the
    written reference then fails on perturbed inputs."""
    import indep_stats as I
    sys.path.insert(0, str(Path(__file__).parent))
    from official_metrics_ref import ref_results_dict

    check.make_inputs(tmp_path, n=60, seed=3)
    cases = ["--case", "evaluate_a", "--case", "bootstrap_a", "--case", "paired_ab"]
    assert main(["check", "--update", "--reference-dir", str(tmp_path), *cases]) == 0
    ref = json.loads((tmp_path / "reference.json").read_text())["cases"]
    assert set(ref) == {"evaluate_a", "bootstrap_a", "paired_ab"}
    assert ref["evaluate_a"]["tolerance"] == 1e-9
    gt = pd.read_csv(tmp_path / "gt.csv").sort_values("Filename")
    sa = pd.read_csv(tmp_path / "scores_a.csv").sort_values("Filename")
    sb = pd.read_csv(tmp_path / "scores_b.csv").sort_values("Filename")
    y, a, b = (f[list(CLASS_CODES)].to_numpy() for f in (gt, sa, sb))
    oracle = check.flatten_metrics(ref_results_dict(a, y))
    exp = ref["evaluate_a"]["expected"]
    assert set(exp) == set(oracle)
    for k, v in oracle.items():
        assert (np.isnan(exp[k]) and np.isnan(v)) or exp[k] == pytest.approx(v, abs=1e-12), k
    reps = I.replicates(a, y, 200, 0)
    for k in ("F2_CIW", "F1_Normal"):
        lo, hi = np.quantile(reps[k], [0.025, 0.975])
        assert ref["bootstrap_a"]["expected"][f"{k}.lo"] == pytest.approx(lo, abs=1e-12)
        assert ref["bootstrap_a"]["expected"][f"{k}.hi"] == pytest.approx(hi, abs=1e-12)
    mine = I.paired(a, b, y, 200, 0)
    for k in ("F2_CIW", "F1_Normal"):
        e, got = mine[k], ref["paired_ab"]["expected"]
        assert got[f"{k}.delta"] == pytest.approx(e["delta"], abs=1e-12)
        assert [got[f"{k}.ci_lo"], got[f"{k}.ci_hi"]] == pytest.approx(e["ci"], abs=1e-12)
        assert got[f"{k}.p_value"] == pytest.approx(e["p_value"], abs=1e-12)
    # an edited tolerance survives --update, a wrong expected value is repaired
    full = json.loads((tmp_path / "reference.json").read_text())
    full["cases"]["evaluate_a"]["tolerance"] = 1e-7
    full["cases"]["evaluate_a"]["expected"]["mAP"] += 0.01
    (tmp_path / "reference.json").write_text(json.dumps(full))
    assert main(["check", "--reference-dir", str(tmp_path), *cases]) == 1
    assert main(["check", "--update", "--reference-dir", str(tmp_path), *cases]) == 0
    again = json.loads((tmp_path / "reference.json").read_text())["cases"]["evaluate_a"]
    assert again["tolerance"] == 1e-7 and again["expected"]["mAP"] == pytest.approx(oracle["mAP"], abs=1e-12)
    assert main(["check", "--reference-dir", str(tmp_path), *cases]) == 0
    # the written reference detects a changed input
    s2 = pd.read_csv(tmp_path / "scores_a.csv")
    s2.loc[0, "RB"] = 1.0 - s2.loc[0, "RB"]
    s2.to_csv(tmp_path / "scores_a.csv", index=False)
    capsys.readouterr()
    assert main(["check", "--reference-dir", str(tmp_path), *cases]) == 1
    assert "evaluate_a | " in capsys.readouterr().out


def test_tiny_training_case_is_deterministic():
    """The tiny engine run of the check reproduces the committed reference."""
    misses, n = check.run_checks(REF, ["train_tiny"])
    assert n >= 3 and misses == []


def test_update_of_one_case_keeps_the_others(ref_copy):
    """`check --update --case X` rewrites X only: every other case stays as committed."""
    before = json.loads((ref_copy / "reference.json").read_text())["cases"]
    assert main(["check", "--update", "--reference-dir", str(ref_copy), "--case", "evaluate_a"]) == 0
    after = json.loads((ref_copy / "reference.json").read_text())["cases"]
    assert list(after) == list(before)
    assert {k: v for k, v in after.items() if k != "evaluate_a"} == \
        {k: v for k, v in before.items() if k != "evaluate_a"}
