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
    assert (c.size, c.epochs, c.batch_size, c.image_size) == ("tiny", 2, 8, 32)
    assert c.runtime.amp is True  # profile null keeps the recipe's value
    assert c.seed == 3 and c.recipe == "sewerml" and c.family == "sewerml"
    assert c.optimizer.lr == 0.1 and c.optimizer.name == "sgd"
    assert c.optimizer.momentum == 0.9  # dataclass default survives the recipe merge
    assert c.selection == "val_loss" and c.selection_mode == "min"
    assert c.transform == "sewerml" and c.num_outputs == 17 and not c.binary
    paper = resolve_run({**p, "profile": "paper"}, "x_full")
    assert (paper.epochs, paper.batch_size, paper.image_size) == (90, 256, 224)
    assert paper.schedule.milestones == (30, 60, 80)


def test_epoch_rescaling_and_run_keys():
    p = _params()
    c = resolve_run(p, "x_full")
    assert c.schedule.milestones == (1, 2)   # 30,60,80 of 90 -> of 2
    c9 = resolve_run(p, "xb")                      # the run's epochs win over the profile
    assert c9.epochs == 9 and c9.schedule.milestones == (3, 6, 8)
    assert c9.binary and c9.num_outputs == 1 and c9.target == "binary"
    m = resolve_run(p, "m_sub")
    assert m.recipe == "maq2l"                  # recipe named like the method
    assert m.stop_epoch == 1                    # 20 of 40 -> of 2 (at most epochs - 1)
    assert m.pretrained is False                # the smoke profile forbids downloads
    assert dict(m.model) == {"mask_attention": False}
    assert m.image_size == 32 and m.transform == "imagenet"


def test_data_paths():
    c = resolve_run(_params(), "m_sub")
    d = c.data
    assert d.images == "IMG" and d.cache == "C"
    assert d.train_csv == str(Path("P/sub_0.0625/train.csv"))
    assert d.val_csv == str(Path("P/sub_0.0625/val.csv"))
    assert d.full_val_csv == str(Path("P/full/val.csv"))
    assert d.test_csv == str(Path("P/full/test.csv"))


def test_set_overrides():
    o = parse_set(["epochs=5", "optimizer.lr=1e-3", "aug.flip=0.0", "model.batchnorm=true", "device=cpu"])
    assert o == {"epochs": 5, "optimizer": {"lr": 1e-3}, "aug": {"flip": 0.0}, "model": {"batchnorm": True},
                 "device": "cpu"}
    o.pop("model")
    c = resolve_run(_params(), "x_full", o, seed=11)
    assert c.epochs == 5 and c.optimizer.lr == 1e-3 and c.optimizer.name == "sgd"
    assert c.seed == 11 and c.runtime.device == "cpu" and c.aug.flip == 0.0
    assert resolve_run(_params(), "x_full", {"profile": "paper"}).size == "reference"
    with pytest.raises(SewerbenchError):
        parse_set(["novalue"])
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}, skip_none=True) == {"a": {"b": 1, "c": 2}}


def test_precedence_of_every_layer():
    """defaults <- recipe <- profile <- profile.recipes <- profile.methods <- run <- --set."""
    p = _params()
    p["profiles"]["smoke"]["recipes"] = {"sewerml": {"grad_clip": 1.0, "eval_batch_size": 7}}
    p["profiles"]["smoke"]["methods"] = {"xie2019": {"grad_clip": 2.0}}
    p["recipes"]["sewerml"]["aux_loss_weight"] = 0.3
    assert resolve_run(p, "x_full").aux_loss_weight == 0.3           # recipe over the default 0.4
    c = resolve_run(p, "x_full")
    assert c.grad_clip == 2.0 and c.runtime.eval_batch_size == 7      # methods over recipes entry
    p["runs"]["x_full"]["grad_clip"] = 3.0
    assert resolve_run(p, "x_full").grad_clip == 3.0                   # run over profile
    assert resolve_run(p, "x_full", {"grad_clip": 4.0}).grad_clip == 4.0   # --set over run
    assert resolve_run(_params(), "x_full").aux_loss_weight == 0.4    # the one default
    assert resolve_run(_params(), "x_full").ema.decay == 0.9997


