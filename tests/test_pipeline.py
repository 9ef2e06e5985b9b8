"""The DVC pipeline definition, the run matrix of params.yaml, evaluation and combination."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark import published
from benchmark.classes import CLASS_CODES
from benchmark.cli import main
from benchmark.errors import SewerbenchError
from benchmark import matrix
from benchmark.combine import combine_frames
from benchmark.evaluation import evaluate_run
from helpers import gt_frame, scores_frame

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
#: params.yaml with its opt-in Table 5 block uncommented, as the comment there tells a user to do
OPT_IN = re.compile(r"^  # ((?:\w+_stage2_full|twostage_\w+_full):\s+\{.*)$", re.M)
PARAMS_TABLE5 = yaml.safe_load(OPT_IN.sub(r"  \1", (ROOT / "params.yaml").read_text()))


def _lookup(d, dotted):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            raise KeyError(dotted)
        d = d[part]
    return d


def _interpolate(text, key=None, item=None):
    def sub(m):
        expr = m.group(1)
        if expr == "key":
            return key
        if expr.startswith("item."):
            return str(_lookup(item, expr[5:]))
        return str(_lookup(PARAMS, expr))
    # inner ${profile} first, then the outer reference
    for _ in range(2):
        text = re.sub(r"\$\{([^${}]+)\}", sub, text)
    return text


def test_stage_order_and_matrix():
    stages = DVC["stages"]
    assert list(stages) == ["synth", "prepare", "pretrain", "train", "train_seed", "combine", "evaluate",
                            "evaluate_seed", "evaluate_combo", "tables", "plots"]
    assert stages["train"]["foreach"] == "${runs}" and stages["evaluate"]["foreach"] == "${runs}"
    assert stages["combine"]["foreach"] == "${combos}"


def test_every_params_dependency_exists():
    """Each params entry of each stage (for every foreach item) names a key of params.yaml."""
    for name, st in DVC["stages"].items():
        items = [(None, None)]
        if "foreach" in st:   # ${runs} / ${combos}, or a literal mapping (the seed runs)
            coll = st["foreach"] if isinstance(st["foreach"], dict) else _lookup(PARAMS, st["foreach"][2:-1])
            items = list(coll.items())
            st = st["do"]
        for key, item in items:
            for p in st.get("params", []):
                _lookup(PARAMS, _interpolate(p, key, item))  # raises KeyError if missing
            cmds = st["cmd"] if isinstance(st["cmd"], list) else [st["cmd"]]
            for c in cmds:
                _interpolate(c, key, item)


def test_runs_cover_the_matrix():
    from methods.registry import REGISTRY

    runs = matrix.runs(PARAMS)
    for name, spec in runs.items():
        assert spec["method"] in REGISTRY, name
        assert spec["recipe"] in PARAMS["recipes"], name
        assert spec["split"] in ("full", "sub_0.0625"), name
    cells = {(r["split"], r["model"]["mask_attention"], r["model"]["label_correlation"])
             for r in runs.values() if r["method"] == "maq2l"}
    assert cells == {(s, ma, lc) for s in ("full", "sub_0.0625") for ma in (True, False) for lc in (True, False)}
    needed = {"asl_tresnet_l", "resnet101", "kssnet", "tresnet_m", "tresnet_l", "tresnet_xl", "xie2019",
              "chen2018", "hassan2019", "myrans2018", "xie2019_binary", "q2l"}
    assert needed <= {r["method"] for r in runs.values()}
    assert runs["xie2019_binary_full"]["target"] == "binary"
    assert runs["tresnet_l_stage2_full"]["train_on"] == "defect_only"
    bench = matrix.combos(PARAMS)["benchmark_full"]
    assert (bench["stage1"], bench["stage2"], bench["mode"]) == ("xie2019_binary_full", "tresnet_l_stage2_full",
                                                                 "replace")
    known = set(runs) | set(matrix.combos(PARAMS))
    assert published.table3_runs() <= known
    assert {r.run for r in published.TABLE4} <= known
    # Table 5: the Benchmark row by default; uncommenting the opt-in block gives every row
    assert {r.run for r in published.TABLE5} & known == {"benchmark_full"}
    runs5, combos5 = matrix.runs(PARAMS_TABLE5), matrix.combos(PARAMS_TABLE5)
    assert {r.run for r in published.TABLE5} <= set(runs5) | set(combos5)
    assert len(runs5) == len(runs) + 7 and len(combos5) == 8
    for name, c in combos5.items():
        assert c["stage1"] == "xie2019_binary_full" and runs5[c["stage2"]]["train_on"] == "defect_only", name
    ref = PARAMS["tables"]["ablation_reference"]
    assert ref == {"full": "maq2l_full", "sub_0.0625": "maq2l_sub"}


def test_every_run_resolves():
    from benchmark.config import resolve_run

    for name in PARAMS_TABLE5["runs"]:   # the default's runs and the opt-in Table 5 runs
        cfg = resolve_run(PARAMS_TABLE5, name)
        assert cfg.profile == "smoke" and cfg.size == "tiny" and cfg.runtime.device == "cpu"
        assert cfg.runtime.channels_last
    cfg = resolve_run(PARAMS, "maq2l_full", {"profile": "paper"})
    assert cfg.size == "reference" and cfg.image_size == 448 and cfg.runtime.device == "cuda"


def test_data_source_per_profile():
    assert matrix.data_source(PARAMS) == "data/synthetic"
    paper = {**PARAMS, "profile": "paper"}
    assert matrix.data_source(paper) == PARAMS["data"]["sewerml_root"]
    with pytest.raises(SewerbenchError, match="sewerml_root"):
        matrix.data_source({**paper, "data": {**PARAMS["data"], "sewerml_root": None}})
    assert matrix.run_split(PARAMS, "maq2l_sub") == "sub_0.0625"
    assert matrix.run_split(PARAMS, "benchmark_full") == "full"


# ----------------------------------------------------------------------------- evaluate/combine
@pytest.fixture()
def tiny_prepared(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    names = [f"{i:08d}.png" for i in range(1, n + 1)]
    y = (rng.random((n, 17)) < 0.2).astype(int)
    prep = tmp_path / "prepared"
    (prep / "full").mkdir(parents=True)
    (prep / "sub_0.0625").mkdir()
    gt_frame(names, y).to_csv(prep / "full" / "val.csv", index=False)
    gt_frame(names[::4], y[::4]).to_csv(prep / "sub_0.0625" / "val.csv", index=False)
    gt_frame(names, y).to_csv(prep / "full" / "test_gt.csv", index=False)
    s = np.clip(0.7 * y + 0.4 * rng.random(y.shape), 0, 1).round(4)
    return prep, names, y, s


def test_evaluate_run_writes_every_split(tmp_path, tiny_prepared):
    prep, names, y, s = tiny_prepared
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    scores_frame(names, s).to_csv(run / "scores_val.csv", index=False)
    scores_frame(names[::4], s[::4]).to_csv(run / "scores_val_sub.csv", index=False)
    scores_frame(names, s).to_csv(run / "scores_test.csv", index=False)
    out = tmp_path / "metrics" / "r"
    written = evaluate_run(run, out, prep, split="sub_0.0625", n_bootstrap=50, seed=0)
    assert set(written) == {"val", "val_sub", "test"}
    from benchmark.metrics import evaluate
    m = json.loads((out / "val.json").read_text())
    assert m["New"]["F2"] == pytest.approx(evaluate(s, y)["New"]["F2"])
    from benchmark.tables import ci_block
    lo, hi = ci_block(m)["F2_CIW"]
    assert lo <= m["New"]["F2"] <= hi
    ms = json.loads((out / "val_sub.json").read_text())
    assert ms["New"]["F2"] == pytest.approx(evaluate(s[::4], y[::4])["New"]["F2"])
    # a full-split run has no starred evaluation
    assert set(evaluate_run(run, tmp_path / "m2", prep, split="full", n_bootstrap=10)) == {"val", "test"}


def test_evaluate_binary_and_missing(tmp_path, tiny_prepared):
    prep, names, y, s = tiny_prepared
    run = tmp_path / "bin"
    run.mkdir()
    pd.DataFrame({"Filename": names, "Defect": s.max(axis=1)}).to_csv(run / "scores_val.csv", index=False)
    written = evaluate_run(run, tmp_path / "mb", prep, n_bootstrap=10)
    b = json.loads(written["val"].read_text())
    assert written["val"].name == "binary_val.json"
    pred = s.max(axis=1) >= 0.5
    assert b["accuracy"] == pytest.approx(np.mean(pred == (y.max(axis=1) == 1)))
    with pytest.raises(SewerbenchError, match="scores_val.csv: missing"):
        evaluate_run(tmp_path / "nothing", tmp_path / "x", prep)


def test_combine_command(tmp_path, tiny_prepared, capsys):
    _, names, y, s = tiny_prepared
    p1 = np.linspace(0, 1, len(names))
    st1 = pd.DataFrame({"Filename": names[::-1], "Defect": p1[::-1]})  # any row order
    st1.to_csv(tmp_path / "s1.csv", index=False)
    scores_frame(names, s).to_csv(tmp_path / "s2.csv", index=False)
    rc = main(["combine", "--stage1", str(tmp_path / "s1.csv"), "--stage2", str(tmp_path / "s2.csv"),
               "--mode", "replace", "--out", str(tmp_path / "c.csv")])
    assert rc == 0
    c = pd.read_csv(tmp_path / "c.csv")
    assert list(c.columns) == ["Filename", *CLASS_CODES] and list(c["Filename"]) == names
    low = p1 < 0.5
    assert np.allclose(c[list(CLASS_CODES)].to_numpy()[low], p1[low, None].repeat(17, 1), atol=1e-6)
    assert np.allclose(c[list(CLASS_CODES)].to_numpy()[~low], s[~low], atol=1e-6)
    mult = combine_frames(st1, scores_frame(names, s), "multiply")
    assert np.allclose(mult[list(CLASS_CODES)].to_numpy(), p1[:, None] * s)
    # mismatched filenames: one-line error, exit 2, nothing written
    st1.iloc[:-1].to_csv(tmp_path / "bad.csv", index=False)
    rc = main(["combine", "--stage1", str(tmp_path / "bad.csv"), "--stage2", str(tmp_path / "s2.csv"),
               "--out", str(tmp_path / "d.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "filenames differ" in err and not (tmp_path / "d.csv").exists()


def test_tables_command_end_to_end(tmp_path, tiny_prepared):
    """Metrics folder + run scores -> results tables (ablation with paired p-values)."""
    prep, names, y, s = tiny_prepared
    rng = np.random.default_rng(1)
    runs_dir, mdir = tmp_path / "runs", tmp_path / "metrics"
    params = {"seed": 0, "profile": "smoke", "tables": {"bootstrap": 50, "ablation_reference": {"full": "maq2l_full"}},
              "runs": {"maq2l_full": {"method": "maq2l", "split": "full"},
                       "maq2l_none_full": {"method": "maq2l", "split": "full",
                                           "model": {"mask_attention": False, "label_correlation": False}}}}
    for i, run in enumerate(params["runs"]):
        d = runs_dir / run
        d.mkdir(parents=True)
        sc = np.clip(s + (0.2 * i) * rng.normal(size=s.shape), 0, 1)
        scores_frame(names, sc).to_csv(d / "scores_val.csv", index=False)
        evaluate_run(d, mdir / run, prep, n_bootstrap=50)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rc = main(["tables", "--params", str(tmp_path / "params.yaml"), "--metrics", str(mdir), "--runs",
               str(runs_dir), "--prepared", str(prep), "--out", str(tmp_path / "results")])
    assert rc == 0
    abl = pd.read_csv(tmp_path / "results" / "ablation.csv").set_index("run")
    assert (tmp_path / "results" / "table3.md").read_text().count("SYNTHETIC") == 1
    paired = json.loads((tmp_path / "results" / "ablation_paired.json").read_text())
    assert set(paired) == {"maq2l_none_full"}
    # values: an independent paired bootstrap (tables.bootstrap 50, seed 0) of the cell (b)
    # minus the reference cell (a) on the full val set, rows sorted by Filename
    import indep_stats as I

    def read(run):
        df = pd.read_csv(runs_dir / run / "scores_val.csv", dtype={"Filename": str}).sort_values("Filename")
        return df[list(CLASS_CODES)].to_numpy()

    order = np.argsort(np.array(names))
    ref, cell, yy = read("maq2l_full"), read("maq2l_none_full"), y[order]
    mine = I.paired(ref, cell, yy, 50, 0)
    got = paired["maq2l_none_full"]["metrics"]
    for name, short in (("F2_CIW", "f2"), ("F1_Normal", "f1")):
        e = mine[name]
        for k in ("a", "b", "delta", "p_value"):
            assert got[name][k] == pytest.approx(e[k], abs=1e-12), (name, k)
        assert got[name]["ci"] == pytest.approx(e["ci"], abs=1e-12)
        assert abl.loc["maq2l_none_full", f"delta_{short}"] == pytest.approx(100 * e["delta"], abs=5.1e-5)
        assert abl.loc["maq2l_none_full", f"p_{short}"] == pytest.approx(e["p_value"], abs=5.1e-5)
        assert pd.isna(abl.loc["maq2l_full", f"p_{short}"])      # the reference is not tested
    assert mine["F2_CIW"]["delta"] < 0                          # the noisier cell is worse
    # the cells' own CIs (evaluate --bootstrap 50, seed 0) are percentile intervals
    for run, sc in (("maq2l_full", ref), ("maq2l_none_full", cell)):
        reps = I.replicates(sc, yy, 50, 0)
        for key, short in (("F2_CIW", "f2"), ("F1_Normal", "f1")):
            lo, hi = np.quantile(reps[key], [0.025, 0.975])
            assert abl.loc[run, f"val_{short}_lo"] == pytest.approx(100 * lo, abs=5.1e-5)
            assert abl.loc[run, f"val_{short}_hi"] == pytest.approx(100 * hi, abs=5.1e-5)
            assert abl.loc[run, f"val_{short}"] == pytest.approx(100 * I.headline(sc, yy)[key], abs=5.1e-5)
