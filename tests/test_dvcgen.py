"""dvc.yaml is generated from params.yaml (`sewerbench dvc-yaml`); the committed one must match."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import load_params
from benchmark.dvcgen import render_dvc_yaml
from benchmark.errors import SewerbenchError
from benchmark.matrix import ablation_pairs, plots_runs, tables_runs

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")


def _deps(dvc: dict, stage: str) -> list[str]:
    return [d for d in dvc["stages"][stage]["deps"] if d.startswith("runs/")]


def test_committed_dvc_yaml_is_generated_from_params():
    """Fails when params.yaml (runs, tables.ablation_reference, plots) or benchmark/dvcgen.py
    changed without `sewerbench dvc-yaml`."""
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == render_dvc_yaml(PARAMS), \
        "dvc.yaml is out of date: run `sewerbench dvc-yaml`"


def test_generated_run_dependencies():
    dvc = yaml.safe_load(render_dvc_yaml(PARAMS))
    full = [f"runs/{r}{s}" for r in ("maq2l_full", "maq2l_ma_full", "maq2l_lc_full", "maq2l_none_full")
            for s in ("", "_seed1", "_seed2")]            # the four full-data cells have seeds [0, 1, 2]
    cells = full + [f"runs/{r}" for r in ("maq2l_sub", "maq2l_ma_sub", "maq2l_lc_sub", "maq2l_none_sub")]
    assert _deps(dvc, "tables") == cells == [f"runs/{r}" for r in tables_runs(PARAMS)]
    assert _deps(dvc, "plots") == ["runs/maq2l_full", "runs/q2l_full"]
    assert ablation_pairs(PARAMS)[0] == ("maq2l_full", "maq2l_ma_full")
    # every stage runs a sewerbench command; the per-run stages stay DVC templates
    for name, st in dvc["stages"].items():
        body = st.get("do", st)
        for cmd in body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]:
            assert cmd.startswith("sewerbench "), (name, cmd)
    assert dvc["stages"]["train"]["foreach"] == "${runs}" == dvc["stages"]["evaluate"]["foreach"]
    seeds = {f"{r}_seed{s}": {"base": r, "seed": s, "recipe": "maq2l", "split": "full"}
             for r in ("maq2l_full", "maq2l_ma_full", "maq2l_lc_full", "maq2l_none_full") for s in (1, 2)}
    assert dvc["stages"]["train_seed"]["foreach"] == seeds == dvc["stages"]["evaluate_seed"]["foreach"]
    assert dvc["stages"]["combine"]["foreach"] == "${combos}" == dvc["stages"]["evaluate_combo"]["foreach"]
    assert dvc["stages"]["evaluate"]["do"]["cmd"].startswith("sewerbench evaluate --run-dir runs/${key} ")


def test_lists_follow_params():
    p = copy.deepcopy(PARAMS)
    p["plots"] = {**p["plots"], "pr_run": "q2l_sub", "cooccurrence_run": None,
                  "cam_runs": ["asl_tresnet_l_full", "q2l_sub"]}
    p["tables"] = {**p["tables"], "ablation_reference": {"full": "maq2l_full"}}  # no 1/16 reference
    dvc = yaml.safe_load(render_dvc_yaml(p))
    assert _deps(dvc, "plots") == ["runs/q2l_sub", "runs/asl_tresnet_l_full"] == \
        [f"runs/{r}" for r in plots_runs(p)]
    assert _deps(dvc, "tables") == [f"runs/{r}{s}" for r in ("maq2l_full", "maq2l_ma_full", "maq2l_lc_full",
                                                             "maq2l_none_full") for s in ("", "_seed1", "_seed2")]
    assert render_dvc_yaml(p) != render_dvc_yaml(PARAMS)
    p["plots"]["cam_runs"] = ["no_such_run"]
    with pytest.raises(SewerbenchError, match=r"plots\.pr_run / cooccurrence_run / cam_runs: "
                                              r"no run or combo named 'no_such_run'"):
        render_dvc_yaml(p)


def test_dvc_yaml_command_writes_and_checks(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "dvc.yaml"
    assert main(["dvc-yaml", "--params", str(params), "--out", str(out), "--check"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["dvc-yaml", "--params", str(params), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_dvc_yaml(PARAMS)
    assert main(["dvc-yaml", "--params", str(params), "--out", str(out), "--check"]) == 0
    capsys.readouterr()
    # params change without regenerating: --check fails with a one-line hint, writes nothing
    params.write_text(params.read_text(encoding="utf-8").replace("cam_runs: [maq2l_full, q2l_full]",
                                                                 "cam_runs: [maq2l_full]"), encoding="utf-8")
    before = out.read_text(encoding="utf-8")
    assert main(["dvc-yaml", "--params", str(params), "--out", str(out), "--check"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "run `sewerbench dvc-yaml`" in err and str(out) in err
    assert out.read_text(encoding="utf-8") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
