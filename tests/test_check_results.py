"""`sewerbench check --results`: a finished repro against committed headline numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.check_results import build_reference, compare, headline_values, seed_spread
from benchmark.cli import main
from benchmark.classes import CLASS_CODES
from benchmark.evaluation import compute, dumps_json
from benchmark.errors import SewerbenchError

REF = Path(__file__).resolve().parents[1] / "results" / "reference"
PARAMS = {"profile": "smoke", "seed": 0,
          "runs": {"a": {"method": "maq2l", "split": "full", "seeds": [0, 1, 2]},
                   "b": {"method": "xie2019", "split": "full"}},
          "combos": {}}


def _write_run(root: Path, run: str, noise: float, seed: int, shuffle: bool = False) -> None:
    scores = pd.read_csv(REF / "scores_a.csv")
    rng = np.random.default_rng(seed)
    vals = scores[list(CLASS_CODES)].to_numpy()
    vals = np.clip(vals + rng.normal(0, noise, vals.shape), 0, 1)
    if shuffle:
        vals = vals[rng.permutation(len(vals))]
    scores[list(CLASS_CODES)] = vals
    path = root / f"{run}.csv"
    scores.to_csv(path, index=False)
    (root / "metrics" / run).mkdir(parents=True, exist_ok=True)
    (root / "metrics" / run / "val.json").write_text(dumps_json(compute(path, REF / "gt.csv")))


@pytest.fixture()
def results(tmp_path):
    for run, seed in (("a", 0), ("a_seed1", 1), ("a_seed2", 2), ("b", 3)):
        _write_run(tmp_path, run, 0.02, seed)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    return tmp_path, params


def test_reference_from_seed_spread(results):
    root, _ = results
    ref = build_reference(root / "metrics", PARAMS, k=3.0, floor=0.0)
    values = headline_values(root / "metrics")
    f2 = [values[r]["val"]["F2_CIW"] for r in ("a", "a_seed1", "a_seed2")]
    assert ref["seed_sd"]["F2_CIW"] == pytest.approx(np.std(f2, ddof=1))
    assert ref["tolerances"]["F2_CIW"] == pytest.approx(3 * np.std(f2, ddof=1), abs=1e-6)
    assert set(ref["expected"]) == {"a", "b"} and ref["seed_groups"] == ["a"]
    assert ref["expected"]["b"]["val"]["mAP"] == values["b"]["val"]["mAP"]
    assert build_reference(root / "metrics", PARAMS, floor=0.5)["tolerances"]["mAP"] == 0.5


def test_binary_stage1_runs_are_left_to_their_combos(results):
    """The default's xie2019_binary_full has binary metrics only (binary_val.json): the
    reference of a finished repro leaves it out instead of refusing the whole repro."""
    root, _ = results
    (root / "metrics" / "s1").mkdir()
    (root / "metrics" / "s1" / "binary_val.json").write_text("{}")
    params = {**PARAMS, "runs": {**PARAMS["runs"], "s1": {"method": "xie2019_binary", "split": "full",
                                                          "target": "binary"}}}
    ref = build_reference(root / "metrics", params, k=3.0, floor=0.0)
    assert set(ref["expected"]) == {"a", "b"}
    params["runs"]["s2"] = {"method": "xie2019", "split": "full"}     # a missing multi-label run
    with pytest.raises(SewerbenchError, match="no metrics for s2"):
        build_reference(root / "metrics", params)


def test_no_seeds_no_reference(results):
    root, _ = results
    with pytest.raises(SewerbenchError, match="two or more finished seeds"):
        seed_spread(headline_values(root / "metrics"), {"a": ["a"], "b": ["b"]})


def test_cli_passes_then_catches_a_broken_run(results, tmp_path, capsys):
    root, params = results
    refdir = tmp_path / "ref"
    refdir.mkdir()
    args = ["check", "--results", str(root), "--params", str(params), "--reference-dir", str(refdir)]
    assert main([*args, "--update"]) == 0
    assert (refdir / "results_smoke.json").is_file()
    assert main(args) == 0
    assert "within tolerance" in capsys.readouterr().out
    _write_run(root, "b", 0.02, 3, shuffle=True)            # a run whose learning broke
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "b/val | F2_CIW" in out and "a/val" not in out
    import shutil
    shutil.rmtree(root / "metrics" / "a")                     # a run that did not finish
    assert main(args) == 1
    assert "a/val | mAP | " in capsys.readouterr().out


def test_cli_bad_inputs(results, tmp_path, capsys):
    root, params = results
    refdir = tmp_path / "ref"
    refdir.mkdir()
    args = ["check", "--results", str(root), "--params", str(params), "--reference-dir", str(refdir)]
    assert main(args) == 2                                    # no reference yet
    assert "results reference missing" in capsys.readouterr().err
    assert main([*args, "--update"]) == 0
    ref = json.loads((refdir / "results_smoke.json").read_text())
    other = tmp_path / "paper.yaml"
    other.write_text(yaml.safe_dump({**PARAMS, "profile": "paper"}))
    (refdir / "results_paper.json").write_text(json.dumps({**ref, "profile": "smoke"}))
    assert main(["check", "--results", str(root), "--params", str(other), "--reference-dir",
                 str(refdir)]) == 2
    assert "for profile 'smoke'" in capsys.readouterr().err
    (refdir / "results_smoke.json").write_text(json.dumps({**ref, "tolerances": {"mAP": -1}}))
    assert main(args) == 2
    assert "tolerances" in capsys.readouterr().err
    (refdir / "results_smoke.json").write_text("{not json")
    assert main(args) == 2
    assert main(["check", "--results", str(tmp_path / "nowhere"), "--params", str(params),
                 "--reference-dir", str(refdir), "--update"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([*args, "--case", "evaluate_a"]) == 2


def test_reference_records_the_machine_and_a_check_elsewhere_says_so(results, capsys):
    from benchmark.check_results import machine_fingerprint, machine_note

    root, params = results
    ref_dir = root / "ref"
    assert main(["check", "--results", str(root), "--update", "--params", str(params),
                 "--reference-dir", str(ref_dir)]) == 0
    ref = json.loads((ref_dir / "results_smoke.json").read_text())
    assert ref["machine"] == machine_fingerprint() and machine_note(ref) is None
    capsys.readouterr()
    assert main(["check", "--results", str(root), "--params", str(params), "--reference-dir", str(ref_dir)]) == 0
    assert "another machine" not in capsys.readouterr().out
    ref["machine"]["cpu"] = "Some Other CPU"
    (ref_dir / "results_smoke.json").write_text(json.dumps(ref))
    assert main(["check", "--results", str(root), "--params", str(params), "--reference-dir", str(ref_dir)]) == 0
    out = capsys.readouterr().out
    assert "another machine (cpu 'Some Other CPU' there" in out and "within tolerance" in out
    del ref["machine"]   # references written before the field: no note
    assert machine_note(ref) is None
    ref["machine"] = ["x"]
    (ref_dir / "results_smoke.json").write_text(json.dumps(ref))
    assert main(["check", "--results", str(root), "--params", str(params), "--reference-dir", str(ref_dir)]) == 2
    assert "machine: must be an object of strings" in capsys.readouterr().err
