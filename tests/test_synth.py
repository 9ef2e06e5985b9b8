"""Synthetic Sewer-ML generator: determinism, layout, masks, label marginals, atomicity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.classes import CLASS_CODES, CSV_COLUMNS, NUM_CLASSES
from benchmark.cli import main
from benchmark.errors import SewerbenchError
from benchmark.synth import SynthConfig, generate, load_masks, render, sample_split_labels
from benchmark.synth.labels import read_source, resolve_source

W, H = 64, 48


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "synth"), seed=3, n_train=9, n_val=4, n_test=4, width=W, height=H,
                difficulty=0.5, folder_size=4, workers=1)
    base.update(kw)
    return SynthConfig.from_dict(base)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    cfg = _cfg(tmp)
    meta = generate(cfg, progress=False)
    return Path(cfg.out), meta


def test_deterministic_and_order_independent(tmp_path, dataset):
    root, _ = dataset
    # same seed, different process count / chunk order -> identical bytes
    again = generate(_cfg(tmp_path, out=str(tmp_path / "b"), workers=2), progress=False)
    assert again["seed"] == 3
    a, b = _files(root), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    generate(_cfg(tmp_path, out=str(tmp_path / "c"), seed=4), progress=False)
    c = _files(tmp_path / "c")
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in pngs) == len(pngs)
    assert a["SewerML_Train.csv"] != c["SewerML_Train.csv"]


def test_render_deterministic():
    lab = np.zeros(NUM_CLASSES, int)
    lab[[0, 6, 12]] = 1
    i1, m1 = render(lab, 10, np.random.default_rng(1), W, H)
    i2, m2 = render(lab, 10, np.random.default_rng(1), W, H)
    i3, _ = render(lab, 10, np.random.default_rng(2), W, H)
    assert i1.dtype == np.uint8 and i1.shape == (H, W, 3) and m1.shape == (NUM_CLASSES, H, W)
    assert np.array_equal(i1, i2) and np.array_equal(m1, m2)
    assert not np.array_equal(i1, i3)


def test_layout_and_schema(dataset):
    root, meta = dataset
    tr = pd.read_csv(root / "SewerML_Train.csv")
    va = pd.read_csv(root / "SewerML_Val.csv")
    te = pd.read_csv(root / "SewerML_Test.csv")
    gt = pd.read_csv(root / "SewerML_Test_gt.csv")
    assert list(tr.columns) == list(CSV_COLUMNS) and list(va.columns) == list(CSV_COLUMNS)
    assert list(gt.columns) == list(CSV_COLUMNS)
    assert list(te.columns) == ["Filename"] and list(te.Filename) == list(gt.Filename)
    assert (len(tr), len(va), len(te)) == (9, 4, 4)
    names = list(tr.Filename) + list(va.Filename) + list(te.Filename)
    assert len(set(names)) == len(names) and names == sorted(names)
    assert all(len(n) == 12 and n[:8].isdigit() and n.endswith(".png") for n in names)
    for df in (tr, va, gt):
        lab = df[list(CLASS_CODES)].to_numpy()
        assert set(np.unique(lab)) <= {0, 1}
        assert np.array_equal(df.Defect.to_numpy(), lab.any(1).astype(int))
        assert not ((df.ND == 1) & (df.Defect == 1)).any()
        assert df.WaterLevel.between(0, 100).all()
    folders = sorted(p.parent.name for p in root.glob("*/*.png"))
    assert set(folders) == {"train00", "train01", "train02", "val00", "test00"}
    assert sorted(p.name for p in root.glob("*/*.png")) == names
    assert meta["synthetic"] is True
    disk = json.loads((root / "meta.json").read_text())
    assert disk["synthetic"] is True and disk["seed"] == 3
    assert disk["counts"] == {"train": 9, "val": 4, "test": 4}
    assert disk["resolution"] == {"width": W, "height": H} and disk["difficulty"] == 0.5
    assert "generator_version" in disk
    from PIL import Image
    im = Image.open(next(root.glob("train00/*.png")))
    assert im.size == (W, H) and im.mode == "RGB"


def test_masks_match_labels_in_dataset(dataset):
    root, _ = dataset
    for csv in ("SewerML_Train.csv", "SewerML_Val.csv", "SewerML_Test_gt.csv"):
        df = pd.read_csv(root / csv)
        for fn, lab in zip(df.Filename, df[list(CLASS_CODES)].to_numpy()):
            m = load_masks(root / "masks", fn)
            assert m.shape == (NUM_CLASSES, H, W) and m.dtype == bool
            assert np.array_equal(m.any((1, 2)), lab.astype(bool)), fn


@pytest.mark.parametrize("water", [0, 10, 50, 100])
def test_every_class_leaves_a_mask(water):
    rng = np.random.default_rng(water)
    for k in range(NUM_CLASSES):
        for rep in range(2):
            lab = np.zeros(NUM_CLASSES, int)
            lab[k] = 1
            if rep:  # with a few random companions
                lab[rng.choice(NUM_CLASSES, 3, replace=False)] = 1
            for diff in (0.0, 1.0):
                _, m = render(lab, water, np.random.default_rng([k, rep, water]), W, H, diff)
                assert np.array_equal(m.any((1, 2)), lab.astype(bool)), (k, rep, water, diff)
    _, m = render(np.ones(NUM_CLASSES, int), water, np.random.default_rng(5), W, H)
    assert m.any((1, 2)).all()
    _, m = render(np.zeros(NUM_CLASSES, int), water, np.random.default_rng(5), W, H)
    assert not m.any()


@pytest.mark.parametrize("split,which", [("train", "train"), ("val", "val"), ("test", "val")])
def test_label_marginals_match_subset(split, which):
    n = 20000
    src = read_source(resolve_source(None, which))
    draw = sample_split_labels(split, n, seed=11)
    assert list(draw.columns) == list(CSV_COLUMNS) and len(draw) == n
    for col in [*CLASS_CODES, "VA", "ND", "Defect"]:
        p = src[col].mean()
        z = (draw[col].mean() - p) / np.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs(z) < 4.5, (col, z)
    wl, wd = src.WaterLevel, draw.WaterLevel
    assert abs(wd.mean() - wl.mean()) < 5 * wl.std() / np.sqrt(n)
    assert set(wd.unique()) <= set(wl.unique())
    # co-occurrence is inherited: e.g. P(FS and OK) matches
    both = (src.FS & src.OK).mean()
    assert abs((draw.FS & draw.OK).mean() - both) < 5 * np.sqrt(both * (1 - both) / n)


def test_label_streams_are_seeded():
    a = sample_split_labels("val", 500, seed=1)
    b = sample_split_labels("val", 500, seed=1)
    c = sample_split_labels("test", 500, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def _crash_after(monkeypatch, n_images):
    """Make the renderer die after ``n_images`` images (test-side; the library has no hook)."""
    import importlib

    G = importlib.import_module("benchmark.synth.generate")

    real, done = G._work, []

    def work(job):
        *head, rows = job
        left = n_images - sum(done)
        done.append(real((*head, rows[:max(left, 0)])))
        if len(rows) > left:
            raise RuntimeError("simulated failure")
        return done[-1]
    monkeypatch.setattr(G, "_work", work)


def test_failure_leaves_no_output(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    with monkeypatch.context() as m:
        _crash_after(m, 5)
        with pytest.raises(RuntimeError):
            generate(cfg, progress=False)
    assert list(tmp_path.iterdir()) == []
    # an existing dataset survives a failed regeneration untouched
    generate(cfg, progress=False)
    before = _files(Path(cfg.out))
    with monkeypatch.context() as m:
        _crash_after(m, 3)
        with pytest.raises(RuntimeError):
            generate(_cfg(tmp_path, seed=9), progress=False)
    assert _files(Path(cfg.out)) == before
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]


def test_cli(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"seed: 0\nsynth:\n  out: {tmp_path / 'cli'}\n  n_train: 3\n  n_val: 2\n  n_test: 2\n"
                      f"  width: {W}\n  height: {H}\n  workers: 1\n")
    assert main(["synth", "--params", str(params), "--seed", "2"]) == 0
    assert len(list((tmp_path / "cli").glob("*/*.png"))) == 7
    assert json.loads((tmp_path / "cli" / "meta.json").read_text())["seed"] == 2
    assert main(["synth", "--params", str(params), "--difficulty", "2"]) == 2
    assert "difficulty" in capsys.readouterr().err
    with pytest.raises(SewerbenchError):
        read_source(tmp_path / "missing.csv")


def test_calibrate_runs_on_tiny_dataset(dataset):
    from benchmark.synth.calibrate import calibrate, chance_baselines
    root, _ = dataset
    r = calibrate(root, seed=0, epochs=1, batch_size=4, width=4, threads=1)
    assert 0.0 <= r["cnn"]["F2_CIW"] <= 1.0 and 0.0 <= r["cnn"]["F1_Normal"] <= 1.0
    assert r["train_images"] == 9 and r["val_images"] == 4
    y = np.zeros((10, NUM_CLASSES))
    y[:4, 0] = 1
    base = chance_baselines(y, y)
    # all-positive: class RB has P = 0.4, R = 1 -> F2 = 2/2.6; other classes have no positives
    from benchmark.classes import CIW
    assert base["all_positive"]["F2_CIW"] == pytest.approx((2 / 2.6) * CIW[0] / CIW.sum())
    assert base["all_negative"]["F1_Normal"] == pytest.approx(0.75)  # P = 0.6, R = 1
    assert base["all_positive"]["F1_Normal"] == 0.0


def test_masks_bundled_and_a_content_digest_of_every_file(dataset):
    """Masks live in one file per 100 images (DVC stats a few files, not one per image), and
    meta.json's content digest is the SHA-256 over every image's and mask file's bytes: what
    the prepare and plots stages depend on instead of the folder."""
    import hashlib

    from benchmark.synth.generate import MASKS_PER_FILE, content_digest, mask_location

    root, meta = dataset
    n = sum(meta["counts"].values())
    files = sorted((root / "masks").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.npz" for i in range(-(-n // MASKS_PER_FILE))]
    images = [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in root.glob("*/*.png")]
    masks = [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]
    disk = json.loads((root / "meta.json").read_text())
    assert disk["content"] == {"images": n, "mask_files": len(files),
                               "sha256": content_digest(images, masks)}
    assert content_digest(images[1:], masks) != disk["content"]["sha256"]
    assert mask_location("00000100.png") == ("00000.npz", "00000100")
    assert mask_location("00000101.png") == ("00001.npz", "00000101")
    assert load_masks(root / "masks", f"{n + MASKS_PER_FILE:08d}.png") is None   # no such file
    for bad in ("00000000.png", "abc.png", "0000001.png"):
        with pytest.raises(SewerbenchError, match="not a synthetic image name"):
            mask_location(bad)
