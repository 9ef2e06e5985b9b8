"""`sewerbench train` / `predict --run` never lose data and refuse leaks: a finished run is not
replaced without --force, a folder another command made is not written into, an output inside an
input is refused, nothing is written before the inputs are validated, and splits that share
images are refused."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.config import resolve_run
from benchmark.errors import SewerbenchError
from benchmark.train import train_run
from helpers import make_tiny_dataset, tiny_params


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = make_tiny_dataset(tmp_path_factory.mktemp("guard"))
    params = tiny_params(root, epochs=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, params


def test_finished_run_is_never_silently_replaced(tiny, tmp_path):
    root, params = tiny
    out = tmp_path / "run"
    train_run(resolve_run(params, "tiny"), out)
    before = (out / "scores_val.csv").read_bytes()
    with pytest.raises(SewerbenchError, match="holds a finished run"):
        train_run(resolve_run(params, "tiny", {"optimizer": {"lr": 0.1}}), out)
    assert (out / "scores_val.csv").read_bytes() == before
    assert json.loads((out / "config.json").read_text())["optimizer"]["lr"] == 3e-3   # config untouched
    with pytest.raises(SewerbenchError, match="configuration changed"):
        train_run(resolve_run(params, "tiny", {"optimizer": {"lr": 0.1}}), out, resume=True)
    train_run(resolve_run(params, "tiny", {"optimizer": {"lr": 0.1}}), out, force=True)
    assert json.loads((out / "config.json").read_text())["optimizer"]["lr"] == 0.1


def test_foreign_folder_and_outputs_inside_inputs_are_refused(tiny, tmp_path, capsys):
    root, params = tiny
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SewerbenchError, match="refus|not made by|--force"):
        train_run(resolve_run(params, "tiny"), foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(SewerbenchError, match="data.prepared"):
        train_run(resolve_run(params, "tiny"), root / "prepared" / "run")
    assert not (root / "prepared" / "run").exists()
    # predict --run --out equal to the split CSV it reads is refused, the split is untouched
    out = tmp_path / "r"
    train_run(resolve_run(params, "tiny"), out)
    csv = tmp_path / "split.csv"
    csv.write_bytes((root / "prepared/full/val.csv").read_bytes())
    before = csv.read_bytes()
    assert main(["predict", "--run", str(out), "--csv", str(csv), "--out", str(csv)]) == 2
    assert "--csv" in capsys.readouterr().err and csv.read_bytes() == before


def test_rejected_run_writes_nothing(tiny, tmp_path, capsys):
    root, _ = tiny
    p = str(root / "params.yaml")
    out = tmp_path / "bad"
    assert main(["train", "tiny", "--params", p, "--out", str(out), "--set", "epochs=three"]) == 2
    assert "epochs: expected an integer" in capsys.readouterr().err and not out.exists()
    assert main(["train", "tiny", "--params", p, "--out", str(out), "--set", "optimizer.lrr=1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err and not out.exists()
    params = tiny_params(root, epochs=1)
    params["data"]["prepared"] = str(tmp_path / "missing")
    with pytest.raises(SewerbenchError, match="not found"):
        train_run(resolve_run(params, "tiny"), out)
    assert not out.exists()


def test_leaks_between_splits_are_refused(tiny, tmp_path):
    root, params = tiny
    prep = tmp_path / "prepared"
    (prep / "full").mkdir(parents=True)
    train = pd.read_csv(root / "prepared/full/train.csv")
    val = pd.read_csv(root / "prepared/full/val.csv")
    train.to_csv(prep / "full/train.csv", index=False)
    pd.concat([val, train.iloc[:3]]).to_csv(prep / "full/val.csv", index=False)
    p = tiny_params(root, epochs=1)
    p["data"]["prepared"] = str(prep)
    with pytest.raises(SewerbenchError, match=r"3 image\(s\) are in both the train split .* and the val split"):
        train_run(resolve_run(p, "tiny"), tmp_path / "leak")
    assert not (tmp_path / "leak").exists()
    train.to_csv(prep / "full/val.csv", index=False)        # val identical to train
    with pytest.raises(SewerbenchError, match="leak between splits"):
        train_run(resolve_run(p, "tiny"), tmp_path / "same")
