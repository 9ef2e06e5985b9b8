"""The synthetic stand-in for ImageNet pretraining (benchmark.pretrain, `sewerbench pretrain`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.config.resolve import load_params, resolve_run
from benchmark.errors import SewerbenchError
from benchmark.pretrain import (BACKBONES, PretrainConfig, methods_using, pretrain,
                                render_pretext_set, weights_path)
from benchmark.synth.generate import render_row
from benchmark.synth.render import SCENE_PARAMETERS, render, render_scene, scene_parameters
from methods.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
LABELS = str(REPO / "data" / "splits")
TINY = dict(n_images=24, epochs=1, image_size=32, batch_size=8, workers=1, holdout=0.25)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "pretrained"
    meta = pretrain(PretrainConfig.from_dict(TINY), out, width=48, height=36, difficulty=0.5,
                    label_source=LABELS, progress=False)
    return out, meta


def test_render_scene_is_render_plus_scene():
    labels = np.zeros(17, int)
    labels[3] = 1
    a, ma = render(labels, 20, np.random.default_rng(5), 64, 48, 0.5)
    b, mb, scene = render_scene(labels, 20, np.random.default_rng(5), 64, 48, 0.5)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    vec, material = scene_parameters(scene, 20)
    assert vec.shape == (len(SCENE_PARAMETERS),) and np.all(np.abs(vec) <= 1.5)
    assert vec[0] == pytest.approx(2 * 0.2 - 1)          # water 20 % -> -0.6
    assert 0 <= material < 5


def test_pretext_set_is_deterministic_and_not_the_dataset_frames():
    cfg = PretrainConfig.from_dict({**TINY, "n_images": 6})
    x1, r1, m1 = render_pretext_set(cfg, 48, 36, 0.5, LABELS, progress=False)
    x2, r2, m2 = render_pretext_set(PretrainConfig.from_dict({**TINY, "n_images": 6, "workers": 2}),
                                    48, 36, 0.5, LABELS, progress=False)
    assert np.array_equal(x1, x2) and np.array_equal(r1, r2) and np.array_equal(m1, m2)
    assert x1.shape == (6, 32, 32, 3) and r1.shape == (6, len(SCENE_PARAMETERS))
    # frame i of the pretext set is not dataset frame i of the same seed (other random stream)
    frame, _ = render_row(cfg.seed, 1, np.zeros(17, int), 0, 48, 36, 0.5)
    from PIL import Image
    small = np.asarray(Image.fromarray(frame).resize((32, 32), Image.Resampling.BILINEAR))
    assert not np.array_equal(small, x1[0])


def test_pretrain_writes_loadable_weights(standin):
    out, meta = standin
    assert sorted(meta["backbones"]) == sorted(BACKBONES)
    assert json.loads((out / "meta.json").read_text())["pretext_targets"][-1] == "texture_family"
    assert set(meta["pretext_targets"]) == set(SCENE_PARAMETERS) | {"texture_family"}
    from methods.maq2l import build_maq2l
    from methods.q2l import build_q2l
    from methods.tresnet import build_tresnet_l

    trunk = read_checkpoint(weights_path(out, "resnet101_trunk"))
    for build in (build_maq2l, build_q2l):
        model = build(size="tiny", pretrained=str(weights_path(out, "resnet101_trunk")), image_size=64)
        got = model.backbone[0].body.state_dict() if hasattr(model.backbone, "__getitem__") \
            else model.backbone.body.state_dict()
        for k, v in trunk.items():
            if not k.endswith("num_batches_tracked"):     # FrozenBatchNorm2d keeps no counter
                assert torch.equal(got[k], v), k
    tres = read_checkpoint(weights_path(out, "tresnet_l"))
    assert not any(k.startswith("head.fc.") for k in tres)
    model = build_tresnet_l(size="tiny", pretrained=str(weights_path(out, "tresnet_l")))
    state = model.state_dict()
    for k, v in tres.items():
        assert torch.equal(state[k], v), k
    # the methods that load each stand-in come from the registry
    assert set(methods_using("resnet101_trunk")) == {"q2l", "maq2l"}
    assert methods_using("tresnet_l") == ["asl_tresnet_l"]


def test_pretrain_is_deterministic(standin, tmp_path):
    out, meta = standin
    again = pretrain(PretrainConfig.from_dict(TINY), tmp_path / "again", width=48, height=36,
                     difficulty=0.5, label_source=LABELS, progress=False)
    assert again == meta
    for b in BACKBONES:
        a, c = read_checkpoint(weights_path(out, b)), read_checkpoint(weights_path(tmp_path / "again", b))
        assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def test_pretext_training_learns(tmp_path):
    """On enough frames the held-out pretext loss falls below its first epoch's."""
    meta = pretrain(PretrainConfig.from_dict({**TINY, "n_images": 160, "epochs": 4, "batch_size": 16,
                                              "backbones": ["resnet101_trunk"], "lr": 3e-3}),
                    tmp_path / "p", width=48, height=36, difficulty=0.5, label_source=LABELS,
                    progress=False)
    hist = meta["backbones"]["resnet101_trunk"]["history"]
    assert hist[-1]["holdout_loss"] < hist[0]["holdout_loss"]