def test_profile_splits_layer():
    """profiles.<p>.splits.<split>: after profile.methods, before the run entry; only the runs
    on that split, only under that profile; --set split= picks the layer; no split key inside."""
    p = _params()
    p["profiles"]["smoke"]["methods"] = {"maq2l": {"epochs": 5, "grad_clip": 2.0}}
    p["profiles"]["smoke"]["splits"] = {"sub_0.0625": {"epochs": 32}}
    c = resolve_run(p, "m_sub")
    assert c.epochs == 32 and c.grad_clip == 2.0                       # splits over methods
    assert resolve_run(p, "x_full").epochs == 2                        # another split: untouched
    assert resolve_run(p, "x_full", {"split": "sub_0.0625"}).epochs == 32
    assert resolve_run({**p, "profile": "paper"}, "m_sub").epochs == 40   # the paper profile: recipe
    p["runs"]["m_sub"]["epochs"] = 7
    assert resolve_run(p, "m_sub").epochs == 7                         # run entry over splits
    assert resolve_run(p, "m_sub", {"epochs": 8}).epochs == 8
    p["profiles"]["smoke"]["splits"]["sub_0.0625"]["epocs"] = 1
    with pytest.raises(SewerbenchError, match=r"profiles.smoke.splits.sub_0.0625: unknown key 'epocs'"):
        resolve_run(p, "m_sub")
    p = _params()
    p["profiles"]["smoke"]["splits"] = {"full": {"split": "sub_0.0625"}}
    with pytest.raises(SewerbenchError, match=r"profiles.smoke.splits.full.split: a split's layer cannot"):
        resolve_run(p, "x_full")


def test_derived_values_follow_set():
    """--set epochs recomputes the milestones, --set selection the selection mode, --set target the outputs."""
    p = _params()
    c = resolve_run(p, "x_full", {"epochs": 9})
    assert c.schedule.milestones == (3, 6, 8) and c.reference_epochs == 90
    assert resolve_run(p, "x_full", {"selection": "F2_CIW"}).selection_mode == "max"
    assert resolve_run(p, "x_full", {"target": "binary"}).num_outputs == 1
    m = resolve_run(p, "m_sub", {"epochs": 10})
    assert m.stop_epoch == 5                   # 20 of 40 -> of 10
    assert resolve_run(p, "m_sub", {"profile": "paper"}).pretrained is True


