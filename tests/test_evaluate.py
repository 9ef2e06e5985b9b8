"""``sewerbench evaluate`` / ``compare`` and the scores/ground-truth readers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import metrics as M
from benchmark.classes import CLASS_CODES, CSV_COLUMNS
from benchmark.cli import main
from benchmark.errors import SewerbenchError
from benchmark.scores import (align, load_aligned, read_ground_truth_csv, read_scores_csv,
                              write_scores_csv)

DATA = Path(__file__).parent / "data"
OFFICIAL_KEYS = ["Labels", "LabelWeights", "New", "Main", "Auxillary"]


def _make(tmp_path: Path, n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 17)) < 0.15).astype(int)
    t[rng.random(n) < 0.3] = 0
    s = np.clip(0.5 * t + rng.random((n, 17)) * 0.6, 0, 1).round(2)
    names = [f"{i:08d}.png" for i in rng.choice(10**6, n, replace=False)]
    gt = pd.DataFrame(t, columns=list(CLASS_CODES))
    gt.insert(0, "Filename", names)
    gt.insert(1, "WaterLevel", 5)
    gt.insert(2, "VA", 0)
    gt["ND"] = (t.sum(1) == 0).astype(int)
    gt["Defect"] = (t.sum(1) > 0).astype(int)
    gt = gt[list(CSV_COLUMNS)]
    gt.to_csv(tmp_path / "gt.csv", index=False)
    write_scores_csv(tmp_path / "scores.csv", names, s)
    return names, s, t


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _outputs(tmp_path):
    return [tmp_path / "out" / "m.json", tmp_path / "out" / "t.md", tmp_path / "out" / "t.tex"]


def _eval_argv(tmp_path, scores="scores.csv", gt="gt.csv", extra=()):
    o = _outputs(tmp_path)
    return ["evaluate", "--scores", str(tmp_path / scores), "--gt", str(tmp_path / gt),
            "--out", str(o[0]), "--table-md", str(o[1]), "--table-tex", str(o[2]), *extra]


# ----------------------------------------------------------------------------- happy path
def test_evaluate_writes_official_json_and_tables(tmp_path, capsys):
    names, s, t = _make(tmp_path)
    rc, out, err = _run(_eval_argv(tmp_path), capsys)
    assert rc == 0, err
    m_json, md, tex = _outputs(tmp_path)
    got = json.loads(m_json.read_text())
    assert list(got) == OFFICIAL_KEYS  # no extra key without --bootstrap
    order = np.argsort(names)
    expected = M.evaluate(s[order], t[order])
    assert json.dumps(got) == json.dumps(expected)
    assert "F2-CIW" in out and "F1-Normal" in out and "| RB |" in out
    assert md.read_text() == out
    assert r"\begin{tabular}" in tex.read_text()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_rows_matched_by_filename_in_any_order(tmp_path, capsys):
    names, s, t = _make(tmp_path)
    perm = np.random.default_rng(1).permutation(len(names))
    write_scores_csv(tmp_path / "shuffled.csv", [names[i] for i in perm], s[perm])
    df = pd.read_csv(tmp_path / "shuffled.csv")
    df[["Filename"] + list(CLASS_CODES[::-1])].to_csv(tmp_path / "reordered.csv", index=False)
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    c = tmp_path / "c.json"
    assert main(["evaluate", "--scores", str(tmp_path / "scores.csv"), "--gt", str(tmp_path / "gt.csv"), "--out", str(a), "--quiet"]) == 0
    assert main(["evaluate", "--scores", str(tmp_path / "shuffled.csv"), "--gt", str(tmp_path / "gt.csv"), "--out", str(b), "--quiet"]) == 0
    assert main(["evaluate", "--scores", str(tmp_path / "reordered.csv"), "--gt", str(tmp_path / "gt.csv"), "--out", str(c), "--quiet"]) == 0
    assert a.read_text() == b.read_text() == c.read_text()


def test_bootstrap_adds_only_an_extra_key(tmp_path, capsys):
    _make(tmp_path)
    rc, out, _ = _run(_eval_argv(tmp_path, extra=["--bootstrap", "50", "--seed", "3"]), capsys)
    assert rc == 0
    got = json.loads(_outputs(tmp_path)[0].read_text())
    assert list(got) == OFFICIAL_KEYS + ["Bootstrap"]
    boot = got["Bootstrap"]
    assert boot["n"] == 50 and boot["seed"] == 3 and boot["confidence"] == 0.95
    lo, hi = boot["F2_CIW"]
    assert lo <= got["New"]["F2"] <= hi
    assert "95% CI" in out


def test_regression_fixture_through_the_cli(tmp_path, capsys):
    out_json = tmp_path / "m.json"
    rc, _, err = _run(["evaluate", "--scores", str(DATA / "metrics_regression_scores.csv"),
                       "--gt", str(DATA / "metrics_regression_gt.csv"), "--out", str(out_json)],
                      capsys)
    assert rc == 0, err
    text = out_json.read_text()
    assert "NaN" in text  # nan written like the official json.dump
    expected = json.loads((DATA / "metrics_regression_expected.json").read_text())
    assert json.dumps(json.loads(text)) == json.dumps(expected)


def test_ground_truth_with_only_class_columns(tmp_path):
    names, s, t = _make(tmp_path)
    gt = pd.read_csv(tmp_path / "gt.csv")[["Filename", *CLASS_CODES]]
    gt.to_csv(tmp_path / "gt_small.csv", index=False)
    a = load_aligned(tmp_path / "scores.csv", tmp_path / "gt_small.csv")
    assert a.scores.shape == (len(names), 17) and a.targets.dtype == np.int64


def test_write_scores_csv_round_trip(tmp_path):
    probs = np.random.default_rng(0).random((5, 17)).astype(np.float32)
    write_scores_csv(tmp_path / "p.csv", [f"{i}.png" for i in range(5)], probs)
    probs[0, :3] = [0.5, np.nextafter(np.float32(0.5), np.float32(0)), 0.0]
    write_scores_csv(tmp_path / "p.csv", [f"{i}.png" for i in range(5)], probs)
    df = read_scores_csv(tmp_path / "p.csv")
    assert list(df.columns) == ["Filename", *CLASS_CODES]
    back = df[list(CLASS_CODES)].to_numpy()
    assert np.array_equal(back.astype(np.float32), probs)  # shortest float32 text
    assert np.array_equal(back >= 0.5, probs >= 0.5)
    p64 = np.random.default_rng(1).random((3, 17))
    write_scores_csv(tmp_path / "p64.csv", ["a", "b", "c"], p64)
    assert np.array_equal(read_scores_csv(tmp_path / "p64.csv")[list(CLASS_CODES)].to_numpy(), p64)
    with pytest.raises(SewerbenchError, match="q.csv"):
        write_scores_csv(tmp_path / "q.csv", ["a", "b"], np.full((2, 17), 1.5))
    with pytest.raises(SewerbenchError, match="duplicate"):
        write_scores_csv(tmp_path / "q.csv", ["a", "a"], np.full((2, 17), 0.5))
    with pytest.raises(ValueError):
        write_scores_csv(tmp_path / "q.csv", ["a"], np.full((2, 17), 0.5))
    assert not (tmp_path / "q.csv").exists()


def test_compare_command(tmp_path, capsys):
    """`compare` = a paired bootstrap of b - a on the rows matched by Filename; its delta, CI
    and p-value equal tests/indep_stats.py's paired bootstrap on the sorted rows."""
    import indep_stats as I

    names, s, t = _make(tmp_path)
    sb = np.clip(s + 0.1, 0, 1)
    write_scores_csv(tmp_path / "b.csv", names[::-1], sb[::-1])
    out_json = tmp_path / "cmp.json"
    rc, out, err = _run(["compare", "--a", str(tmp_path / "scores.csv"), "--b", str(tmp_path / "b.csv"),
                         "--gt", str(tmp_path / "gt.csv"), "--out", str(out_json),
                         "--bootstrap", "150", "--seed", "4"], capsys)
    assert rc == 0, err
    res = json.loads(out_json.read_text())
    assert res["n_resamples"] == 150 and res["seed"] == 4
    assert set(res["metrics"]) == {"F2_CIW", "F1_Normal"}
    order = np.argsort(np.array(names))                # rows are matched and sorted by Filename
    mine = I.paired(s[order], sb[order], t[order], 150, 4)
    for name, m in res["metrics"].items():
        e = mine[name]
        assert set(m) == {"a", "b", "delta", "ci", "p_value"}
        assert m["a"] == pytest.approx(e["a"], abs=1e-12) and m["b"] == pytest.approx(e["b"], abs=1e-12)
        assert m["delta"] == pytest.approx(e["delta"], abs=1e-12)
        assert m["ci"] == pytest.approx(e["ci"], abs=1e-12)
        assert m["p_value"] == pytest.approx(e["p_value"], abs=1e-12)
        label = name.replace("_", "-")
        lo, hi = e["ci"]
        assert (f"| {label} | {100 * e['a']:.2f} | {100 * e['b']:.2f} | {100 * e['delta']:.2f} | "
                f"[{100 * lo:.2f}, {100 * hi:.2f}] | {e['p_value']:.4f} |") in out
    assert mine["F2_CIW"]["delta"] != 0 and mine["F2_CIW"]["p_value"] < 1


