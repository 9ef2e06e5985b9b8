"""`sewerbench tune` in one process: argument and storage errors before any trial, the search
space, a NaN trial recorded FAIL with its reason while the study goes on, pruning that prunes,
best.yaml / best.args re-training the best trial to the same value, the two-objective mode.

Every trial is a real tiny run (tests/tinyrun.py: a small CNN on 16 px images, 2 epochs) through
``benchmark.config.resolve_run`` and ``benchmark.train.engine.train_run``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml

import tinyrun
from benchmark import tune
from benchmark.config.resolve import deep_merge
from benchmark.cli import main
from benchmark.errors import SewerbenchError

GOOD, BAD, NAN = 3e-2, 1e-9, 1e30  # lr: learns / stays at its start / loss NaN at step 2
FAMILIES = ("tiny", "q2l")  # the tiny run's family: tiny_cnn's, or q2l's with a model_target


def _tune_section(**over):
    sec = {"seed": 0, "objective": "mAP", "poll_seconds": 0.3,
           "heartbeat": {"interval": 1, "grace": 2, "max_retry": 2},
           "sampler": {"n_startup_trials": 3, "population_size": 4},
           "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
           "spaces": {}}
    space = {"optimizer.lr": {"type": "categorical", "choices": [GOOD, BAD]},
             "loss.gamma_neg": {"type": "float", "low": 0.0, "high": 4.0}}
    for family in FAMILIES:
        sec["spaces"][family] = copy.deepcopy(space)
    sec.update(over)
    return sec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = tinyrun.make_dataset(tmp_path_factory.mktemp("tune_data"), n_train=32, n_val=16, n_test=8)
    params = tinyrun.params(root, epochs=2)
    params["tune"] = _tune_section()
    return root, params


def _write(tmp_path, params, name="params.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params))
    return path


def _study(out, name="tiny-mAP"):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _precreate(out, name="tiny-mAP", enqueue=(), directions=("maximize",)):
    """Create the study the command will load and queue fixed trials first (deterministic tests)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}",
                                directions=list(directions))
    for params in enqueue:
        study.enqueue_trial(params)
    return study


def _tune(params_path, out, *extra):
    return main(["tune", "--params", str(params_path), "--run", "tiny", "--out", str(out), *extra])


