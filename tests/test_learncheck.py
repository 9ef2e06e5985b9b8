"""The learned-metric case of `sewerbench check` (benchmark/learncheck.py): the committed
reference holds real learned numbers (tiny MA-Q2L and the tiny Sewer-ML ResNet-101), and
breaking a mechanism makes the check fail.

`sewerbench check` (make test) runs the case against the committed reference; the test below
shuffles the training labels and shows the same comparison then misses. Zeroing MA-Q2L's
mask-attention bias is not detected at this size (its effect is inside the seed spread), so
there is no test claiming it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import check, learncheck
from benchmark.classes import CLASS_CODES
from benchmark.config import load_params, resolve_run

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "results" / "reference"
PARAMS = ROOT / "params.yaml"


def _reference(case):
    return json.loads((REF / "reference.json").read_text())["cases"][case]


def test_committed_learned_references_learned_and_have_measured_tolerances():
    """The references are learned numbers (far above a random predictor), each with per-seed
    values and tolerances of max(0.01, 3 sd) over those seeds."""
    for case in check.LEARNED_CASES:
        ref = _reference(case)
        seeds = ref["seeds"]
        assert sorted(seeds) == [str(s) for s in learncheck.SPREAD_SEEDS]
        assert ref["expected"] == seeds[str(learncheck.SPREAD_SEEDS[0])]
        for k in learncheck.METRICS:
            sd = float(np.std([seeds[s][k] for s in seeds], ddof=1))
            assert ref["tolerances"][k] == pytest.approx(max(learncheck.MIN_TOLERANCE, 3 * sd))
        # the label prior of the val set is ~0.07: a model that learned nothing is below the
        # tolerance band of every case (the shuffled-labels test below shows one lands there)
        assert ref["expected"]["mAP"] - ref["tolerances"]["mAP"] > 0.1


def test_case_params_keep_the_recipe_and_replace_data_and_runs(tmp_path):
    params = load_params(PARAMS)
    p = learncheck.case_params(params, "learn_maq2l", tmp_path)
    assert list(p["runs"]) == ["learn_maq2l"] and p["combos"] == {}
    cfg = resolve_run(p, "learn_maq2l", overrides=learncheck.LEARN_SETTINGS)
    ref_cfg = resolve_run(params, "maq2l_full")
    assert cfg.method == "maq2l" and cfg.model == ref_cfg.model
    assert cfg.optimizer == ref_cfg.optimizer and cfg.loss == ref_cfg.loss
    assert cfg.epochs == learncheck.LEARN_SETTINGS["epochs"] == 4
    assert cfg.pretrained is False and str(cfg.data.prepared) == str(tmp_path / "prepared")
    with pytest.raises(Exception, match="unknown case"):
        learncheck.case_params(params, "learn_nope", tmp_path)


def _shuffle_training_labels(monkeypatch):
    """Break: every training image gets another image's labels (a seeded permutation)."""
    import benchmark.train.data as D
    original = D.select_rows

    def shuffled(df, train_on, max_images, seed, where):
        df = original(df, train_on, max_images, seed, where)
        if str(where).endswith("train.csv"):
            perm = np.random.default_rng(0).permutation(len(df))
            df = df.copy()
            df[list(CLASS_CODES) + ["Defect", "ND"]] = df[list(CLASS_CODES) + ["Defect", "ND"]].to_numpy()[perm]
        return df
    monkeypatch.setattr(D, "select_rows", shuffled)


def test_learned_cases_cover_maq2l_and_a_sewerml_cnn():
    methods = {learncheck.LEARN_CASES[c]["method"]: learncheck.LEARN_CASES[c]["recipe"] for c in check.LEARNED_CASES}
    assert methods.get("maq2l") == "maq2l" and methods.get("resnet101") == "sewerml"
    assert set(check.LEARNED_CASES) <= set(json.loads((REF / "reference.json").read_text())["cases"])


# One case: the comparison is the same code for both, and the test above pins every case's
# tolerance band above the prior; training the second case again would add ~100 s to CI.
@pytest.mark.parametrize("case", ["learn_maq2l"])
def test_shuffled_labels_make_the_learned_case_fail(monkeypatch, case):
    _shuffle_training_labels(monkeypatch)
    misses, n = check.run_checks(REF, [case], PARAMS)
    assert n == len(learncheck.METRICS)
    assert "mAP" in {m.metric for m in misses}
    mAP = next(m for m in misses if m.metric == "mAP")
    assert mAP.got < mAP.expected - mAP.tolerance