# ----------------------------------------------------------------------------- errors
def _rewrite(path: Path, fn):
    df = pd.read_csv(path, dtype={"Filename": str}, keep_default_na=False)
    df = fn(df)
    df.to_csv(path, index=False)


def _set(col, row, value):
    def f(df):
        df[col] = df[col].astype(object)
        df.loc[row, col] = value
        return df
    return f


ERROR_CASES = {
    # name: (which file is broken, mutation(tmp_path), text expected in the message)
    "scores_missing": ("scores", lambda p: (p / "scores.csv").unlink(), "not found"),
    "gt_missing": ("gt", lambda p: (p / "gt.csv").unlink(), "not found"),
    "scores_is_dir": ("scores", lambda p: ((p / "scores.csv").unlink(), (p / "scores.csv").mkdir()), "directory"),
    "scores_empty": ("scores", lambda p: (p / "scores.csv").write_text(""), "empty"),
    "scores_header_only": ("scores", lambda p: (p / "scores.csv").write_text(",".join(["Filename", *CLASS_CODES]) + "\n"), "no data rows"),
    "scores_binary": ("scores", lambda p: (p / "scores.csv").write_bytes(b"\xff\xfe\x00\x01garbage\x00\n\x80\x81"), "unreadable"),
    "scores_missing_column": ("scores", lambda p: _rewrite(p / "scores.csv", lambda d: d.drop(columns=["OK"])), "missing column"),
    "scores_extra_column": ("scores", lambda p: _rewrite(p / "scores.csv", lambda d: d.assign(Defect=0.5)), "unexpected column"),
    "scores_duplicate_column": ("scores", lambda p: (p / "scores.csv").write_text(
        (p / "scores.csv").read_text().replace(",OK\n", ",RB\n", 1)), "duplicate column"),
    "scores_duplicate_filename": ("scores", lambda p: _rewrite(p / "scores.csv", lambda d: pd.concat([d, d.iloc[:2]])), "duplicate Filename"),
    "gt_duplicate_filename": ("gt", lambda p: _rewrite(p / "gt.csv", lambda d: pd.concat([d, d.iloc[:1]])), "duplicate Filename"),
    "scores_missing_rows": ("scores", lambda p: _rewrite(p / "scores.csv", lambda d: d.iloc[3:]), "no scores for 3"),
    "scores_extra_rows": ("scores", lambda p: _rewrite(p / "scores.csv", lambda d: pd.concat([d, d.iloc[:2].assign(Filename=["x1.png", "x2.png"])])), "2 Filename(s) not in"),
    "scores_nan": ("scores", lambda p: _rewrite(p / "scores.csv", _set("RB", 4, "nan")), "NaN"),
    "scores_empty_cell": ("scores", lambda p: _rewrite(p / "scores.csv", _set("FS", 2, "")), "NaN"),
    "scores_above_one": ("scores", lambda p: _rewrite(p / "scores.csv", _set("OB", 0, 1.2)), "outside [0, 1]"),
    "scores_negative": ("scores", lambda p: _rewrite(p / "scores.csv", _set("OB", 1, -0.1)), "outside [0, 1]"),
    "scores_inf": ("scores", lambda p: _rewrite(p / "scores.csv", _set("OB", 1, "inf")), "outside [0, 1]"),
    "scores_text": ("scores", lambda p: _rewrite(p / "scores.csv", _set("PF", 3, "abc")), "not a number"),
    "scores_empty_filename": ("scores", lambda p: _rewrite(p / "scores.csv", _set("Filename", 3, "")), "empty Filename"),
    "scores_ragged_row": ("scores", lambda p: (p / "scores.csv").write_text(
        (p / "scores.csv").read_text() + "extra.png," + ",".join(["0.1"] * 19) + "\n"), "unreadable"),
    "gt_label_two": ("gt", lambda p: _rewrite(p / "gt.csv", _set("RB", 0, 2)), "not 0 or 1"),
    "gt_label_minus_one": ("gt", lambda p: _rewrite(p / "gt.csv", _set("RB", 0, -1)), "not 0 or 1"),
    "gt_label_text": ("gt", lambda p: _rewrite(p / "gt.csv", _set("IS", 5, "yes")), "not a number"),
    "gt_label_missing": ("gt", lambda p: _rewrite(p / "gt.csv", _set("IS", 5, "")), "missing label"),
    "gt_missing_column": ("gt", lambda p: _rewrite(p / "gt.csv", lambda d: d.drop(columns=["PB"])), "missing column"),
}


