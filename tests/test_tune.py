"""`sewerbench tune`: Optuna search with a stand-in objective and with a tiny real run."""
from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest

from benchmark import tune
from benchmark.errors import SewerbenchError

SPACE = {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "loss.gamma_neg": {"type": "float", "low": 0.0, "high": 4.0},
         "batch_size": {"type": "int", "low": 8, "high": 32, "step": 8},
         "aug.flip": {"type": "categorical", "choices": [0.0, 0.5]}}


def _params():
    return {"seed": 0, "runs": {}, "tune": {"seed": 7, "metric": "F2_CIW",
                                             "pruner": {"n_startup_trials": 2},
                                             "spaces": {"q2l": SPACE}}}


def _resolve(params, run):
    spec = params["runs"][run]
    return {"run": run, "method": spec["method"], "family": "q2l", "seed": 0,
            "optimizer": {"name": "adam", "lr": 1e-3}, "loss": {"name": "asl"}, "epochs": 4}


def _fake_train(cfg, out_dir, callback=None, **_):
    """Score peaks at lr = 1e-2 and gamma_neg = 2; four 'epochs', improving each epoch."""
    import math
    lr, g = cfg["optimizer"]["lr"], cfg["loss"]["gamma_neg"]
    assert cfg["optimizer"]["name"] == "adam"  # untouched keys survive
    best = 1.0 - 0.1 * abs(math.log10(lr) + 2) - 0.05 * abs(g - 2)
    for e in range(cfg["epochs"]):
        callback(e, {"epoch": e + 1, "val_F2_CIW": best * (e + 1) / 4, "ema_val_F2_CIW": best * e / 4})
    return {"selection_score": best}


def test_study_writes_best_params_and_trials(tmp_path):
    res = tune.run_study(_params(), "maq2l", 8, tmp_path, train_fn=_fake_train, resolve_fn=_resolve)
    assert res["n_trials"] == 8 and res["n_complete"] + res["n_pruned"] == 8
    assert res["n_complete"] >= 2
    best = json.loads((tmp_path / "best_params.json").read_text())
    assert best["best_params"] == res["best_params"] and set(best["best_params"]) == set(SPACE)
    assert best["method"] == "maq2l" and best["metric"] == "F2_CIW"
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 8 and "param.optimizer.lr" in trials.columns
    assert best["best_value"] == pytest.approx(trials["value"].max())
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}


def test_study_is_seeded(tmp_path):
    a = tune.run_study(_params(), "maq2l", 4, tmp_path / "a", train_fn=_fake_train, resolve_fn=_resolve)
    b = tune.run_study(_params(), "maq2l", 4, tmp_path / "b", train_fn=_fake_train, resolve_fn=_resolve)
    ta = pd.read_csv(tmp_path / "a" / "trials.csv")
    tb = pd.read_csv(tmp_path / "b" / "trials.csv")
    assert ta["param.optimizer.lr"].tolist() == tb["param.optimizer.lr"].tolist()
    assert a["best_value"] == b["best_value"]


def test_pruning_via_callback(tmp_path):
    calls = []

    def train(cfg, out_dir, callback=None, **_):
        bad = cfg["optimizer"]["lr"] > 1e-2
        for e in range(5):
            calls.append(e)
            callback(e, {"val_F2_CIW": 0.01 if bad else 0.5 + 0.01 * e})
        return {}

    params = _params()
    params["tune"]["spaces"]["q2l"] = {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}
    res = tune.run_study(params, "maq2l", 12, tmp_path, train_fn=train, resolve_fn=_resolve)
    assert res["n_pruned"] >= 1
    assert res["best_params"]["optimizer.lr"] <= 1e-2
    assert res["best_value"] == pytest.approx(0.54)


def test_storage_resumes_study(tmp_path):
    db = f"sqlite:///{tmp_path / 'study.db'}"
    tune.run_study(_params(), "maq2l", 2, tmp_path, study_name="s", storage=db, train_fn=_fake_train,
                   resolve_fn=_resolve)
    res = tune.run_study(_params(), "maq2l", 2, tmp_path, study_name="s", storage=db, train_fn=_fake_train,
                         resolve_fn=_resolve)
    assert res["n_trials"] == 4


def test_space_lookup_and_helpers():
    p = _params()
    assert tune.search_space(p, "maq2l", "q2l") == SPACE
    with pytest.raises(SewerbenchError, match="no search space"):
        tune.search_space(p, "xie2019", "sewerml")
    cfg = tune.apply_dotted({"a": {"b": 1, "c": 2}}, {"a.b": 5, "x.y": 3})
    assert cfg == {"a": {"b": 5, "c": 2}, "x": {"y": 3}}
    assert tune.epoch_metric({"val_F2_CIW": 0.2, "ema_val_F2_CIW": 0.3}, "F2_CIW") == 0.3
    assert tune.epoch_metric({"val_loss": 1.0}, "F2_CIW") is None
    assert tune.objective_value({"final": {"F2_CIW": 0.4}}, "F2_CIW") == 0.4
    assert tune.objective_value({"final": {"val_mAP": 0.3}}, "mAP") == 0.3
    assert tune.objective_value({"selection_metric": "F2_CIW", "selection_score": 0.7,
                                 "final": {"val_F2_CIW": 0.1}}, "F2_CIW") == 0.7
    with pytest.raises(SewerbenchError, match="no 'mAP'"):
        tune.objective_value({"final": {}}, "mAP")


def test_tiny_real_run(tmp_path):
    """Two trials of the engine's tiny CNN on the tiny dataset (a few seconds)."""
    from benchmark.train.testing import make_tiny_dataset, tiny_params

    root = make_tiny_dataset(tmp_path / "data", n_train=32, n_val=16, n_test=8)
    params = tiny_params(root, epochs=2)
    params["tune"] = {"seed": 0, "metric": "mAP",
                      "spaces": {"q2l": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}}
    res = tune.run_study(params, "q2l", 2, tmp_path / "tune", run="tiny")
    assert res["n_complete"] == 2 and 0 < res["best_value"] <= 1
    assert (tmp_path / "tune" / "trials" / "0000" / "history.csv").is_file()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
