"""Result tables: Table 3 beside the paper, per-class, ablation, Sewer-ML Tables 4/5."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark import published, tables
from benchmark.bootstrap import paired_bootstrap
from benchmark.classes import CIW, CLASS_CODES
from benchmark.metrics import evaluate


def _data(seed: int, n: int = 120, strength: float = 2.0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 17)) < 0.15).astype(int)
    s = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1.5, y.shape) - 1)))
    return s, y


def _metrics(seed: int, ci=(0.1, 0.3)):
    s, y = _data(seed)
    m = evaluate(s, y)
    m["Bootstrap"] = {"F2_CIW": list(ci), "F1_Normal": [0.5, 0.7]}
    return m


def test_published_numbers_are_the_papers():
    rows = {r.key: r for r in published.TABLE3}
    assert len(published.TABLE3) == 11
    assert (rows["maq2l_full"].val_f1, rows["maq2l_full"].val_f2, rows["maq2l_full"].test_f1,
            rows["maq2l_full"].test_f2) == (92.58, 73.15, 92.10, 71.98)
    assert (rows["q2l_sub_star"].val_f1, rows["q2l_sub_star"].val_f2) == (89.41, 63.40)
    assert rows["q2l_sub_star"].starred and rows["q2l_sub_star"].val_split == "val_sub"
    assert rows["sewerml_benchmark"].test_f2 == 55.11
    for key in ("cafen", "ct_gat", "mshvit", "spm"):
        assert rows[key].run is None and rows[key].reason.startswith("not re-run")
    assert rows["ct_gat"].test_f1 == 91.61 and rows["mshvit"].test_f2 == 60.11
    t4 = {r.model: r for r in published.TABLE4}
    assert (t4["Chen2018"].val_f2, t4["Chen2018"].val_f1, t4["Chen2018"].test_f2,
            t4["Chen2018"].test_f1) == (42.03, 3.96, 41.74, 3.59)
    t5 = {r.model: r for r in published.TABLE5}
    assert t5["TResNet-L (Benchmark)"].run == "benchmark_full"
    assert t5["TResNet-XL"].val_f1 == 91.37
    assert list(published.BENCHMARK_TEST_F2_CLASS)[-1] == "Normal"
    assert published.BENCHMARK_TEST_F2_CLASS["RB"] == 43.35
    assert published.BENCHMARK_TEST_F2_CLASS["Normal"] == 90.35
    assert published.BENCHMARK_CLASSIC_VAL["mAP"] == 79.79


def test_table3_ours_beside_published():
    metrics = {"maq2l_full": {"val": _metrics(0), "test": _metrics(1)},
               "q2l_sub": {"val": _metrics(2), "val_sub": _metrics(3, ci=(0.2, 0.4))}}
    num, disp = tables.table3(metrics)
    assert len(num) == len(published.TABLE3) == len(disp)
    r = num.set_index("key")
    m = metrics["maq2l_full"]["val"]
    assert r.loc["maq2l_full", "val_f2_ours"] == pytest.approx(100 * m["New"]["F2"])
    assert r.loc["maq2l_full", "val_f1_ours"] == pytest.approx(100 * m["New"]["F1_Normal"])
    assert r.loc["maq2l_full", "val_f2_ours_lo"] == pytest.approx(10.0)
    assert r.loc["maq2l_full", "test_f2_ours"] == pytest.approx(100 * metrics["maq2l_full"]["test"]["New"]["F2"])
    assert r.loc["maq2l_full", "val_f2_paper"] == 73.15
    # starred row reads the subset val set, unstarred the full val set
    assert r.loc["q2l_sub_star", "val_f2_ours"] == pytest.approx(100 * metrics["q2l_sub"]["val_sub"]["New"]["F2"])
    assert r.loc["q2l_sub", "val_f2_ours"] == pytest.approx(100 * metrics["q2l_sub"]["val"]["New"]["F2"])
    assert r.loc["q2l_sub_star", "val_f2_ours_hi"] == pytest.approx(40.0)
    # rows not re-run keep the published numbers and say why
    assert r.loc["cafen", "val_f2_paper"] == 57.76 and pd.isna(r.loc["cafen", "val_f2_ours"])
    assert "no public code" in r.loc["cafen", "note"]
    assert "no `val` metrics" in r.loc["sewerml_benchmark", "note"]
    d = disp.iloc[list(num["key"]).index("maq2l_full")]
    assert d["Model"] == "Ours (MA-Q2L)" and d["Training data"] == "1"
    assert d["val F2 (ours, 95% CI)"] == f"{100 * m['New']['F2']:.2f} [10.00, 30.00]"
    assert d["val F2 (paper)"] == "73.15"


def test_write_all_states_data_and_profile(tmp_path):
    metrics = {"maq2l_full": {"val": _metrics(0)}, "benchmark_full": {"val": _metrics(1), "test": _metrics(2)}}
    runs = {"maq2l_full": {"method": "maq2l", "split": "full"},
            "maq2l_none_full": {"method": "maq2l", "split": "full",
                                "model": {"mask_attention": False, "label_correlation": False}}}
    written = tables.write_all(metrics, tmp_path, profile="smoke", source="synthetic", runs=runs,
                               reference={"full": "maq2l_full"})
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    for stem in ("table3", "sewerml_table4", "sewerml_table5", "benchmark_metrics", "ablation"):
        assert {f"{stem}.md", f"{stem}.csv", f"{stem}.tex"} <= names
    assert "per_class/maq2l_full_val.md" in names and "per_class/benchmark_full_test.csv" in names
    md = (tmp_path / "table3.md").read_text()
    assert "SYNTHETIC" in md and "`smoke`" in md and "not a reproduction" in md
    assert md.count("\n| ") == len(published.TABLE3) + 1  # header + one line per row
    tex = (tmp_path / "table3.tex").read_text()
    assert "\\begin{tabular}" in tex and "% Data: SYNTHETIC" in tex
    assert "CT-GAT" in tex
    csv = pd.read_csv(tmp_path / "table3.csv")
    assert list(csv["key"]) == [r.key for r in published.TABLE3]
    real = tables.data_description("paper", "Sewer-ML at /data")
    assert "real Sewer-ML" in real and "SYNTHETIC" not in real


def test_per_class_table_values():
    m = _metrics(5)
    num, disp = tables.per_class_table(m)
    assert list(num["class"]) == list(CLASS_CODES) + ["Normal"]
    assert num["CIW"].iloc[0] == 1.0 and num["CIW"].iloc[14] == pytest.approx(CIW[14])
    assert pd.isna(num["CIW"].iloc[17]) and pd.isna(num["AP"].iloc[17])
    for i in (0, 7, 17):
        assert num["P"].iloc[i] == pytest.approx(100 * m["Auxillary"]["P_class"][i])
        assert num["F2"].iloc[i] == pytest.approx(100 * m["New"]["F2_class"][i])
    assert num["AP"].iloc[3] == pytest.approx(100 * m["Auxillary"]["AP"][3])
    assert len(disp) == 19  # 18 classes + the summary line
    assert disp.iloc[-1]["F2"] == f"{100 * m['New']['F2']:.2f}"


def test_ablation_table_paired_pvalues():
    s_ref, y = _data(0, n=150, strength=2.5)
    rng = np.random.default_rng(1)
    s_bad = np.clip(s_ref + rng.normal(0, 0.3, s_ref.shape), 0, 1)
    runs = {"maq2l_full": {"method": "maq2l", "split": "full"},
            "maq2l_none_full": {"method": "maq2l", "split": "full",
                                "model": {"mask_attention": False, "label_correlation": False}},
            "maq2l_ma_sub": {"method": "maq2l", "split": "sub_0.0625",
                             "model": {"mask_attention": True, "label_correlation": False}},
            "q2l_full": {"method": "q2l", "split": "full"}}
    cells = tables.ablation_cells(runs)
    assert [c["run"] for c in cells] == ["maq2l_full", "maq2l_none_full", "maq2l_ma_sub"]
    metrics = {"maq2l_full": {"val": evaluate(s_ref, y)}, "maq2l_none_full": {"val": evaluate(s_bad, y)}}
    paired = {"maq2l_none_full": paired_bootstrap(s_ref, s_bad, y, n=200, seed=0)}
    num, disp = tables.ablation_table(cells, metrics, paired, {"full": "maq2l_full"})
    r = num.set_index("run")
    # delta (cell minus reference, in %) and p-values equal a paired bootstrap written in the test
    import indep_stats as I

    mine = I.paired(s_ref, s_bad, y, 200, 0)
    for name, short in (("F2_CIW", "f2"), ("F1_Normal", "f1")):
        e = mine[name]
        assert r.loc["maq2l_none_full", f"delta_{short}"] == pytest.approx(100 * e["delta"], abs=1e-9)
        assert r.loc["maq2l_none_full", f"p_{short}"] == pytest.approx(e["p_value"], abs=1e-12)
        got = paired["maq2l_none_full"]["metrics"][name]
        assert got["ci"] == pytest.approx(e["ci"], abs=1e-12)
    assert mine["F2_CIW"]["delta"] < 0 and mine["F2_CIW"]["p_value"] < 0.05   # the noisy cell is worse
    d = disp.set_index(disp["Run"].str.replace(" (reference)", "", regex=False))
    assert d.loc["maq2l_none_full", "dF2 vs ref"] == f"{100 * mine['F2_CIW']['delta']:.2f}"
    assert d.loc["maq2l_none_full", "p (F2)"] == f"{mine['F2_CIW']['p_value']:.3f}"
    assert d.loc["maq2l_none_full", "dF1 vs ref"] == f"{100 * mine['F1_Normal']['delta']:.2f}"
    assert bool(r.loc["maq2l_full", "reference"]) and pd.isna(r.loc["maq2l_full", "p_f2"])
    assert pd.isna(r.loc["maq2l_ma_sub", "val_f2"])  # not evaluated yet: empty, no crash
    assert list(disp["MA"]) == ["yes", "no", "yes"] and list(disp["LC"]) == ["yes", "no", "no"]
    assert disp.iloc[0]["Run"].endswith("(reference)")


def test_sewerml_tables_and_classic_metrics():
    metrics = {"xie2019_full": {"val": _metrics(0)}}
    num, disp = tables.sewerml_table(published.TABLE4, metrics)
    r = num.set_index("model")
    assert r.loc["Xie2019", "val_f2_paper"] == 48.57 and r.loc["Xie2019", "test_f1_paper"] == 90.62
    assert r.loc["Xie2019", "val_f2_ours"] == pytest.approx(100 * metrics["xie2019_full"]["val"]["New"]["F2"])
    assert pd.isna(r.loc["KSSNet", "val_f2_ours"])
    num5, _ = tables.sewerml_table(published.TABLE5, {})
    assert num5.set_index("model").loc["KSSNet", "note"] == "run `twostage_kssnet_full` has no metrics yet"
    # a row outside the configured matrix (the default's opt-in Table 5 rows) says so
    opt, _ = tables.sewerml_table(published.TABLE5, {}, configured=["benchmark_full"])
    opt = opt.set_index("model")
    assert opt.loc["KSSNet", "note"] == ("run `twostage_kssnet_full` is not in this matrix "
                                         "(opt-in: params.yaml runs/combos)")
    assert opt.loc["TResNet-L (Benchmark)", "note"] == "run `benchmark_full` has no metrics yet"
    m = _metrics(1)
    c, _ = tables.benchmark_classic_table(m, None)
    cr = c.set_index("metric")
    assert cr.loc["val mAP", "paper"] == 79.79
    assert cr.loc["val mAP", "ours"] == pytest.approx(100 * m["Main"]["mAP"])
    assert cr.loc["test F2 OK", "paper"] == 82.72 and pd.isna(cr.loc["test F2 OK", "ours"])
    assert len(c) == 7 + 18


def test_formatting_helpers():
    assert tables.fmt(None) == "" and tables.fmt(float("nan")) == "" and tables.fmt(1.234) == "1.23"
    assert tables.fmt_ci(50, 40, 60) == "50.00 [40.00, 60.00]" and tables.fmt_ci(50) == "50.00"
    df = pd.DataFrame({"a|b": ["x|y", None], "c": [1, math.nan]})
    md = tables.to_markdown(df)
    assert md.splitlines()[0] == "| a|b | c |"
    assert "x\\|y" in md and md.splitlines()[3] == "|  |  |"
    assert tables.tex_escape("a_b & 50%") == r"a\_b \& 50\%"


def test_load_metrics_layout(tmp_path):
    import json
    m = _metrics(0)
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "val.json").write_text(json.dumps(m))
    (tmp_path / "r1" / "binary_val.json").write_text("{}")
    (tmp_path / "r1" / "val_sub.json").write_text(json.dumps(m))
    loaded = tables.load_metrics(tmp_path)
    assert set(loaded) == {"r1"} and set(loaded["r1"]) == {"val", "val_sub"}
    h = tables.headline(loaded["r1"]["val"])
    assert h["F2_lo"] == pytest.approx(10) and h["F1_hi"] == pytest.approx(70)
    assert tables.load_metrics(tmp_path / "missing") == {}