# ----------------------------------------------------------------------------- errors first
@pytest.mark.parametrize("args, message", [
    (["--objective", "F3"], "--objective: unknown metric 'F3'"),
    (["--objective", "F2_CIW,mAP,F1_Normal"], "--objective: 'F2_CIW,mAP,F1_Normal': at most two"),
    (["--storage", "not a url"], "--storage: 'not a url': not a storage URL"),
    (["--storage", "redis://localhost:6379"], "--storage: redis://localhost:6379: unsupported database"),
    (["--storage", "postgresql+nosuchdriver://u@h/db"], "--storage: postgresql+nosuchdriver://u@h/db: unknown database driver"),
    (["--storage", "sqlite://"], "--storage: sqlite://: an in-memory SQLite database"),
    (["--storage", "journal:"], "--storage: 'journal:': the journal storage needs a file path"),
    (["--storage", "postgresql+psycopg://u:secret@127.0.0.1:9/db"], "--storage: postgresql+psycopg://u:***@127.0.0.1:9/db: cannot open"),
    (["--objective", "F2_CIW,F1_Normal", "--pruner", "median"], "Optuna cannot prune a two-objective study"),
    (["--set", "epochs=0"], "epochs must be >= 1"),
    (["--trials", "0"], "--trials: must be >= 1"),
])
def test_one_line_errors_before_any_trial(tiny, tmp_path, capsys, args, message):
    if "psycopg" in " ".join(args):
        pytest.importorskip("psycopg")
    _, params = tiny
    out = tmp_path / "out"
    assert _tune(_write(tmp_path, params), out, "--trials", "2", *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sewerbench: error: ") and "\n" not in err, err
    assert message in err
    assert "secret" not in err
    assert not (out / "trials").exists()


def test_missing_data_is_an_error_before_any_trial(tiny, tmp_path, capsys):
    _, params = tiny
    p = copy.deepcopy(params)
    p["data"]["prepared"] = str(tmp_path / "nowhere")
    assert _tune(_write(tmp_path, p), tmp_path / "out", "--trials", "1") == 2
    assert "train.csv: not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- helpers
def test_the_tune_section_comes_from_tune_yaml_beside_params(tmp_path):
    """The repository keeps `tune:` in tune.yaml (DVC parses params.yaml once per stage); a
    params.yaml with its own section works where there is no tune.yaml; never both."""
    root = Path(__file__).resolve().parents[1]
    repo = tune.load_search_params(root / "params.yaml")
    assert "tune" not in yaml.safe_load((root / "params.yaml").read_text())
    assert repo["tune"] == yaml.safe_load((root / tune.TUNE_FILE).read_text())["tune"]
    assert set(repo["tune"]["spaces"]) >= {"q2l", "asl", "sewerml"}
    params = _write(tmp_path, {"profile": "smoke", "tune": {"seed": 3}})
    assert tune.load_search_params(params)["tune"] == {"seed": 3}
    (tmp_path / "tune.yaml").write_text("tune: {seed: 4}\n")
    with pytest.raises(SewerbenchError, match="has a tune: section too; keep one"):
        tune.load_search_params(params)
    params.write_text("profile: smoke\n")
    assert tune.load_search_params(params)["tune"] == {"seed": 4}
    other = tmp_path / "other.yaml"
    other.write_text("seed: 5\n")
    with pytest.raises(SewerbenchError, match=r"other.yaml: expected one top-level mapping `tune:`, got keys seed"):
        tune.load_search_params(params, other)
    with pytest.raises(SewerbenchError, match="nowhere.yaml: cannot read"):
        tune.load_search_params(params, tmp_path / "nowhere.yaml")


def test_search_space_family_method_profiles_and_checks():
    params = {"tune": {"spaces": {
        "sewerml": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True,
                                     "profiles": {"smoke": {"low": 1e-4, "high": 1e-2}}},
                    "image_size": {"type": "categorical", "choices": [192, 224]}},
        "chen2018": {"image_size": None, "model.dropout": {"type": "float", "low": 0.2, "high": 0.7}}}}}
    s = tune.search_space(params, "chen2018", "sewerml", "smoke")
    assert set(s) == {"optimizer.lr", "model.dropout"}
    assert (s["optimizer.lr"]["low"], s["optimizer.lr"]["high"]) == (1e-4, 1e-2)
    assert tune.search_space(params, "resnet101", "sewerml", "paper")["optimizer.lr"]["low"] == 1e-3
    with pytest.raises(SewerbenchError, match="no search space for method 'maq2l'"):
        tune.search_space(params, "maq2l", "q2l")
    for bad, msg in [({"type": "float", "low": 1, "high": 1}, "must be below"),
                     ({"type": "float", "low": 0, "high": 1, "log": True}, "log range needs low > 0"),
                     ({"type": "categorical", "choices": []}, "non-empty list"),
                     ({"type": "uniform", "low": 0, "high": 1}, "unknown type"),
                     ({"low": 0, "high": 1, "lo": 3}, "unknown field")]:
        with pytest.raises(SewerbenchError, match=msg):
            tune.search_space({"tune": {"spaces": {"q2l": {"k": bad}}}}, "q2l", "q2l")


