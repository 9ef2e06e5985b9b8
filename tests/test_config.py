"""Run configuration: merge order, profile nulls, epoch rescaling, --set, errors, params.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import deep_merge, load_params, parse_set, resolve_run
from benchmark.errors import SewerbenchError

ROOT = Path(__file__).resolve().parents[1]


def _params():
    return {
        "seed": 3,
        "profile": "smoke",
        "data": {"prepared": "P", "cache": "C", "smoke": {"images": "IMG"}, "paper": {"images": None}},
        "profiles": {
            "smoke": {"size": "tiny", "epochs": 2, "batch_size": 8, "image_size": 32,
                      "allow_pretrained": False, "amp": None},
            "paper": {"size": "reference", "epochs": None, "batch_size": None, "image_size": None},
        },
        "recipes": {
            "sewerml": {"pretrained": False, "epochs": 90, "batch_size": 256, "amp": True,
                        "optimizer": {"name": "sgd", "lr": 0.1, "lr_batch_scale": 256},
                        "schedule": {"name": "multistep", "milestones": [30, 60, 80], "gamma": 0.1},
                        "selection": "val_loss"},
            "maq2l": {"pretrained": True, "epochs": 40, "batch_size": 16, "stop_epoch": 20,
                      "optimizer": {"name": "adam", "lr": 1e-5}, "selection": "mAP"},
        },
        "runs": {
            "x_full": {"method": "xie2019", "recipe": "sewerml", "split": "full"},
            "xb": {"method": "xie2019_binary", "recipe": "sewerml", "split": "full", "epochs": 9},
            "m_sub": {"method": "maq2l", "split": "sub_0.0625", "model": {"mask_attention": False}},
        },
    }


def test_merge_order_and_profile_nulls():
    p = _params()
    c = resolve_run(p, "x_full")
    assert (c["size"], c["epochs"], c["batch_size"], c["image_size"]) == ("tiny", 2, 8, 32)
    assert c["amp"] is True  # profile null keeps the recipe's value
    assert c["seed"] == 3 and c["recipe"] == "sewerml" and c["family"] == "sewerml"
    assert c["optimizer"]["lr"] == 0.1 and c["optimizer"]["name"] == "sgd"
    assert c["optimizer"]["momentum"] == 0.9  # engine default survives the recipe merge
    assert c["selection"] == "val_loss" and c["selection_mode"] == "min"
    assert c["transform"] == "sewerml" and c["num_outputs"] == 17 and not c["binary"]
    paper = resolve_run({**p, "profile": "paper"}, "x_full")
    assert (paper["epochs"], paper["batch_size"], paper["image_size"]) == (90, 256, 224)
    assert paper["schedule"]["milestones"] == [30, 60, 80]


def test_epoch_rescaling_and_run_overrides():
    p = _params()
    c = resolve_run(p, "x_full")
    assert c["schedule"]["milestones"] == [1, 2]   # 30,60,80 of 90 -> of 2
    c9 = resolve_run(p, "xb")                      # the run's epochs win over the profile
    assert c9["epochs"] == 9 and c9["schedule"]["milestones"] == [3, 6, 8]
    assert c9["binary"] and c9["num_outputs"] == 1 and c9["target"] == "binary"
    m = resolve_run(p, "m_sub")
    assert m["recipe"] == "maq2l"                  # recipe named like the method
    assert m["stop_epoch"] == 1                    # 20 of 40 -> of 2 (at most epochs - 1)
    assert m["pretrained"] is False                # the smoke profile forbids downloads
    assert m["model"] == {"mask_attention": False}
    assert m["image_size"] == 32 and m["transform"] == "imagenet"


def test_data_paths():
    c = resolve_run(_params(), "m_sub")
    d = c["data"]
    assert d["images"] == "IMG" and d["cache"] == "C"
    assert d["train_csv"] == str(Path("P/sub_0.0625/train.csv"))
    assert d["val_csv"] == str(Path("P/sub_0.0625/val.csv"))
    assert d["full_val_csv"] == str(Path("P/full/val.csv"))
    assert d["test_csv"] == str(Path("P/full/test.csv"))


def test_set_overrides_and_seed():
    o = parse_set(["epochs=5", "optimizer.lr=1e-3", "aug.flip=0.0", "model.x=[1, 2]", "device=cpu"])
    assert o == {"epochs": 5, "optimizer": {"lr": 1e-3}, "aug": {"flip": 0.0}, "model": {"x": [1, 2]},
                 "device": "cpu"}
    c = resolve_run(_params(), "x_full", o, seed=11)
    assert c["epochs"] == 5 and c["optimizer"]["lr"] == 1e-3 and c["optimizer"]["name"] == "sgd"
    assert c["seed"] == 11
    assert resolve_run(_params(), "x_full", {"profile": "paper"})["size"] == "reference"
    with pytest.raises(SewerbenchError):
        parse_set(["novalue"])
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}, skip_none=True) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize("mutate, needle", [
    (lambda p: p["runs"].update(bad={"method": "nope"}), "unknown method"),
    (lambda p: p["runs"].update(bad={"method": "q2l"}), "no recipe"),
    (lambda p: p["runs"].update(bad={"method": "xie2019", "recipe": "sewerml", "target": "x"}), "target"),
    (lambda p: p["runs"].update(bad={"method": "xie2019", "recipe": "sewerml", "selection": "acc"}), "selection"),
    (lambda p: p.update(profile="nope") or p["runs"].update(bad={"method": "xie2019", "recipe": "sewerml"}),
     "no profile"),
])
def test_errors_are_one_line(mutate, needle):
    p = _params()
    mutate(p)
    with pytest.raises(SewerbenchError) as e:
        resolve_run(p, "bad")
    assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SewerbenchError, match="no run named"):
        resolve_run(_params(), "missing")


def test_load_params_errors(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("a: [1,\n")
    with pytest.raises(SewerbenchError, match="invalid YAML"):
        load_params(f)
    with pytest.raises(SewerbenchError, match="cannot read"):
        load_params(tmp_path / "none.yaml")


def test_every_run_of_params_yaml_resolves():
    params = load_params(ROOT / "params.yaml")
    if not params.get("runs") or not params.get("recipes"):
        pytest.skip("params.yaml has no runs/recipes yet")
    for profile in params["profiles"]:
        for name in params["runs"]:
            c = resolve_run({**params, "profile": profile}, name)
            assert c["epochs"] >= 1 and c["batch_size"] >= 1 and c["image_size"] > 0
            if profile == "paper" and c["kind"] == "torch":
                assert c["size"] == "reference"
                ref = {"maq2l": (40, 16, 448), "q2l": (40, 16, 448), "asl": (80, 128, 448)}
                if c["recipe"] in ref:
                    assert (c["epochs"], c["batch_size"], c["image_size"]) == ref[c["recipe"]]
                if c["recipe"] == "sewerml":
                    assert (c["epochs"], c["batch_size"]) == (90, 256)
                    assert c["image_size"] == (299 if c["method"] == "chen2018" else 224)
            if profile == "smoke":
                assert c["pretrained"] is False and c["size"] == "tiny"
