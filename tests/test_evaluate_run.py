"""The DVC stage commands: `sewerbench evaluate --run-dir` and `sewerbench prepare --params`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.cli import main
from benchmark.evaluation import evaluate_run
from helpers import gt_frame, scores_frame


def _scores(path: Path, names, s):
    scores_frame(names, s).to_csv(path, index=False, float_format="%.6f")


@pytest.fixture()
def setup(tmp_path):
    """A prepared folder (no splits.json, like hand-made fixtures) and a subset-trained run."""
    rng = np.random.default_rng(0)
    n = 48
    names = [f"{i:08d}.png" for i in range(1, n + 1)]
    y = (rng.random((n, 17)) < 0.2).astype(int)
    s = np.clip(0.7 * y + 0.4 * rng.random(y.shape), 0, 1)
    prep = tmp_path / "prepared"
    (prep / "full").mkdir(parents=True)
    (prep / "sub_0.0625").mkdir()
    gt_frame(names, y).to_csv(prep / "full" / "val.csv", index=False)
    gt_frame(names[::4], y[::4]).to_csv(prep / "sub_0.0625" / "val.csv", index=False)
    gt_frame(names, y).to_csv(prep / "full" / "test_gt.csv", index=False)
    run = tmp_path / "runs" / "cell_sub"
    run.mkdir(parents=True)
    _scores(run / "scores_val.csv", names, s)
    _scores(run / "scores_val_sub.csv", names[::4], s[::4])
    _scores(run / "scores_test.csv", names, s[::-1])
    (run / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    (run / "train_summary.json").write_text('{"run": "cell_sub"}\n')
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 3, "tables": {"bootstrap": 40},
                                      "runs": {"cell_sub": {"method": "maq2l", "split": "sub_0.0625"}}}))
    return prep, run, params


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_run_folder_mode_equals_library_and_scores_mode(tmp_path, setup, capsys):
    prep, run, params = setup
    out = tmp_path / "metrics" / "cell_sub"
    rc = main(["evaluate", "--run-dir", str(run), "--out", str(out), "--prepared", str(prep),
               "--split", "sub_0.0625", "--bootstrap", "30", "--seed", "1"])
    assert rc == 0, capsys.readouterr().err
    assert set(_files(out)) == {"val.json", "val_sub.json", "test.json", "history.csv", "train_summary.json"}
    evaluate_run(run, tmp_path / "lib", prep, "sub_0.0625", 30, 1)
    assert _files(out) == _files(tmp_path / "lib")
    # each JSON is exactly what the scores mode writes for the same pair of files
    for name, gt in (("val", "full/val.csv"), ("val_sub", "sub_0.0625/val.csv"), ("test", "full/test_gt.csv")):
        one = tmp_path / f"{name}.json"
        assert main(["evaluate", "--scores", str(run / f"scores_{name}.csv"), "--gt", str(prep / gt),
                     "--out", str(one), "--bootstrap", "30", "--seed", "1", "--quiet"]) == 0
        assert one.read_bytes() == (out / f"{name}.json").read_bytes()
    assert (out / "history.csv").read_bytes() == (run / "history.csv").read_bytes()


def test_run_folder_defaults_from_params(tmp_path, setup):
    prep, run, params = setup
    out = tmp_path / "m"
    assert main(["evaluate", "--run-dir", str(run), "--out", str(out), "--prepared", str(prep),
                 "--params", str(params)]) == 0
    boot = json.loads((out / "val.json").read_text())["Bootstrap"]
    assert (boot["n"], boot["seed"]) == (40, 3)
    assert (out / "val_sub.json").is_file()  # split sub_0.0625 from runs.cell_sub.split
    # --split full: no starred evaluation; --bootstrap 0: no Bootstrap block
    out2 = tmp_path / "m2"
    assert main(["evaluate", "--run-dir", str(run), "--out", str(out2), "--prepared", str(prep),
                 "--params", str(params), "--split", "full", "--bootstrap", "0"]) == 0
    assert not (out2 / "val_sub.json").exists()
    assert "Bootstrap" not in json.loads((out2 / "val.json").read_text())


@pytest.mark.parametrize("extra, expect", [
    (["--scores", "x.csv"], "--scores: not with --run-dir"),
    (["--table-md", "t.md"], "--table-md: only with --scores"),
    (["--quiet"], "--quiet: only with --scores"),
    (["--bootstrap", "-1"], "--bootstrap: must be >= 0"),
    (["--run", "nope"], "no run or combo named 'nope'"),
])
def test_run_folder_argument_errors(tmp_path, setup, capsys, extra, expect):
    prep, run, params = setup
    out = tmp_path / "m"
    rc = main(["evaluate", "--run-dir", str(run), "--out", str(out), "--prepared", str(prep),
               "--params", str(params), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_mode_errors(tmp_path, setup, capsys):
    prep, run, params = setup
    assert main(["evaluate", "--run-dir", str(run), "--prepared", str(prep), "--params", str(params)]) == 2
    assert "--out: required with --run-dir" in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(prep / "full" / "val.csv")]) == 2
    assert "--scores: required (or --run-dir" in capsys.readouterr().err
    assert main(["evaluate", "--scores", str(run / "scores_val.csv"), "--split", "full"]) == 2
    assert "--split: only with --run-dir" in capsys.readouterr().err
    (run / "scores_val.csv").unlink()
    assert main(["evaluate", "--run-dir", str(run), "--out", str(tmp_path / "m"), "--prepared", str(prep),
                 "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "scores_val.csv: missing" in err and len(err.strip().splitlines()) == 1


def test_prepare_params_mode_equals_source_mode(tmp_path, capsys):
    from test_layout import _source

    src = _source(tmp_path / "src")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 2, "profile": "smoke",
                                      "data": {"fractions": [0.25], "check_images": False,
                                               "smoke": {"source": str(src)}}}))
    assert main(["prepare", "--params", str(params), "--out", str(tmp_path / "a")]) == 0
    assert main(["prepare", "--source", str(src), "--out", str(tmp_path / "b"), "--fractions", "0.25",
                 "--seed", "2", "--no-check-images"]) == 0
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert a == b and Path("frac_0.25/train.csv") in a
    # command-line values win over params
    assert main(["prepare", "--params", str(params), "--out", str(tmp_path / "c"), "--fractions"]) == 0
    assert not (tmp_path / "c" / "frac_0.25").exists()
    capsys.readouterr()
    assert main(["prepare", "--source", str(src), "--params", str(params), "--out", str(tmp_path / "d")]) == 2
    assert "--params: not with --source" in capsys.readouterr().err
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"profile": "paper", "data": {"sewerml_root": None}}))
    assert main(["prepare", "--params", str(paper), "--out", str(tmp_path / "e")]) == 2
    assert "sewerml_root" in capsys.readouterr().err and not (tmp_path / "e").exists()