def test_run_choice_objectives_values_and_hydra_syntax():
    runs = {"runs": {"a_stage2": {"method": "m", "split": "full", "train_on": "defect_only"},
                     "a_sub": {"method": "m", "split": "sub"}, "a_full": {"method": "m", "split": "full"}}}
    assert tune.choose_run(runs, "m", None, None) == ("a_full", "m", "full", None)
    assert tune.choose_run(runs, "m", "sub", None)[:3] == ("a_sub", "m", "sub")
    assert tune.choose_run(runs, None, None, "a_stage2")[:3] == ("a_stage2", "m", "full")
    assert tune.choose_run(runs, "x", "full", None) == ("tune_x_full", "x", "full", {"method": "x", "split": "full"})
    with pytest.raises(SewerbenchError, match="--run a_sub trains on split 'sub'"):
        tune.choose_run(runs, None, "full", "a_sub")
    assert tune.parse_objective("F2_CIW,F1_Normal") == ("F2_CIW", "F1_Normal")
    rows = [{"val_F2_CIW": 0.2, "ema_val_F2_CIW": 0.3, "val_F1_Normal": 0.9, "ema_val_F1_Normal": 0.1},
            {"val_F2_CIW": 0.3, "ema_val_F2_CIW": float("nan"), "val_F1_Normal": 0.5}]
    assert tune.objective_values(rows, ["F2_CIW", "F1_Normal"]) == [0.3, 0.1]  # first best: epoch 1 EMA
    assert tune.epoch_value(rows[1], "F2_CIW") == 0.3
    with pytest.raises(SewerbenchError, match="no epoch has a finite validation mAP"):
        tune.objective_values(rows, ["mAP"])
    assert [tune.hydra_value(v) for v in (1e-05, 0.5, 3, None, True, "bottleneck", [0.9, 0.999], "a b")] == [
        "1e-05", "0.5", "3", "null", "true", "bottleneck", "[0.9,0.999]", "'a b'"]


def test_trial_seeded_sampler_depends_on_trial_number_only():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=tune.make_sampler({"sampler": {"n_startup_trials": 5}}, 3, False))
        draws.append([study.ask().suggest_float("x", 0, 1) for _ in range(3)])
    assert draws[0] == draws[1] and len(set(draws[0])) == 3


# ----------------------------------------------------------------------------- faults, pruning
def test_nan_trial_is_failed_with_its_reason_and_the_study_goes_on(tiny, tmp_path):
    _, params = tiny
    p = copy.deepcopy(params)
    for family in FAMILIES:
        p["tune"]["spaces"][family]["optimizer.lr"]["choices"] = [GOOD, NAN]
    out = tmp_path / "out"
    _precreate(out, enqueue=[{"optimizer.lr": NAN, "loss.gamma_neg": 1.0}])
    assert _tune(_write(tmp_path, p), out, "--trials", "3") == 0
    trials = _study(out).get_trials()
    assert len(trials) == 3
    first = trials[0]
    assert first.state == optuna.trial.TrialState.FAIL
    assert "training diverged: loss nan" in first.user_attrs["fail_reason"]
    assert tune.tally(trials)["done"] == 3 and tune.tally(trials)["failed"] >= 1
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    md = (out / "summary.md").read_text()
    assert "| 0 | failed | run tiny: training diverged: loss nan" in md


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruning_prunes_clearly_worse_trials(tiny, tmp_path, pruner):
    _, params = tiny
    p = copy.deepcopy(params)
    p["tune"]["pruner"].update({"min_resource": 1, "reduction_factor": 2})
    out = tmp_path / "out"
    good, bad = {"optimizer.lr": GOOD, "loss.gamma_neg": 2.0}, {"optimizer.lr": BAD, "loss.gamma_neg": 2.0}
    _precreate(out, enqueue=[good, good, bad, bad])
    assert _tune(_write(tmp_path, p), out, "--trials", "4", "--pruner", pruner, "--set", "epochs=3") == 0
    trials = _study(out).get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in trials]
    assert all(t.params["optimizer.lr"] == BAD for t in pruned)
    assert all(t.user_attrs["epochs"] < 3 for t in pruned)  # stopped before the last epoch
    assert (out / "plots" / "intermediate_values.png").is_file()


# ----------------------------------------------------------------------------- outputs
@pytest.fixture(scope="module")
def searched(tiny, tmp_path_factory):
    """A 3-trial study of the tiny run with --set epochs=2 (shared by the output tests)."""
    _, params = tiny
    tmp = tmp_path_factory.mktemp("tune_search")
    path = _write(tmp, params)
    out = tmp / "out"
    assert _tune(path, out, "--trials", "3", "--set", "epochs=2", "--set", "eval_batch_size=16") == 0
    return path, out