def test_wrong_weights_are_refused(standin):
    out, _ = standin
    from methods.maq2l import build_maq2l
    from methods.tresnet import build_tresnet_l

    with pytest.raises(SewerbenchError, match="do not fit|not a torchvision ResNet-101"):
        build_maq2l(size="tiny", pretrained=str(weights_path(out, "tresnet_l")), image_size=64)
    with pytest.raises(SewerbenchError, match="not found"):
        build_maq2l(size="tiny", pretrained=str(out / "missing.pt"), image_size=64)
    with pytest.raises(SewerbenchError):
        build_tresnet_l(size="tiny", pretrained=str(weights_path(out, "resnet101_trunk")))


@pytest.mark.parametrize("section, match", [
    ({"n_image": 4}, "pretrain.n_image: unknown key .did you mean n_images"),
    ({"epochs": "3"}, "pretrain.epochs: expected int"),
    ({"epochs": 0}, "pretrain.epochs: must be >= 1"),
    ({"image_size": 100}, "not a multiple of 32"),
    ({"holdout": 0.9}, "pretrain.holdout"),
    ({"backbones": ["vgg"]}, "pretrain.backbones"),
    ({"threads": 0}, "pretrain.threads"),
])
def test_config_errors(section, match):
    with pytest.raises(SewerbenchError, match=match):
        PretrainConfig.from_dict(section)


def test_resolver_loads_the_standin_where_the_recipe_says_pretrained():
    params = load_params(REPO / "params.yaml")
    runs = ("maq2l_full", "q2l_sub", "asl_tresnet_l_full", "resnet101_full", "tresnet_l_full")
    # the default smoke profile trains from scratch (the stand-in does not transfer yet) ...
    assert {r: resolve_run(params, r).pretrained for r in runs} == dict.fromkeys(runs, False)
    # ... and the stand-in switch: standin_weights plus the recipes' own `pretrained: true`
    on = yaml.safe_load(yaml.safe_dump(params))
    on["profiles"]["smoke"]["standin_weights"] = "data/pretrained"
    for recipe in ("maq2l", "q2l", "asl"):
        on["profiles"]["smoke"]["recipes"][recipe].pop("pretrained")
    params = on
    smoke = {r: resolve_run(params, r).pretrained for r in runs}
    assert smoke == {"maq2l_full": "data/pretrained/resnet101_trunk.pt",
                     "q2l_sub": "data/pretrained/resnet101_trunk.pt",
                     "asl_tresnet_l_full": "data/pretrained/tresnet_l.pt",
                     "resnet101_full": False, "tresnet_l_full": False}   # from scratch, as Sewer-ML
    paper = dict(params, profile="paper")
    assert resolve_run(paper, "maq2l_full").pretrained is True         # ImageNet, not the stand-in
    off = yaml.safe_load(yaml.safe_dump(params))
    off["profiles"]["smoke"]["standin_weights"] = None
    assert resolve_run(off, "maq2l_full").pretrained is True            # tiny: warns, random init


def test_cli_paper_profile_writes_only_meta(tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(["pretrain", "--params", str(REPO / "params.yaml"), "--profile", "paper",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".sewerbench-owner.json", "meta.json"]
    assert json.loads((out / "meta.json").read_text())["backbones"] == {}


def test_cli_refuses_a_foreign_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["pretrain", "--params", str(REPO / "params.yaml"), "--profile", "paper",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not create" in err[0]
    assert (out / "notes.txt").read_text() == "keep me"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**load_params(REPO / "params.yaml"), "pretrain": {"epoch": 2}}))
    assert main(["pretrain", "--params", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "pretrain.epoch: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
