"""Reliability, fault class "data loss": no command overwrites an input, replaces a folder it did
not create (without --force), or rewrites results from missing inputs.

Every test puts something precious where a careless command line points, runs the command and
checks that it exits 2 with one line naming the path, and that every byte is still there.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.errors import SewerbenchError
from benchmark.io import (OWNER_FILE, check_disjoint_from_inputs, check_not_inside_inputs,
                          check_replaceable_dir, claim_dir, read_owner)

W, H = 32, 24


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _params(tmp_path: Path, out: Path | str) -> Path:
    p = tmp_path / "synth_params.yaml"
    p.write_text(f"seed: 0\nsynth:\n  out: {out}\n  n_train: 4\n  n_val: 2\n  n_test: 2\n"
                 f"  width: {W}\n  height: {H}\n  workers: 1\n  folder_size: 4\n")
    return p


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sewerbench: error: ") and "Traceback" not in err, err
    return err


def _precious(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("three years of work")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "data.bin").write_bytes(os.urandom(64))
    return _snapshot(folder)


# ----------------------------------------------------------------------------- synth
def test_synth_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    target = tmp_path / "mine"
    before = _precious(target)
    rc = main(["synth", "--params", str(_params(tmp_path, target))])
    err = _err_line(capsys)
    assert rc == 2 and str(target) in err and "did not create" in err and "--force" in err
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "synth_params.yaml"]  # no temp left
    # --force replaces it, and a dataset it made is replaced without --force
    assert main(["synth", "--params", str(_params(tmp_path, target)), "--force"]) == 0
    assert not (target / "thesis.tex").exists() and (target / "meta.json").is_file()
    assert main(["synth", "--params", str(_params(tmp_path, target)), "--seed", "1"]) == 0
    assert json.loads((target / "meta.json").read_text())["seed"] == 1


def test_synth_refuses_an_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("do not hide me")
    for extra in ([], ["--force"]):
        rc = main(["synth", "--params", str(_params(tmp_path, target)), *extra])
        err = _err_line(capsys)
        assert rc == 2 and str(target) in err and "is an existing file" in err
        assert target.read_text() == "do not hide me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "synth_params.yaml"]


def test_synth_refuses_an_out_holding_or_inside_an_input(tmp_path, capsys, monkeypatch):
    labels = tmp_path / "labels"
    labels.mkdir()
    repo = Path(__file__).resolve().parents[1] / "data" / "splits"
    for f in repo.glob("SewerML_*_sub_0.0625.csv"):
        (labels / f.name).write_bytes(f.read_bytes())
    before = _snapshot(labels)
    p = _params(tmp_path, tmp_path / "x")
    for out in (labels, labels / "inner", tmp_path):  # is / inside / holds the label source
        rc = main(["synth", "--params", str(p), "--label-source", str(labels), "--out", str(out), "--force"])
        err = _err_line(capsys)
        assert rc == 2 and "label_source" in err, err
    assert _snapshot(labels) == before
    # the working folder (e.g. `--out .` in the project) is never replaced
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc = main(["synth", "--params", str(p), "--out", ".", "--force"])
    assert rc == 2 and "current working folder" in _err_line(capsys)


def test_synth_writes_nothing_when_the_config_is_bad(tmp_path, capsys):
    out = tmp_path / "ds"
    p = _params(tmp_path, out)
    p.write_text(p.read_text() + "  n_trian: 5\n")
    rc = main(["synth", "--params", str(p)])
    assert rc == 2 and "n_trian" in _err_line(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- prepare
@pytest.fixture(scope="module")
def synth_source(tmp_path_factory):
    from benchmark.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("src") / "synthetic"
    generate(SynthConfig.from_dict(dict(out=str(root), n_train=32, n_val=16, n_test=16, width=W,
                                        height=H, workers=1, folder_size=16)), progress=False)
    return root


def test_prepare_refuses_foreign_out_and_out_inside_source(tmp_path, capsys, synth_source):
    src_before = _snapshot(synth_source)
    target = tmp_path / "mine"
    before = _precious(target)
    rc = main(["prepare", "--source", str(synth_source), "--out", str(target)])
    err = _err_line(capsys)
    assert rc == 2 and str(target) in err and "did not create" in err
    assert _snapshot(target) == before
    for out in (synth_source, synth_source / "prepared"):
        rc = main(["prepare", "--source", str(synth_source), "--out", str(out), "--force"])
        err = _err_line(capsys)
        assert rc == 2 and "--source" in err and ("is the input" in err or "lies inside" in err)
    f = tmp_path / "file"
    f.write_text("keep")
    rc = main(["prepare", "--source", str(synth_source), "--out", str(f), "--force"])
    assert rc == 2 and "existing file" in _err_line(capsys) and f.read_text() == "keep"
    assert _snapshot(synth_source) == src_before
    # its own output may be rewritten; --force writes into a foreign folder
    assert main(["prepare", "--source", str(synth_source), "--out", str(tmp_path / "p")]) == 0
    assert main(["prepare", "--source", str(synth_source), "--out", str(tmp_path / "p")]) == 0
    assert main(["prepare", "--source", str(synth_source), "--out", str(target), "--force"]) == 0
    assert (target / "thesis.tex").read_text() == "three years of work"  # written beside, not deleted


# ----------------------------------------------------------------------------- combine
def _scores(path: Path, n: int = 4, binary: bool = False) -> None:
    from benchmark.classes import CLASS_CODES
    cols = ["Defect"] if binary else list(CLASS_CODES)
    rows = [",".join(["Filename", *cols])]
    rows += [",".join([f"{i:08d}.png", *["0.25"] * len(cols)]) for i in range(1, n + 1)]
    path.write_text("\n".join(rows) + "\n")


def test_combine_refuses_out_equal_to_an_input(tmp_path, capsys):
    s1, s2 = tmp_path / "s1.csv", tmp_path / "s2.csv"
    _scores(s1, binary=True)
    _scores(s2)
    before = {p: p.read_bytes() for p in (s1, s2)}
    link = tmp_path / "link.csv"
    link.symlink_to(s2)
    hard = tmp_path / "hard.csv"
    os.link(s1, hard)
    for out in (s1, s2, tmp_path / "." / "s2.csv", link, hard):
        rc = main(["combine", "--stage1", str(s1), "--stage2", str(s2), "--out", str(out)])
        err = _err_line(capsys)
        assert rc == 2 and "would overwrite the input" in err, err
    assert {p: p.read_bytes() for p in (s1, s2)} == before
    assert main(["combine", "--stage1", str(s1), "--stage2", str(s2), "--out", str(tmp_path / "c.csv")]) == 0


# ----------------------------------------------------------------------------- tables / plots
@pytest.mark.parametrize("command", ["tables", "plots"])
def test_tables_and_plots_never_rewrite_results_from_missing_metrics(tmp_path, capsys, command):
    (tmp_path / "params.yaml").write_text("seed: 0\nprofile: smoke\nruns: {}\n")
    out = tmp_path / "results"
    before = _precious(out)
    (tmp_path / "runs").mkdir()
    (tmp_path / "prepared").mkdir()
    base = [command, "--params", str(tmp_path / "params.yaml"), "--runs", str(tmp_path / "runs"),
            "--prepared", str(tmp_path / "prepared"), "--out", str(out)]
    empty = tmp_path / "empty_metrics"
    empty.mkdir()
    (empty / "run_without_files").mkdir()
    for metrics in (tmp_path / "no_metrics", empty):
        rc = main([*base, "--metrics", str(metrics)])
        err = _err_line(capsys)
        assert rc == 2 and str(metrics) in err, err
    assert _snapshot(out) == before


# ----------------------------------------------------------------------------- helpers
def test_ownership_marker_and_guards(tmp_path):
    d = tmp_path / "run"
    assert check_replaceable_dir(d, "train") == d  # missing: fine
    d.mkdir()
    assert check_replaceable_dir(d, "train") == d  # empty: fine
    (d / "x").write_text("1")
    with pytest.raises(SewerbenchError, match="did not create"):
        check_replaceable_dir(d, "train")
    claim_dir(d, "train", run="tiny")
    assert read_owner(d)["command"] == "train" and read_owner(d)["run"] == "tiny"
    assert check_replaceable_dir(d, "train") == d
    with pytest.raises(SewerbenchError, match=r"made by `sewerbench train`"):
        check_replaceable_dir(d, "predict")
    (d / OWNER_FILE).write_text("{not json")
    with pytest.raises(SewerbenchError, match="did not create"):
        check_replaceable_dir(d, "train")
    assert check_replaceable_dir(d, "train", force=True) == d
    with pytest.raises(SewerbenchError, match="is the input"):
        check_not_inside_inputs(tmp_path / "a" / ".." / "run", [("--csv", d)])
    with pytest.raises(SewerbenchError, match="lies inside"):
        check_not_inside_inputs(d / "out.csv", [("--run", d)])
    check_not_inside_inputs(tmp_path / "other", [("--run", d), ("--none", None)])
    with pytest.raises(SewerbenchError, match="holds the input"):
        check_disjoint_from_inputs(tmp_path, [("--run", d)])
