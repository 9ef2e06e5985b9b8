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


def test_merge_adds_another_machines_repro_with_per_split_spread(results, tmp_path, capsys, monkeypatch):
    """A second machine's repro of the same params joins the reference: expected = the mean,
    per-split tolerances at least k x the spread between the machines; a broken run still fails,
    and both machines' repros pass."""
    import benchmark.check_results as CR

    root, params = results
    p = {**PARAMS, "runs": {**PARAMS["runs"], "s": {"method": "maq2l", "split": "sub_0.0625"}}}
    params.write_text(yaml.safe_dump(p))
    _write_run(root, "s", 0.02, 7)
    refdir = tmp_path / "ref"
    refdir.mkdir()
    args = ["check", "--results", str(root), "--params", str(params), "--reference-dir", str(refdir)]
    assert main([*args, "--update"]) == 0
    first = json.loads((refdir / "results_smoke.json").read_text())
    # the other machine: its 1/16 run moved a lot, its full-data runs a little
    other = tmp_path / "other"
    other.mkdir()
    for run, seed, noise in (("a", 10, 0.02), ("a_seed1", 11, 0.02), ("a_seed2", 12, 0.02), ("b", 13, 0.02),
                             ("s", 14, 0.25)):
        _write_run(other, run, noise, seed)
    monkeypatch.setattr(CR, "machine_fingerprint", lambda: {"cpu": "Other CPU", "cpu_capability": "AVX2",
                                                            "torch": "x"})
    assert main(["check", "--results", str(other), "--params", str(params), "--reference-dir", str(refdir)]) == 1
    assert main(["check", "--results", str(other), "--params", str(params), "--reference-dir", str(refdir),
                 "--update", "--merge"]) == 0
    capsys.readouterr()
    ref = json.loads((refdir / "results_smoke.json").read_text())
    assert [o["machine"]["cpu"] for o in ref["observations"]] == [first["machine"]["cpu"], "Other CPU"]
    assert ref["run_splits"] == {"a": "full", "b": "full", "s": "sub_0.0625"}
    va, vb = (headline_values(d / "metrics")["s"]["val"]["F1_Normal"] for d in (root, other))
    assert ref["expected"]["s"]["val"]["F1_Normal"] == pytest.approx((va + vb) / 2)
    assert ref["split_tolerances"]["sub_0.0625"]["F1_Normal"] >= 3 * abs(va - vb) / np.sqrt(2) - 1e-6
    assert ref["split_tolerances"]["full"]["F2_CIW"] >= ref["tolerances"]["F2_CIW"]
    assert main(["check", "--results", str(other), "--params", str(params), "--reference-dir", str(refdir)]) == 0
    assert "another machine" not in capsys.readouterr().out          # this machine is one of them
    monkeypatch.undo()
    assert main(args) == 0
    _write_run(root, "b", 0.02, 3, shuffle=True)                      # a broken full-data run still fails
    assert main(args) == 1
    assert "b/val | F2_CIW" in capsys.readouterr().out
    # merging again from the same machine replaces its observation instead of adding one
    _write_run(root, "b", 0.02, 3)
    assert main([*args, "--update", "--merge"]) == 0
    assert len(json.loads((refdir / "results_smoke.json").read_text())["observations"]) == 2
    # other runs, --merge without --update: one-line errors
    params.write_text(yaml.safe_dump(PARAMS))
    assert main([*args, "--update", "--merge"]) == 2
    assert "runs differ" in capsys.readouterr().err
    assert main([*args, "--merge"]) == 2
    assert main(["check", "--merge"]) == 2