def _assert_clean_failure(rc, err, fname, text, tmp_path):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sewerbench: error: ")
    assert fname in lines[0] and text in lines[0], lines[0]
    assert "Traceback" not in err
    for p in _outputs(tmp_path):
        assert not p.exists()
    out_dir = tmp_path / "out"
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_evaluate_errors_are_one_line_and_write_nothing(case, tmp_path, capsys):
    which, mutate, text = ERROR_CASES[case]
    _make(tmp_path)
    mutate(tmp_path)
    rc, out, err = _run(_eval_argv(tmp_path), capsys)
    _assert_clean_failure(rc, err, f"{which}.csv", text, tmp_path)


@pytest.mark.parametrize("case", ["out_is_dir", "out_is_input", "same_outputs", "negative_bootstrap"])
def test_evaluate_bad_arguments(case, tmp_path, capsys):
    _make(tmp_path)
    o = _outputs(tmp_path)
    argv = _eval_argv(tmp_path)
    if case == "out_is_dir":
        o[0].mkdir(parents=True)
        expect = "m.json"
    elif case == "out_is_input":
        argv[argv.index("--out") + 1] = str(tmp_path / "scores.csv")
        expect = "scores.csv"
    elif case == "same_outputs":
        argv[argv.index("--table-md") + 1] = str(o[2])
        expect = "t.tex"
    else:
        argv += ["--bootstrap", "-5"]
        expect = "--bootstrap"
    before = (tmp_path / "scores.csv").read_bytes()
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expect in err
    assert (tmp_path / "scores.csv").read_bytes() == before
    assert not o[1].exists() and not o[2].exists()
    if case != "out_is_dir":
        assert not o[0].exists()


