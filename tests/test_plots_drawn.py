"""What the plots draw, not only that a PNG exists: every Figure saved by a plot function is
captured (test-side wrapper of ``matplotlib.figure.Figure.savefig``; the PNG is still written)
and its axes, series, labels and data are compared with values computed here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from benchmark import plots
from benchmark.classes import CLASS_CODES
from benchmark.metrics import average_precision, evaluate

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def saved(monkeypatch):
    figs: list[Figure] = []
    orig = Figure.savefig

    def savefig(self, *args, **kwargs):
        figs.append(self)
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 17)) < 0.2).astype(int)
    y[:, 14] = 0                                   # OS: no positives
    s = np.clip(0.35 * y + rng.random(y.shape) * 0.6, 0, 1)
    return s, y


def _png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG


def _texts(items):
    return [t.get_text() for t in items]


def test_per_class_f2_bars(tmp_path, saved):
    s, y = _data()
    m = {"A": evaluate(s, y), "B": evaluate(np.clip(s * 0.8, 0, 1), y)}
    out = plots.plot_per_class_f2(m, tmp_path / "f2.png", title="T")
    _png(out)
    (fig,) = saved
    (ax,) = fig.axes
    assert ax.get_title() == "T" and ax.get_ylabel() == "F2 (%)" and ax.get_ylim() == (0, 100)
    assert _texts(ax.get_xticklabels()) == list(CLASS_CODES) + ["Normal"]
    assert _texts(ax.get_legend().get_texts()) == ["A", "B"]
    assert len(ax.containers) == 2                 # one bar series per method
    for bars, key in zip(ax.containers, ["A", "B"]):
        heights = [b.get_height() for b in bars]
        want = [100 * (0.0 if np.isnan(v) else v) for v in m[key]["New"]["F2_class"]]
        assert heights == pytest.approx(want, abs=1e-9)
    assert len({round(b.get_height(), 6) for b in ax.containers[0]}) > 5   # not a blank figure


def test_f2_vs_fraction_lines_and_bands(tmp_path, saved):
    pts = pd.DataFrame({"method": ["B", "A", "A", "B"], "fraction": [1, 0.0625, 1, 0.0625],
                        "F2": [45, 40, 50, 35], "lo": [43, 38, 48, 33], "hi": [47, 42, 52, 37]})
    _png(plots.plot_f2_vs_fraction(pts, tmp_path / "frac.png"))
    (fig,) = saved
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["A", "B"]
    assert [list(ln.get_xdata()) for ln in lines] == [[0.0625, 1.0], [0.0625, 1.0]]
    assert [list(ln.get_ydata()) for ln in lines] == [[40, 50], [35, 45]]   # sorted by fraction
    assert ax.get_xscale() == "log" and _texts(ax.get_xticklabels()) == ["1/16", "1"]
    assert ax.get_xlabel() == "training fraction" and ax.get_ylabel() == "F2-CIW (%)"
    bands = ax.collections
    assert len(bands) == 2
    for band, (lo, hi) in zip(bands, [(38, 52), (33, 47)]):
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        assert (ys.min(), ys.max()) == (lo, hi)
    assert _texts(ax.get_legend().get_texts()) == ["A", "B"]


def test_pr_curves_panels(tmp_path, saved):
    s, y = _data(1)
    _png(plots.plot_pr_curves(s, y, tmp_path / "pr.png", title="PR"))
    (fig,) = saved
    assert fig._suptitle.get_text() == "PR"
    axes = fig.axes
    assert len(axes) == 18                         # 3 x 6 grid, 17 panels + 1 switched off
    ap = average_precision(s, y)
    for k, ax in enumerate(axes[:17]):
        assert ax.get_title() == f"{CLASS_CODES[k]}  AP {100 * ap[k]:.1f}"
        if k == 14:
            assert _texts(ax.texts) == ["no positives"] and not ax.get_lines()
            continue
        curve, chance = ax.get_lines()
        r, p = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
        assert r.min() == 0 and r.max() == 1 and 0 < p.min() and p.max() == 1
        assert np.all(np.diff(r) <= 0)             # recall decreases along the curve
        assert list(chance.get_ydata()) == pytest.approx([y[:, k].mean()] * 2)
    assert not axes[17].axison
    assert len({ax.get_title() for ax in axes[:17]}) > 10


def test_cooccurrence_heatmaps(tmp_path, saved):
    s, y = _data(2)
    _png(plots.plot_cooccurrence(y, s, tmp_path / "co.png"))
    (fig,) = saved
    heat = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heat] == ["ground truth", "predicted"]
    pred = (s >= 0.5).astype(int)
    for ax, lab in zip(heat, (y, pred)):
        shown = np.ma.filled(ax.collections[0].get_array(), np.nan).reshape(17, 17)
        want = np.full((17, 17), np.nan)
        for i in range(17):                       # P(j | i) by counting, diagonal left blank
            rows = lab[:, i] == 1
            for j in range(17):
                if i != j:
                    want[i, j] = (lab[rows, j] == 1).mean() if rows.any() else 0.0
        np.testing.assert_allclose(shown, want, rtol=0, atol=1e-12)
        assert _texts(ax.get_xticklabels()) == list(CLASS_CODES)
    assert len(fig.axes) == 4                      # two heatmaps + two colour bars


def test_training_curves_series(tmp_path, saved):
    hist = {"r1": pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.7, 1.6],
                                "val_mAP": [0.2, 0.3, 0.35], "lr": [1e-3, 1e-4, 1e-5]}),
            "r2": pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.9], "val_F2_CIW": [0.4, 0.5]})}
    _png(plots.plot_training_curves(hist, tmp_path / "curves.png"))
    (fig,) = saved
    left1, = [a for a in fig.axes if a.get_title() == "r1"]
    left2, = [a for a in fig.axes if a.get_title() == "r2"]
    twins = [a for a in fig.axes if a.get_ylabel() == "%"]
    assert len(twins) == 2
    assert [ln.get_label() for ln in left1.get_lines()] == ["train_loss", "val_loss"]
    assert [list(ln.get_ydata()) for ln in left1.get_lines()] == [[2.0, 1.5, 1.2], [2.1, 1.7, 1.6]]
    assert [ln.get_label() for ln in left2.get_lines()] == ["train_loss"]
    right = {ln.get_label(): list(ln.get_ydata()) for a in twins for ln in a.get_lines()}
    assert right == {"val_mAP": pytest.approx([20.0, 30.0, 35.0]), "val_F2_CIW": pytest.approx([40.0, 50.0])}
    assert list(left1.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert _texts(left1.get_legend().get_texts()) == ["train_loss", "val_loss", "val_mAP"]
    assert plots.plot_training_curves({}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists() and len(saved) == 1


def test_localisation_bars(tmp_path, saved):
    loc = pd.DataFrame({"method": ["a cam", "b attention"], "pointing_game": [0.5, 0.3],
                        "cam_iou": [0.2, 0.1], "random_pointing": [0.05, 0.05]})
    _png(plots.plot_localisation(loc, tmp_path / "loc.png"))
    (fig,) = saved
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pointing_game", "cam_iou"]
    assert [[b.get_height() for b in c] for c in ax.containers] == [pytest.approx([50, 20]),
                                                                    pytest.approx([30, 10])]
    (base,) = [ln for ln in ax.get_lines() if ln.get_label() == "random point"]
    assert list(base.get_ydata()) == pytest.approx([5.0, 5.0])
    assert _texts(ax.get_legend().get_texts()) == ["a cam", "b attention", "random point"]


def test_cam_overlay_grid(tmp_path, saved):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((17, 24, 32), bool) for _ in range(2)]
    masks[0][2, 5:10, 5:10] = True
    maps = {"m cam": [rng.random((17, 3, 4)) for _ in range(2)]}
    maps["m cam"][0][2] = 0.0
    maps["m cam"][0][2][1, 2] = 1.0                # peak of class PF's map in cell (1, 2)
    scores = {"m cam": {"pointing_game": 0.5, "cam_iou": 0.25}}
    _png(plots.plot_cam_overlays(imgs, [masks[0], None], [2, 0], maps, tmp_path / "cam.png", scores))
    (fig,) = saved
    assert len(fig.axes) == 4                      # 2 images x (image + 1 map)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["PF (mask)", "m cam\nPG 50%  IoU 25%", "RB (mask)", "m cam"]
    img_ax, map_ax = fig.axes[0], fig.axes[1]
    np.testing.assert_array_equal(img_ax.images[0].get_array(), imgs[0])
    assert len(img_ax.collections) >= 1            # the mask contour of image 0
    assert not fig.axes[2].collections             # image 1 has no mask
    assert len(map_ax.images) == 2                 # the image and the map on top
    heat = np.asarray(map_ax.images[1].get_array())
    assert heat.shape == (24, 32) and heat.min() == pytest.approx(0) and heat.max() == pytest.approx(1)
    (marker,) = [ln for ln in map_ax.get_lines() if ln.get_marker() == "x"]
    yx = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (yx[1], yx[0])
    assert 6 <= yx[0] < 12 and 16 <= yx[1] < 24   # the upsampled peak cell (1, 2) of a 3 x 4 map
