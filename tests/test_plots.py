"""Plot helpers (co-occurrence, split fractions, labels) and CAM extraction / localisation scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import cam, plots

# What each plot draws (bars, lines, bands, panels, heatmaps, overlays) is checked in
# tests/test_plots_drawn.py; the PNG-header-only checks that used to live here are gone.


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
    assert res["attention"].shape == (2, 17, 8, 8)
    assert torch.allclose(res["attention"].sum(dim=(2, 3)), torch.ones(2, 17), atol=1e-5)
    if ma:
        assert res["cam"].shape == (2, 17, 8, 8)
        w = model.transformer.cam_mask.cam.linear.weight
        feat = model.backbone(x)[0]
        expect = torch.einsum("kc,bchw->bkhw", w, model.input_proj(feat))
        assert torch.allclose(res["cam"], expect, atol=1e-5)
    else:
        assert "cam" not in res
    q = build_q2l("tiny", image_size=64)
    rq = cam.extract_maps(q, x)
    assert "cam" not in rq and rq["attention"].shape == (2, 17, 8, 8)
    assert not any(m._forward_hooks for m in q.modules())   # hooks removed
