"""`seeds:` runs: expansion and naming, refused values and collisions, dvc.yaml stages, the
seed mean ± sd of the tables, and the two-level (images x seeds) paired bootstrap."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import indep_stats as I
from benchmark import artifacts as A
from benchmark import bootstrap as B
from benchmark import matrix, published, tables
from benchmark.cli import main
from benchmark.config import load_params, resolve_run
from benchmark.dvcgen import render_dvc_yaml, seed_items
from benchmark.errors import SewerbenchError
from helpers import gt_frame, scores_frame

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
CELLS_FULL = ("maq2l_full", "maq2l_ma_full", "maq2l_lc_full", "maq2l_none_full")


def _params(**runs):
    p = copy.deepcopy(PARAMS)
    for name, spec in runs.items():
        if spec is None:
            p["runs"].pop(name, None)
        else:
            p["runs"][name] = spec
    return p


def _no_seeds(p):
    p = copy.deepcopy(p)
    for spec in p["runs"].values():
        spec.pop("seeds", None)
    return p


# ----------------------------------------------------------------------------- expansion
def test_expansion_and_names():
    runs = {"a": {"method": "maq2l", "seeds": [4, 0, 9]}, "b": {"method": "q2l"},
            "c": {"method": "q2l", "seeds": [2]}}
    R = matrix.RunSeed
    assert matrix.expand_runs(runs) == [R("a", "a", 4), R("a_seed0", "a", 0), R("a_seed9", "a", 9),
                                        R("b", "b", None), R("c", "c", 2)]
    assert matrix.seed_groups(runs) == {"a": ["a", "a_seed0", "a_seed9"], "b": ["b"], "c": ["c"]}
    assert matrix.seed_run_name("maq2l_full", 12) == "maq2l_full_seed12"
    p = {"runs": runs, "combos": {"k": {"stage1": "b", "stage2": "a"}}}
    assert matrix.run_names(p) == ["a", "a_seed0", "a_seed9", "b", "c"]
    assert matrix.find_run(p, "a_seed9") == R("a_seed9", "a", 9) and matrix.find_run(p, "a_seed4") is None
    # params.yaml: the four full-data MA x LC cells have seeds [0, 1, 2], nothing else has seeds
    names = matrix.run_names(PARAMS)
    extra = [n for n in names if n not in PARAMS["runs"]]
    assert extra == [f"{c}_seed{s}" for c in CELLS_FULL for s in (1, 2)]
    assert len(names) == len(PARAMS["runs"]) + 8
    assert matrix.run_split(PARAMS, "maq2l_none_full_seed2") == "full"
    cells = {c["run"]: c["seed_runs"] for c in matrix.ablation_cells(PARAMS["runs"])}
    assert cells["maq2l_full"] == ["maq2l_full", "maq2l_full_seed1", "maq2l_full_seed2"]
    assert cells["maq2l_sub"] == ["maq2l_sub"]
    assert matrix.ablation_pairs(PARAMS)[:3] == [("maq2l_full", "maq2l_ma_full"),
                                                 ("maq2l_full", "maq2l_lc_full"),
                                                 ("maq2l_full", "maq2l_none_full")]


def test_resolver_seeds():
    p = _params(q2l_sub={"method": "q2l", "recipe": "q2l", "split": "sub_0.0625", "seeds": [5, 1]})
    p["seed"] = 3
    base, extra = resolve_run(p, "q2l_sub"), resolve_run(p, "q2l_sub_seed1")
    assert (base.seed, base.run) == (5, "q2l_sub")          # seeds[0] replaces the global seed
    assert (extra.seed, extra.run) == (1, "q2l_sub_seed1")
    # a seed run is its base run with another seed, nothing else
    assert extra.to_dict() == {**base.to_dict(), "seed": 1, "run": "q2l_sub_seed1"}
    assert resolve_run(p, "q2l_sub_seed1", seed=8).seed == 8                    # train --seed wins
    assert resolve_run(p, "q2l_sub_seed1", {"seed": 6}).seed == 6               # so does --set
    assert resolve_run(p, "q2l_full").seed == 3                                  # no seeds: global
    # runs without seeds, and runs whose seeds[0] is the global seed, resolve as before
    plain = _no_seeds(PARAMS)
    for name in ("maq2l_full", "maq2l_none_full", "q2l_full", "myrans2018_full"):
        assert resolve_run(PARAMS, name).to_dict() == resolve_run(plain, name).to_dict()
    with pytest.raises(SewerbenchError, match="no run named 'maq2l_full_seed3'"):
        resolve_run(PARAMS, "maq2l_full_seed3")
    with pytest.raises(SewerbenchError, match=r"--set: unknown key 'seeds'"):
        resolve_run(PARAMS, "maq2l_full", {"seeds": [1]})


@pytest.mark.parametrize("value, needle", [
    ([], r"runs\.maq2l_full\.seeds: expected a non-empty list of distinct non-negative integers"),
    (3, r"runs\.maq2l_full\.seeds: expected a non-empty list .*got 3"),
    ("0,1", r"runs\.maq2l_full\.seeds: expected a non-empty list"),
    ([0, 1, 1], r"runs\.maq2l_full\.seeds: seed 1 is listed twice"),
    ([0, -1], r"runs\.maq2l_full\.seeds\[1\]: expected a non-negative integer, got -1"),
    ([0, 1.5], r"runs\.maq2l_full\.seeds\[1\]: expected a non-negative integer, got 1\.5"),
    ([True], r"runs\.maq2l_full\.seeds\[0\]: expected a non-negative integer, got True"),
    ([None], r"runs\.maq2l_full\.seeds\[0\]: expected a non-negative integer, got None"),
])
def test_bad_seeds_refused(tmp_path, capsys, value, needle):
    p = copy.deepcopy(PARAMS)
    p["runs"]["maq2l_full"]["seeds"] = value
    with pytest.raises(SewerbenchError, match=needle):
        resolve_run(p, "q2l_full")                 # any run: the whole runs: section is checked
    with pytest.raises(SewerbenchError, match=needle):
        render_dvc_yaml(p)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    for argv in (["dvc-yaml", "--params", str(f), "--out", str(tmp_path / "dvc.yaml")],
                 ["train", "--params", str(f), "maq2l_full", "--print-config"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("sewerbench: error: ")
        assert "runs.maq2l_full.seeds" in err
    assert not (tmp_path / "dvc.yaml").exists()


def test_seed_and_seeds_together_refused():
    p = copy.deepcopy(PARAMS)
    p["runs"]["maq2l_full"]["seed"] = 4
    with pytest.raises(SewerbenchError, match=r"runs\.maq2l_full: give 'seed' or 'seeds', not both"):
        resolve_run(p, "maq2l_full")


def test_name_collisions_refused(tmp_path, capsys):
    p = _params(maq2l_full_seed1={"method": "q2l", "recipe": "q2l", "split": "full"})
    msg = r"runs\.maq2l_full_seed1: the name is taken by seed 1 of runs\.maq2l_full"
    for call in (lambda: resolve_run(p, "q2l_full"), lambda: render_dvc_yaml(p),
                 lambda: matrix.run_names(p)):
        with pytest.raises(SewerbenchError, match=msg):
            call()
    c = copy.deepcopy(PARAMS)
    c["combos"]["maq2l_none_full_seed2"] = {"stage1": "xie2019_binary_full", "stage2": "tresnet_l_stage2_full",
                                            "mode": "replace"}
    with pytest.raises(SewerbenchError, match=r"combos\.maq2l_none_full_seed2: the name is taken by seed 2"):
        render_dvc_yaml(c)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    assert main(["train", "--params", str(f), "q2l_full", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "maq2l_full_seed1: the name is taken" in err
    # a name that only looks generated is fine when no entry generates it
    ok = _params(maq2l_sub_seed1={"method": "q2l", "recipe": "q2l", "split": "full"})
    assert "maq2l_sub_seed1" in matrix.run_names(ok)


def test_commands_accept_seed_runs(tmp_path, capsys):
    """`train --run <run>_seed<s> --print-config` and tune/dry-run lookups of seed runs."""
    assert main(["train", "--params", str(ROOT / "params.yaml"), "maq2l_lc_full_seed2", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["run"] == "maq2l_lc_full_seed2" and cfg["seed"] == 2
    assert (cfg["model"]["mask_attention"], cfg["model"]["label_correlation"]) == (False, True)
    from benchmark import tune
    with pytest.raises(SewerbenchError, match=r"--run: maq2l_full_seed1 is seed 1 of runs\.maq2l_full"):
        tune.choose_run(PARAMS, None, None, "maq2l_full_seed1")
    assert tune.choose_run(PARAMS, "maq2l", "full", None)[0] == "maq2l_full"
    # best.args retrains the tuned run and its further seeds (trials train with seeds[0])
    search = tune.Search.__new__(tune.Search)
    search.params, search.run_name, search.sets = PARAMS, "maq2l_ma_full", {}
    search.objectives, search._orig_run_names, search.out = ["F2_CIW"], set(PARAMS["runs"]), tmp_path
    trial = type("T", (), {"params": {"optimizer.lr": 1e-4}, "user_attrs": {}})()
    args = search.retrain_commands(trial)[0]
    assert args[-6:] == ["train@maq2l_ma_full", "evaluate@maq2l_ma_full",
                         "train_seed@maq2l_ma_full_seed1", "evaluate_seed@maq2l_ma_full_seed1",
                         "train_seed@maq2l_ma_full_seed2", "evaluate_seed@maq2l_ma_full_seed2"]
    search.run_name = "q2l_full"
    assert search.retrain_commands(trial)[0][-2:] == ["train@q2l_full", "evaluate@q2l_full"]
    from benchmark import dryrun
    stages = dryrun.expected_stages(PARAMS)
    assert "train_seed@maq2l_full_seed1" in stages and "evaluate_seed@maq2l_none_full_seed2" in stages
    assert stages.index("train_seed@maq2l_full_seed1") < stages.index("evaluate@maq2l_full")
    assert "results/metrics/maq2l_ma_full_seed2" in dryrun.expected_outputs(PARAMS)
    with pytest.raises(SewerbenchError, match=r"--runs: maq2l_full_seed2 is a seed run of maq2l_full"):
        dryrun.select_runs(PARAMS, ["maq2l_full_seed2"])
    kept, _ = dryrun.select_runs(PARAMS, ["maq2l_full"])
    assert matrix.run_names({"runs": kept}) == ["maq2l_full", "maq2l_full_seed1", "maq2l_full_seed2"]


def test_dry_run_keeps_the_first_seeds(tmp_path):
    from benchmark import dryrun
    before = copy.deepcopy(PARAMS)
    p = dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path)             # default --max-seeds 2
    assert PARAMS == before
    assert [p["runs"][c]["seeds"] for c in CELLS_FULL] == [[0, 1]] * 4
    stages = dryrun.expected_stages(p)
    assert [x for x in stages if x.startswith("train_seed@")] == [f"train_seed@{c}_seed1" for c in CELLS_FULL]
    assert dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path, max_seeds=0)["runs"]["maq2l_full"]["seeds"] == [0, 1, 2]
    one = dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path, max_seeds=1)
    assert one["runs"]["maq2l_full"]["seeds"] == [0] and not [x for x in dryrun.expected_stages(one) if "_seed" in x]
    with pytest.raises(SewerbenchError, match=r"--max-seeds: must be >= 0"):
        dryrun.dryrun_params(PARAMS, sewerml_root=tmp_path, max_seeds=-1)


# ----------------------------------------------------------------------------- dvc.yaml
def test_dvc_yaml_seed_stages():
    p = _params(q2l_sub={"method": "q2l", "recipe": "q2l", "split": "sub_0.0625", "seeds": [3, 7]})
    dvc = yaml.safe_load(render_dvc_yaml(p))
    st = dvc["stages"]
    items = st["train_seed"]["foreach"]
    assert items == seed_items(p) == st["evaluate_seed"]["foreach"]
    assert list(items)[-1] == "q2l_sub_seed7"
    assert items["q2l_sub_seed7"] == {"base": "q2l_sub", "seed": 7, "recipe": "q2l", "split": "sub_0.0625"}
    assert items["maq2l_full_seed2"] == {"base": "maq2l_full", "seed": 2, "recipe": "maq2l", "split": "full"}
    assert len(items) == 9
    train, seed = st["train"]["do"], st["train_seed"]["do"]
    assert seed["cmd"] == "sewerbench train --params params.yaml --run ${key} --seed ${item.seed} --out runs/${key}"
    assert seed["deps"] == train["deps"] and seed["outs"] == train["outs"] == ["runs/${key}"]
    assert seed["params"] == [x.replace("runs.${key}", "runs.${item.base}") for x in train["params"]]
    ev, evs = st["evaluate"]["do"], st["evaluate_seed"]["do"]
    assert evs["cmd"] == ev["cmd"] and evs["deps"] == ev["deps"] and evs["outs"] == ev["outs"]
    # no params: the split, the resamples and the seed are in the command (DVC compares it)
    assert "params" not in evs and "params" not in ev
    assert "--split ${item.split} --bootstrap ${tables.bootstrap} --seed ${seed}" in evs["cmd"]
    # the tables stage reads every seed run of the MA x LC cells, and all metrics
    deps = st["tables"]["deps"]
    assert "results/metrics" in deps and "results/metrics" in st["plots"]["deps"]
    assert [d for d in deps if d.startswith("runs/maq2l_full")] == \
        ["runs/maq2l_full", "runs/maq2l_full_seed1", "runs/maq2l_full_seed2"]
    assert "runs/q2l_sub_seed7" not in deps                    # not an ablation cell
    # plots may name a seed run; an unknown seed is an unknown run
    p["plots"]["cam_runs"] = ["q2l_sub_seed7"]
    assert "runs/q2l_sub_seed7" in yaml.safe_load(render_dvc_yaml(p))["stages"]["plots"]["deps"]
    p["plots"]["cam_runs"] = ["q2l_sub_seed8"]
    with pytest.raises(SewerbenchError, match="no run or combo named 'q2l_sub_seed8'"):
        render_dvc_yaml(p)
    # no seeds (or one seed each): no seed stages, and the rest as before
    for variant in (_no_seeds(PARAMS), _params(maq2l_full={**PARAMS["runs"]["maq2l_full"], "seeds": [5]})):
        if "seeds" in variant["runs"]["maq2l_full"]:
            for c in CELLS_FULL[1:]:
                variant["runs"][c].pop("seeds")
        plain = yaml.safe_load(render_dvc_yaml(variant))["stages"]
        assert "train_seed" not in plain and "evaluate_seed" not in plain
        assert not [d for d in plain["tables"]["deps"] if "_seed" in d]
        assert plain["train"] == st["train"] and plain["evaluate"] == st["evaluate"]


# ----------------------------------------------------------------------------- tables
def _m(f2, f1, mAP, ci=None):
    """A hand-made metrics JSON (the keys the tables read), values on the 0-1 scale."""
    m = {"New": {"F2": f2, "F1_Normal": f1}, "Main": {"mAP": mAP}}
    if ci:
        m["Bootstrap"] = {"F2_CIW": list(ci), "F1_Normal": [f1 - 0.01, f1 + 0.01]}
    return m


SEEDS = {"maq2l_full": ["maq2l_full", "maq2l_full_seed1", "maq2l_full_seed2"]}
HAND = {"maq2l_full": {"val": _m(0.70, 0.90, 0.80, ci=(0.68, 0.72)), "test": _m(0.60, 0.95, 0.8)},
        "maq2l_full_seed1": {"val": _m(0.72, 0.92, 0.84), "test": _m(0.62, 0.93, 0.8)},
        "maq2l_full_seed2": {"val": _m(0.77, 0.91, 0.82)},
        "q2l_full": {"val": _m(0.50, 0.80, 0.70)}}


def test_seed_stats_and_formatting():
    st = tables.seed_stats(HAND, SEEDS["maq2l_full"], "val")
    assert st["n"] == 3
    assert st["F2_mean"] == pytest.approx(73.0, abs=1e-12) and st["F2_sd"] == pytest.approx(13 ** 0.5, abs=1e-12)
    assert st["F1_mean"] == pytest.approx(91.0, abs=1e-12) and st["F1_sd"] == pytest.approx(1.0, abs=1e-12)
    assert st["mAP_mean"] == pytest.approx(82.0, abs=1e-12) and st["mAP_sd"] == pytest.approx(2.0, abs=1e-12)
    one = tables.seed_stats(HAND, ["q2l_full"], "val")
    assert one["n"] == 1 and one["F2_mean"] == pytest.approx(50.0) and one["F2_sd"] is None
    t = tables.seed_stats(HAND, SEEDS["maq2l_full"], "test")        # seed 2 has no test metrics
    assert t["n"] == 2 and t["F2_mean"] == pytest.approx(61.0) and t["F2_sd"] == pytest.approx(2 ** 0.5)
    none = tables.seed_stats(HAND, ["nothing"], "val")
    assert none == {"n": 0, "F2_mean": None, "F2_sd": None, "F1_mean": None, "F1_sd": None,
                    "mAP_mean": None, "mAP_sd": None}
    assert tables.fmt_mean_sd(73.0, 13 ** 0.5) == "73.00 ± 3.61"
    assert tables.fmt_mean_sd(50.0, None) == "50.00" and tables.fmt_mean_sd(None, 1.0) == ""
    assert tables.fmt_seeds(3, 3) == "3" and tables.fmt_seeds(2, 3) == "2 of 3" and tables.fmt_seeds(0, 3) == ""
    assert tables.tex_escape("73.00 ± 3.61") == r"73.00 $\pm$ 3.61"


def test_table3_and_sewerml_tables_with_seeds():
    num, disp = tables.table3(HAND, seeds=SEEDS)
    r = num.set_index("key")
    assert r.loc["maq2l_full", "val_f2_ours"] == pytest.approx(70.0)          # the first seed's run
    assert r.loc["maq2l_full", "val_f2_ours_lo"] == pytest.approx(68.0)
    assert r.loc["maq2l_full", "val_f2_ours_mean"] == pytest.approx(73.0)
    assert r.loc["maq2l_full", "val_f2_ours_sd"] == pytest.approx(13 ** 0.5)
    assert r.loc["maq2l_full", "val_f1_ours_sd"] == pytest.approx(1.0)
    assert r.loc["maq2l_full", "val_n_seeds"] == 3 and r.loc["maq2l_full", "test_n_seeds"] == 2
    assert r.loc["maq2l_full", "test_f1_ours_mean"] == pytest.approx(94.0)
    assert r.loc["q2l_full", "val_f2_ours_mean"] == pytest.approx(50.0) and pd.isna(r.loc["q2l_full", "val_f2_ours_sd"])
    assert r.loc["q2l_full", "val_n_seeds"] == 1 and r.loc["cafen", "val_n_seeds"] == 0
    d = disp.set_index(num["key"])
    assert d.loc["maq2l_full", "val F2 (ours, 95% CI)"] == "70.00 [68.00, 72.00]"
    assert d.loc["maq2l_full", "val F2 (ours, mean ± sd)"] == "73.00 ± 3.61"
    assert d.loc["maq2l_full", "val F1 (ours, mean ± sd)"] == "91.00 ± 1.00"
    assert d.loc["maq2l_full", "test F2 (ours, mean ± sd)"] == "61.00 ± 1.41"
    assert d.loc["maq2l_full", "Seeds"] == "3"
    assert d.loc["q2l_full", "val F2 (ours, mean ± sd)"] == "" and d.loc["q2l_full", "Seeds"] == "1"
    assert list(disp.columns)[4:7] == ["val F1 (ours, mean ± sd)", "val F2 (paper)", "val F2 (ours, 95% CI)"]
    # without seeds (or with single-seed runs only) the display is as before: no seed columns
    _, plain = tables.table3(HAND)
    _, plain2 = tables.table3(HAND, seeds={"maq2l_full": ["maq2l_full"]})
    cols = ["Training data", "Model"] + [f"{s} {k} ({w})" for s in ("val", "test") for k in ("F1", "F2")
                                         for w in ("paper", "ours, 95% CI")] + ["Note"]
    assert list(plain.columns) == cols == list(plain2.columns)
    assert plain.equals(plain2)
    # Sewer-ML Table 4: a row whose run has seeds
    seeds4 = {"xie2019_full": ["xie2019_full", "xie2019_full_seed1"]}
    m4 = {"xie2019_full": {"val": _m(0.40, 0.50, 0.3)}, "xie2019_full_seed1": {"val": _m(0.44, 0.52, 0.3)}}
    n4, d4 = tables.sewerml_table(published.TABLE4, m4, seeds4)
    r4 = n4.set_index("model")
    assert r4.loc["Xie2019", "val_f2_ours_mean"] == pytest.approx(42.0)
    assert r4.loc["Xie2019", "val_f2_ours_sd"] == pytest.approx(0.04 * 100 / 2 ** 0.5)
    assert r4.loc["Xie2019", "val_n_seeds"] == 2 and r4.loc["KSSNet", "val_n_seeds"] == 0
    assert d4.set_index("Model").loc["Xie2019", "val F2 (ours, mean ± sd)"] == "42.00 ± 2.83"
    assert d4.set_index("Model").loc["Xie2019", "Seeds"] == "2"
    _, d4_plain = tables.sewerml_table(published.TABLE4, m4)
    assert "Seeds" not in d4_plain.columns and "val F2 (ours, mean ± sd)" not in d4_plain.columns


def test_ablation_table_with_seeds():
    runs = {"maq2l_full": {"method": "maq2l", "split": "full", "seeds": [0, 1, 2]},
            "maq2l_none_full": {"method": "maq2l", "split": "full",
                                "model": {"mask_attention": False, "label_correlation": False}}}
    metrics = {**HAND, "maq2l_none_full": {"val": _m(0.65, 0.85, 0.75)}}
    paired = {"maq2l_none_full": A.seed_paired_comparison(100, 0, 0.95, 3, 1, {
        "F2_CIW": A.paired_metric(0.73, 0.65, -0.08, [-0.12, -0.01], 0.04),
        "F1_Normal": A.paired_metric(0.91, 0.85, -0.06, [-0.09, 0.02], 0.3)})}
    num, disp = tables.ablation_table(tables.ablation_cells(runs), metrics, paired, {"full": "maq2l_full"})
    r = num.set_index("run")
    assert r.loc["maq2l_full", "val_f2"] == pytest.approx(70.0)
    assert r.loc["maq2l_full", "val_f2_mean"] == pytest.approx(73.0)
    assert r.loc["maq2l_full", "val_map_mean"] == pytest.approx(82.0) and r.loc["maq2l_full", "val_map_sd"] == pytest.approx(2.0)
    assert r.loc["maq2l_full", "n_seeds"] == 3 and r.loc["maq2l_none_full", "n_seeds"] == 1
    assert r.loc["maq2l_none_full", "delta_f2"] == pytest.approx(-8.0)
    assert r.loc["maq2l_none_full", "delta_f2_lo"] == pytest.approx(-12.0)
    assert r.loc["maq2l_none_full", "delta_f1_hi"] == pytest.approx(2.0)
    assert r.loc["maq2l_none_full", "p_method"] == "images x seeds" and r.loc["maq2l_full", "p_method"] == ""
    d = disp.set_index(num["run"])
    assert d.loc["maq2l_full", "val F2-CIW (mean ± sd)"] == "73.00 ± 3.61"
    assert d.loc["maq2l_full", "val mAP (mean ± sd)"] == "82.00 ± 2.00"
    assert d.loc["maq2l_full", "Seeds"] == "3" and d.loc["maq2l_none_full", "Seeds"] == "1"
    assert d.loc["maq2l_none_full", "val F2-CIW (mean ± sd)"] == ""
    assert d.loc["maq2l_none_full", "dF2 vs ref (95% CI)"] == "-8.00 [-12.00, -1.00]"
    assert d.loc["maq2l_none_full", "p (F2)"] == "0.040" and d.loc["maq2l_none_full", "p method"] == "images x seeds"
    # single-seed cells: the columns of before
    runs["maq2l_full"].pop("seeds")
    _, plain = tables.ablation_table(tables.ablation_cells(runs), metrics, {}, {"full": "maq2l_full"})
    assert list(plain.columns) == ["Training data", "MA", "LC", "Run", "val F2-CIW (95% CI)",
                                   "val F1-Normal (95% CI)", "val mAP", "val* F2-CIW", "dF2 vs ref",
                                   "p (F2)", "dF1 vs ref", "p (F1)"]


# ----------------------------------------------------------------------------- seed bootstrap
def _data(seed=0, n=240, noise=0.6):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 17)) < np.linspace(0.03, 0.3, 17)).astype(int)
    t[rng.random(n) < 0.4] = 0
    s = np.clip(0.5 * t + rng.random((n, 17)) * noise, 0, 1).round(2)
    return s, t


def _worse(s, sd, seed):
    return np.clip(s + np.random.default_rng(seed).normal(0, sd, s.shape), 0, 1)


def _two_level(arm_a, arm_b, t, n, seed):
    """The two-level paired bootstrap written from its contract (bootstrap.py docstring)."""
    rows = I.draws(len(t), n, seed)
    rng = np.random.default_rng([seed, 0x5EED])
    picks = [rng.integers(0, len(arm), size=(n, len(arm))) for arm in (arm_a, arm_b)]
    out = {}
    for name in ("F2_CIW", "F1_Normal"):
        reps = [np.array([[I.headline(x[r], t[r])[name] for x in arm] for r in rows]) for arm in (arm_a, arm_b)]
        d = np.array([reps[1][i, picks[1][i]].mean() - reps[0][i, picks[0][i]].mean() for i in range(n)])
        a = np.mean([I.headline(x, t)[name] for x in arm_a])
        b = np.mean([I.headline(x, t)[name] for x in arm_b])
        le, ge = int(np.sum(d <= 0)), int(np.sum(d >= 0))
        out[name] = {"a": a, "b": b, "delta": b - a,
                     "ci": [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))],
                     "p_value": min(1.0, 2.0 * min(le + 1, ge + 1) / (n + 1))}
    return out


def test_seed_bootstrap_with_one_seed_per_arm_is_the_image_bootstrap():
    s, t = _data(1)
    s2 = _worse(s, 0.25, 0)
    img = B.paired_bootstrap(s, s2, t, n=150, seed=4)
    two = B.paired_seed_bootstrap([s], [s2], t, n=150, seed=4)
    assert tuple(two) == A.SEED_PAIRED_KEYS and (two["n_seeds_a"], two["n_seeds_b"]) == (1, 1)
    assert two["method"] == A.SEED_PAIRED_METHOD and two["n_resamples"] == 150 and two["seed"] == 4
    for name in ("F2_CIW", "F1_Normal"):
        assert tuple(two["metrics"][name]) == A.PAIRED_METRIC_KEYS
        assert two["metrics"][name] == img["metrics"][name]            # exactly: delta, CI, p


def test_seed_bootstrap_equals_an_independent_two_level_bootstrap():
    s, t = _data(2, n=120)
    arm_a = [s, _worse(s, 0.05, 1)]
    arm_b = [_worse(s, 0.2, 2), _worse(s, 0.1, 3), _worse(s, 0.3, 4)]
    res = B.paired_seed_bootstrap(arm_a, arm_b, t, n=60, seed=11)
    mine = _two_level(arm_a, arm_b, t, 60, 11)
    assert (res["n_seeds_a"], res["n_seeds_b"]) == (2, 3)
    for name in ("F2_CIW", "F1_Normal"):
        m, e = res["metrics"][name], mine[name]
        for k in ("a", "b", "delta", "p_value"):
            assert m[k] == pytest.approx(e[k], abs=1e-12), (name, k)
        assert m["ci"] == pytest.approx(e["ci"], abs=1e-12)


def test_seed_variance_makes_the_difference_less_significant():
    s, t = _data(3, n=400)
    bad = _worse(s, 0.35, 5)
    img = B.paired_bootstrap(s, bad, t, n=300, seed=0)["metrics"]["F2_CIW"]
    assert img["delta"] < 0 and img["p_value"] < 0.01          # seed 0 of b alone: clearly worse
    # b's other seeds are as good as a: large seed variance, the same first seeds
    spread = B.paired_seed_bootstrap([s, s, s], [bad, s, _worse(s, 0.02, 6)], t, n=300, seed=0)
    m = spread["metrics"]["F2_CIW"]
    assert m["p_value"] > img["p_value"] and m["p_value"] > 0.1
    assert m["ci"][1] - m["ci"][0] > 2 * (img["ci"][1] - img["ci"][0]) and m["ci"][0] < 0 <= m["ci"][1]
    assert m["delta"] == pytest.approx(img["delta"] / 3 + (I.headline(_worse(s, 0.02, 6), t)["F2_CIW"]
                                                          - I.headline(s, t)["F2_CIW"]) / 3, abs=1e-12)
    # seeds that agree keep it significant (the p-value follows the seed spread, not the count)
    agree = B.paired_seed_bootstrap([s, s, s], [bad, _worse(s, 0.35, 7), _worse(s, 0.35, 8)], t, n=300, seed=0)
    assert agree["metrics"]["F2_CIW"]["p_value"] < 0.01


def test_seed_bootstrap_is_deterministic():
    s, t = _data(4, n=150)
    arm_a, arm_b = [s, _worse(s, 0.1, 1)], [_worse(s, 0.2, 2), _worse(s, 0.05, 3)]
    r1 = B.paired_seed_bootstrap(arm_a, arm_b, t, n=80, seed=7)
    r2 = B.paired_seed_bootstrap(arm_a, arm_b, t, n=80, seed=7)
    assert r1 == r2
    r3 = B.paired_seed_bootstrap(arm_a, arm_b, t, n=80, seed=8)
    assert r3["metrics"]["F2_CIW"]["delta"] == r1["metrics"]["F2_CIW"]["delta"]   # point values
    assert r3["metrics"]["F2_CIW"]["ci"] != r1["metrics"]["F2_CIW"]["ci"]         # other draws
    with pytest.raises(ValueError, match="arm b: no score arrays"):
        B.paired_seed_bootstrap([s], [], t)
    with pytest.raises(ValueError, match="differ in shape"):
        B.paired_seed_bootstrap([s], [s[:10]], t)
    with pytest.raises(ValueError):
        B.paired_seed_bootstrap([s], [s], t, n=0)


# ----------------------------------------------------------------------------- end to end
def test_tables_command_with_seed_runs(tmp_path, capsys):
    """evaluate (split from the seed run's entry) -> tables: seed mean ± sd, the two-level
    p-value where a cell has seeds, the image bootstrap for single-seed pairs."""
    rng = np.random.default_rng(0)
    n = 60
    names = [f"{i:08d}.png" for i in range(n, 0, -1)]           # not sorted: rows are aligned by name
    y = (rng.random((n, 17)) < 0.2).astype(int)
    prep = tmp_path / "prepared"
    (prep / "full").mkdir(parents=True)
    (prep / "sub_0.0625").mkdir()
    gt_frame(names, y).to_csv(prep / "full" / "val.csv", index=False)
    gt_frame(names[::4], y[::4]).to_csv(prep / "sub_0.0625" / "val.csv", index=False)
    params = {"seed": 0, "profile": "smoke",
              "tables": {"bootstrap": 40, "ablation_reference": {"full": "maq2l_full", "sub_0.0625": "maq2l_sub"}},
              "runs": {"maq2l_full": {"method": "maq2l", "split": "full", "seeds": [0, 1]},
                       "maq2l_none_full": {"method": "maq2l", "split": "full",
                                           "model": {"mask_attention": False, "label_correlation": False}},
                       "maq2l_sub": {"method": "maq2l", "split": "sub_0.0625"},
                       "maq2l_none_sub": {"method": "maq2l", "split": "sub_0.0625",
                                          "model": {"mask_attention": False, "label_correlation": False},
                                          "seeds": [2]}}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    base = np.clip(0.7 * y + 0.4 * rng.random(y.shape), 0, 1).round(4)
    noise = {"maq2l_full": 0.0, "maq2l_full_seed1": 0.15, "maq2l_none_full": 0.3, "maq2l_sub": 0.1,
             "maq2l_none_sub": 0.25}
    runs_dir, mdir = tmp_path / "runs", tmp_path / "metrics"
    arrays = {}
    for run, sd in noise.items():
        d = runs_dir / run
        d.mkdir(parents=True)
        arrays[run] = np.clip(base + sd * rng.normal(size=base.shape), 0, 1).round(4)
        scores_frame(names, arrays[run]).to_csv(d / "scores_val.csv", index=False)
        scores_frame(names[::4], arrays[run][::4]).to_csv(d / "scores_val_sub.csv", index=False)
        assert main(["evaluate", "--run-dir", str(d), "--out", str(mdir / run), "--params", str(pfile),
                     "--prepared", str(prep)]) == 0
    # the seed run's split comes from its entry: the 1/16 val set was evaluated for the sub cell
    assert (mdir / "maq2l_none_sub" / "val_sub.json").is_file()
    assert not (mdir / "maq2l_full_seed1" / "val_sub.json").exists()
    assert main(["tables", "--params", str(pfile), "--metrics", str(mdir), "--runs", str(runs_dir),
                 "--prepared", str(prep), "--out", str(tmp_path / "results")]) == 0
    capsys.readouterr()
    res = tmp_path / "results"
    paired = json.loads((res / "ablation_paired.json").read_text())
    assert set(paired) == {"maq2l_none_full", "maq2l_none_sub"}
    order = np.argsort(np.array(names))
    yy = y[order]
    two = paired["maq2l_none_full"]
    assert tuple(two) == A.SEED_PAIRED_KEYS and (two["n_seeds_a"], two["n_seeds_b"]) == (2, 1)
    mine = _two_level([arrays["maq2l_full"][order], arrays["maq2l_full_seed1"][order]],
                      [arrays["maq2l_none_full"][order]], yy, 40, 0)
    img = I.paired(arrays["maq2l_sub"][order], arrays["maq2l_none_sub"][order], yy, 40, 0)
    assert tuple(paired["maq2l_none_sub"]) == A.PAIRED_KEYS                  # single seeds: images only
    for name in ("F2_CIW", "F1_Normal"):
        for k in ("a", "b", "delta", "p_value"):
            assert two["metrics"][name][k] == pytest.approx(mine[name][k], abs=1e-12), (name, k)
            assert paired["maq2l_none_sub"]["metrics"][name][k] == pytest.approx(img[name][k], abs=1e-12)
        assert two["metrics"][name]["ci"] == pytest.approx(mine[name]["ci"], abs=1e-12)
    abl = pd.read_csv(res / "ablation.csv").set_index("run")
    f2 = [100 * I.headline(arrays[r][order], yy)["F2_CIW"] for r in ("maq2l_full", "maq2l_full_seed1")]
    assert abl.loc["maq2l_full", "n_seeds"] == 2 and abl.loc["maq2l_none_sub", "n_seeds"] == 1
    assert abl.loc["maq2l_full", "val_f2_mean"] == pytest.approx(np.mean(f2), abs=5.1e-5)
    assert abl.loc["maq2l_full", "val_f2_sd"] == pytest.approx(np.std(f2, ddof=1), abs=5.1e-5)
    assert abl.loc["maq2l_full", "val_f2"] == pytest.approx(f2[0], abs=5.1e-5)
    assert abl.loc["maq2l_none_full", "delta_f2"] == pytest.approx(100 * mine["F2_CIW"]["delta"], abs=5.1e-5)
    assert abl.loc["maq2l_none_full", "p_f2"] == pytest.approx(mine["F2_CIW"]["p_value"], abs=5.1e-5)
    assert abl.loc["maq2l_none_full", "p_method"] == "images x seeds"
    assert abl.loc["maq2l_none_sub", "p_method"] == "images"
    md = (res / "ablation.md").read_text()
    assert "two-level paired bootstrap" in md and "sample sd, n - 1" in md
    assert f"| {np.mean(f2):.2f} ± {np.std(f2, ddof=1):.2f} |" in md
    t3 = (res / "table3.md").read_text()
    assert "mean ± sd" in t3 and "first seed (runs/<run>)" in t3
    t3csv = pd.read_csv(res / "table3.csv").set_index("key")
    assert t3csv.loc["maq2l_full", "val_n_seeds"] == 2
    assert t3csv.loc["maq2l_full", "val_f2_ours_mean"] == pytest.approx(np.mean(f2), abs=5.1e-5)
    assert "mean ± sd" not in (res / "sewerml_table4.md").read_text()     # no seeded run there
    assert (res / "per_class" / "maq2l_full_seed1_val.md").is_file()