def test_outputs_summary_csv_plots(searched):
    _, out = searched
    study = _study(out)
    best = max((t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE),
               key=lambda t: t.value)
    md = (out / "summary.md").read_text()
    assert "requested: 3; done: 3" in md and f"Trial {best.number}: mAP = {best.value:.4f}" in md
    assert "`epochs` | `2` (--set / fixed)" in md
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 3 and df["number"].is_unique and "param.optimizer.lr" in df
    for png in ("history.png", "importances.png", "parallel_coordinate.png"):
        assert (out / "plots" / png).stat().st_size > 1000, png
    assert study.user_attrs["sewerbench"]["objectives"] == ["mAP"]


def test_best_yaml_retrains_the_best_trial_to_its_value(searched, tmp_path):
    path, out = searched
    study = _study(out)
    best = study.best_trial
    overlay = yaml.safe_load((out / "best.yaml").read_text())
    body = overlay["runs"]["tiny"]
    assert body["optimizer"]["lr"] == best.params["optimizer.lr"]
    assert body["epochs"] == 2 and body["selection"] == "mAP"
    # params.yaml + the overlay, trained by `sewerbench train` (the resolver reads runs.tiny.*)
    params = yaml.safe_load(path.read_text())
    merged = deep_merge(params, overlay)
    mpath = _write(tmp_path, merged, "merged.yaml")
    assert main(["train", "--params", str(mpath), "tiny", "--out", str(tmp_path / "retrain")]) == 0
    rows = pd.read_csv(tmp_path / "retrain" / "history.csv").to_dict("records")
    assert tune.objective_values(rows, ["mAP"])[0] == best.value
    summary = json.loads((tmp_path / "retrain" / "train_summary.json").read_text())
    assert summary["selection_score"] == best.value


def test_best_args_through_dvc_set_param_equal_best_yaml(searched, tmp_path):
    """`dvc exp run $(cat best.args)`: DVC's own -S parser (Hydra overrides) on a params.yaml
    copy gives the same params as merging best.yaml."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    path, out = searched
    words = (out / "best.args").read_text().split()
    assert words[-2:] == ["train@tiny", "evaluate@tiny"]
    overrides = [w for i, w in enumerate(words) if i and words[i - 1] == "-S"]
    assert overrides and all(w.startswith("++runs.tiny.") for w in overrides)
    copy_path = tmp_path / "params.yaml"
    copy_path.write_text(path.read_text())
    hydra.apply_overrides(copy_path, overrides)
    via_dvc = yaml.safe_load(copy_path.read_text())
    via_yaml = deep_merge(yaml.safe_load(path.read_text()), yaml.safe_load((out / "best.yaml").read_text()))
    assert via_dvc["runs"] == via_yaml["runs"]


def test_two_objective_pareto_mode(tiny, tmp_path):
    _, params = tiny
    out = tmp_path / "out"
    assert _tune(_write(tmp_path, params), out, "--trials", "3", "--objective", "F2_CIW,F1_Normal") == 0
    study = optuna.load_study(study_name="tiny-F2_CIW+F1_Normal", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.directions) == 2 and len(study.get_trials()) == 3
    assert (out / "plots" / "pareto_front.png").is_file()
    md = (out / "summary.md").read_text()
    assert "NSGA-II" in md and "Pareto front" in md
    front = {t.number for t in study.best_trials}
    assert {int(f.stem.split("_")[1]) for f in (out / "pareto").glob("trial_*.yaml")} == front
    assert yaml.safe_load((out / "best.yaml").read_text())["runs"]["tiny"]["selection"] == "F2_CIW"
    # resuming with another objective is refused
    assert _tune(_write(tmp_path, params), out, "--trials", "3", "--objective", "F2_CIW",
                 "--study", "tiny-F2_CIW+F1_Normal") == 2


def test_workers_share_out_threads_and_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert tune._gpu_list("auto") == ["3", "5"] and tune._gpu_list("cuda") == ["3", "5"]
    assert tune._gpu_list("cpu") == [] and tune._gpu_list("cuda:1") == []
    monkeypatch.setattr(tune.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert tune.worker_threads({}, 1) is None and tune.worker_threads({}, 3) == 2
    assert tune.worker_threads({"threads_per_worker": 4}, 3) == 4
