"""Plots (PNG files from small inputs) and CAM extraction / localisation scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import cam, plots
from benchmark.metrics import evaluate

PNG = b"\x89PNG\r\n\x1a\n"


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 17)) < 0.2).astype(int)
    y[:, 14] = 0
    s = np.clip(0.6 * y + rng.random(y.shape) * 0.5, 0, 1)
    return s, y


def _is_png(p):
    return p.is_file() and p.read_bytes()[:8] == PNG


def test_metric_plots(tmp_path):
    s, y = _data()
    m1, m2 = evaluate(s, y), evaluate(np.clip(s * 0.8, 0, 1), y)
    assert _is_png(plots.plot_per_class_f2({"A": m1, "B": m2}, tmp_path / "f2.png"))
    pts = pd.DataFrame({"method": ["A", "A", "B", "B"], "fraction": [0.0625, 1, 0.0625, 1],
                        "F2": [40, 50, 35, 45], "lo": [38, 48, 33, 43], "hi": [42, 52, 37, 47]})
    assert _is_png(plots.plot_f2_vs_fraction(pts, tmp_path / "frac.png"))
    assert _is_png(plots.plot_pr_curves(s, y, tmp_path / "pr.png"))
    assert _is_png(plots.plot_cooccurrence(y, s, tmp_path / "co.png"))
    hist = {"r1": pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.5], "val_loss": [2.1, 1.7],
                                "val_mAP": [0.2, 0.3], "lr": [1e-3, 1e-4]})}
    assert _is_png(plots.plot_training_curves(hist, tmp_path / "curves.png"))
    assert plots.plot_training_curves({}, tmp_path / "none.png") is None
    loc = pd.DataFrame({"method": ["a cam", "b attention"], "pointing_game": [0.5, 0.3],
                        "cam_iou": [0.2, 0.1], "random_pointing": [0.05, 0.05]})
    assert _is_png(plots.plot_localisation(loc, tmp_path / "loc.png"))


def test_cooccurrence_is_conditional():
    y = np.zeros((4, 17), int)
    y[0, [0, 1]] = 1
    y[1, 0] = 1
    y[2, 1] = 1
    y[3, 1] = 1
    c = plots.cooccurrence(y)
    assert c[0, 0] == 1 and c[0, 1] == pytest.approx(0.5)   # P(OB | RB) = 1/2
    assert c[1, 0] == pytest.approx(1 / 3)                   # P(RB | OB) = 1/3
    assert c[5].sum() == 0                                   # absent class: zero row


def test_split_fraction_and_labels():
    assert plots.split_fraction("full") == 1.0 and plots.split_fraction("sub_0.0625") == 0.0625
    assert plots.split_fraction("frac_0.25") == 0.25
    with pytest.raises(ValueError):
        plots.split_fraction("weird")
    assert plots.cell_label({"method": "maq2l", "model": {"mask_attention": False}}) == "MA-Q2L (LC only)"
    assert plots.cell_label({"method": "maq2l"}) == "MA-Q2L (MA+LC)"
    assert plots.cell_label({"method": "q2l"}) == "Q2L"


def test_localisation_scores_exact():
    masks = np.zeros((2, 17, 8, 8), bool)
    masks[0, 0, :4, :4] = True     # image 0, RB top-left
    masks[1, 0, 4:, 4:] = True     # image 1, RB bottom-right
    masks[1, 3, :, :] = False      # DE present but empty mask: skipped
    labels = np.zeros((2, 17), int)
    labels[:, 0] = 1
    labels[1, 3] = 1
    maps = np.zeros((2, 17, 8, 8), np.float32)
    maps[0, 0, :4, :4] = 1.0       # exact hit and IoU 1
    maps[1, 0, :4, :4] = 1.0       # miss, IoU 0
    res = cam.localisation(list(maps), list(masks), list(labels))
    assert res["pairs"] == 2
    assert res["pointing_game"] == 0.5 and res["cam_iou"] == pytest.approx(0.5)
    assert res["pointing_game_class"][0] == 0.5 and np.isnan(res["pointing_game_class"][3])
    assert cam.random_baseline(list(masks), list(labels)) == pytest.approx(0.25)
    assert cam.cam_iou(np.ones((4, 4)), np.ones((4, 4), bool)) == 0.0  # constant map -> empty
    m = np.zeros((4, 4)); m[1, 2] = 3
    assert cam.pointing_hit(m, np.pad(np.ones((1, 1), bool), ((1, 2), (2, 1))))


@pytest.mark.parametrize("ma,lc", [(True, True), (False, False), (True, False)])
def test_extract_maps_from_q2l_models(ma, lc):
    from methods.maq2l import build_maq2l
    from methods.q2l import build_q2l

    torch.manual_seed(0)
    model = build_maq2l("tiny", image_size=64, mask_attention=ma, label_correlation=lc)
    x = torch.rand(2, 3, 64, 64)
    res = cam.extract_maps(model, x)
    assert res["logits"].shape == (2, 17)
    assert torch.allclose(res["logits"], model.eval()(x), atol=1e-6)   # hooks change nothing
    assert res["attention"].shape == (2, 17, 2, 2)
    assert torch.allclose(res["attention"].sum(dim=(2, 3)), torch.ones(2, 17), atol=1e-5)
    if ma:
        assert res["cam"].shape == (2, 17, 2, 2)
        w = model.transformer.cam_mask.cam.linear.weight
        feat = model.backbone(x)[0]
        expect = torch.einsum("kc,bchw->bkhw", w, model.input_proj(feat))
        assert torch.allclose(res["cam"], expect, atol=1e-5)
    else:
        assert "cam" not in res
    q = build_q2l("tiny", image_size=64)
    rq = cam.extract_maps(q, x)
    assert "cam" not in rq and rq["attention"].shape == (2, 17, 2, 2)
    assert not any(m._forward_hooks for m in q.modules())   # hooks removed


def test_cam_overlay_plot(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((17, 24, 32), bool) for _ in range(2)]
    masks[0][2, 5:10, 5:10] = True
    maps = {"m cam": [rng.random((17, 3, 4)) for _ in range(2)]}
    scores = {"m cam": {"pointing_game": 0.5, "cam_iou": 0.25}}
    p = plots.plot_cam_overlays(imgs, [masks[0], None], [2, 0], maps, tmp_path / "cam.png", scores)
    assert _is_png(p)