def test_compare_error_names_the_file(tmp_path, capsys):
    names, s, _ = _make(tmp_path)
    write_scores_csv(tmp_path / "b.csv", names[:-2], s[:-2])
    out_json = tmp_path / "cmp.json"
    rc, _, err = _run(["compare", "--a", str(tmp_path / "scores.csv"), "--b", str(tmp_path / "b.csv"),
                       "--gt", str(tmp_path / "gt.csv"), "--out", str(out_json)], capsys)
    assert rc == 2 and "b.csv" in err and "no scores for 2" in err
    assert len(err.strip().splitlines()) == 1 and not out_json.exists()


def test_reader_api(tmp_path):
    names, s, t = _make(tmp_path)
    sc = read_scores_csv(tmp_path / "scores.csv")
    gt = read_ground_truth_csv(tmp_path / "gt.csv")
    fn, scores, targets = align(sc, gt, "s", "g")
    assert list(fn) == sorted(names)
    order = np.argsort(names)
    assert np.array_equal(scores, s[order]) and np.array_equal(targets, t[order])
    with pytest.raises(SewerbenchError, match="s: no scores for 1"):
        align(sc.iloc[1:], gt, "s", "g")


def test_console_entry_point_has_no_traceback(tmp_path):
    _make(tmp_path)
    (tmp_path / "scores.csv").write_text("Filename,RB\nx.png,0.3\n")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "evaluate", "--scores",
                           str(tmp_path / "scores.csv"), "--gt", str(tmp_path / "gt.csv"),
                           "--out", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "scores.csv" in proc.stderr and not (tmp_path / "m.json").exists()


def test_report_tables_format():
    from benchmark import report

    s = np.zeros((4, 17))
    t = np.zeros((4, 17), dtype=int)
    s[0, 0], t[0, 0], t[1, 1] = 0.9, 1, 1
    m = M.evaluate(s, t)
    md = report.markdown_table(m, {"F2_CIW": (0.1, 0.2), "F1_Normal": (0.5, 0.6)}, title="x")
    assert "| F2-CIW | " in md and "[10.00, 20.00]" in md and "[50.00, 60.00]" in md
    assert "| RB | Cracks, breaks and collapses | 1.0000 | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 | 1 |" in md
    assert "n/a" in md  # R of classes without positives is nan
    assert md.count("\n| Normal |") == 1
    tex = report.latex_table(m, {"F2_CIW": (0.1, 0.2), "F1_Normal": (0.5, 0.6)})
    assert r"95\% CI" in tex and "--" in tex and tex.count(r"\begin{tabular}") == 3
    assert report.pct(0.123456) == "12.35" and report.pct(float("nan")) == "n/a"