@pytest.mark.parametrize("over, needle", [
    ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"optimizer": {"lrr": 1e-3}}, "unknown key 'optimizer.lrr' (did you mean 'lr'?)"),
    ({"ema": {"decay_rate": 0.9}}, "unknown key 'ema.decay_rate' (did you mean 'decay'?)"),
    ({"data": {"prepard": "x"}}, "unknown key 'data.prepard' (did you mean 'prepared'?)"),
])
def test_unknown_keys_rejected_with_did_you_mean(over, needle):
    with pytest.raises(SewerbenchError) as e:
        resolve_run(_params(), "m_sub", over)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("over, needle", [
    ({"epochs": "three"}, "epochs: expected an integer, got 'three'"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr: expected a number, got 'fast'"),
    ({"amp": "yes"}, "amp: expected true or false"),
    ({"optimizer": {"name": "adamm"}}, "optimizer.name: expected one of 'adam', 'adamw', 'sgd'"),
    ({"batch_size": 2.5}, "batch_size: expected an integer"),
    ({"optimizer": "sgd"}, "optimizer: expected a mapping"),
])
def test_wrong_types_name_key_and_type(over, needle):
    with pytest.raises(SewerbenchError) as e:
        resolve_run(_params(), "x_full", over)
    assert needle in str(e.value), str(e.value)


def test_unknown_keys_in_params_layers():
    p = _params()
    p["recipes"]["sewerml"]["lr"] = 0.1
    with pytest.raises(SewerbenchError, match=r"recipes.sewerml: unknown key 'lr'"):
        resolve_run(p, "x_full")
    p = _params()
    p["profiles"]["smoke"]["epocs"] = 1
    with pytest.raises(SewerbenchError, match=r"profiles.smoke: unknown key 'epocs' \(did you mean 'epochs'\?\)"):
        resolve_run(p, "x_full")
    p = _params()
    p["runs"]["x_full"]["spilt"] = "full"
    with pytest.raises(SewerbenchError, match=r"runs.x_full: unknown key 'spilt' \(did you mean 'split'\?\)"):
        resolve_run(p, "x_full")
    p = _params()
    p["tabels"] = {}
    with pytest.raises(SewerbenchError, match=r"unknown key 'tabels' \(did you mean 'tables'\?\)"):
        resolve_run(p, "x_full")


def test_config_round_trips_and_is_frozen():
    import dataclasses
    import json

    from benchmark.config import RunConfig

    c = resolve_run(_params(), "m_sub")
    back = RunConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 3
    with pytest.raises(TypeError):
        c.model["mask_attention"] = True
    bad = c.to_dict()
    bad["optimizer"]["momentun"] = 0.9
    with pytest.raises(SewerbenchError, match="unknown key 'optimizer.momentun'"):
        RunConfig.from_dict(bad, where="config.json")


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
            assert c.epochs >= 1 and c.batch_size >= 1 and c.image_size > 0
            if profile == "paper" and c.kind == "torch":
                assert c.size == "reference"
                ref = {"maq2l": (40, 16, 448), "q2l": (40, 16, 448), "asl": (80, 128, 448)}
                if c.recipe in ref:
                    assert (c.epochs, c.batch_size, c.image_size) == ref[c.recipe]
                if c.recipe == "sewerml":
                    assert (c.epochs, c.batch_size) == (90, 256)
                    assert c.image_size == (299 if c.method == "chen2018" else 224)
            if profile == "smoke":   # never a download: the stand-in file or from scratch
                assert c.size == "tiny" and c.pretrained is not True
                assert c.pretrained is False or c.pretrained.startswith("data/pretrained/")


def test_native_bf16_comes_from_the_cpu_flags(monkeypatch):
    """oneDNN says yes to bf16 on any AVX512 CPU (it emulates it); the CPU's own flags decide."""
    from benchmark import cpus

    monkeypatch.setattr(cpus, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert cpus.cpu_supports_bf16() is False
    for flag in ("avx512_bf16", "amx_bf16", "bf16"):
        monkeypatch.setattr(cpus, "cpu_flags", lambda flag=flag: frozenset({"avx512f", flag}))
        assert cpus.cpu_supports_bf16() is True


@pytest.mark.parametrize("native", [True, False])
def test_amp_native_only_trains_in_fp32_where_bf16_is_emulated(monkeypatch, native):
    import torch

    from benchmark import cpus
    from benchmark.train.runtime import native_precision

    monkeypatch.setattr(cpus, "cpu_supports_bf16", lambda: native)
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = resolve_run(params, "maq2l_full")
    assert cfg.runtime.amp and cfg.runtime.amp_dtype == "bfloat16" and cfg.runtime.amp_native_only
    got = native_precision(cfg, torch.device("cpu"))
    if native:
        assert got is cfg
    else:
        assert not got.runtime.amp and got.runtime.eval_amp is False
        assert got.replace(runtime=cfg.runtime) == cfg          # nothing else changes
    # an explicit choice is kept: amp_native_only off, or not the CPU
    off = resolve_run(params, "maq2l_full", overrides={"amp_native_only": False})
    assert native_precision(off, torch.device("cpu")) is off
    assert native_precision(cfg, torch.device("meta")) is cfg
