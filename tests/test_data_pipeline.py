"""Transforms, the image cache and the dataset."""
from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.classes import CSV_COLUMNS
from benchmark.data.cache import ImageCache, load_rgb
from benchmark.data.dataset import SewerMLDataset
from benchmark.data.images import ImageIndex
from benchmark.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, SEWERML_MEAN, SEWERML_STD, Cutout,
                                       build_transform, denormalize)
from benchmark.errors import SewerbenchError

torch.set_num_threads(1)


# ------------------------------------------------------------------ transforms
@pytest.mark.parametrize("kind", ["imagenet", "sewerml", "none"])
@pytest.mark.parametrize("train", [True, False])
def test_transform_shapes_on_pil_numpy_tensor(kind, train):
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    t = build_transform(kind, 24, train)
    for x in (img, Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1).contiguous()):
        y = t(x)
        assert type(y) is torch.Tensor and y.dtype == torch.float32 and y.shape == (3, 24, 24)
        if kind == "none":
            assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


@pytest.mark.parametrize("kind, mean, std", [("imagenet", IMAGENET_MEAN, IMAGENET_STD),
                                             ("sewerml", SEWERML_MEAN, SEWERML_STD),
                                             ("none", (0, 0, 0), (1, 1, 1))])
def test_eval_normalisation_values(kind, mean, std):
    img = np.empty((16, 16, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 128, 250
    y = build_transform(kind, 16, train=False)(img)
    for c, v in enumerate((10, 128, 250)):
        expect = (v / 255.0 - mean[c]) / std[c]
        assert torch.allclose(y[c], torch.full((16, 16), expect), atol=1e-5)
    assert torch.allclose(denormalize(y, kind)[:, 0, 0], torch.tensor([10, 128, 250]) / 255.0, atol=1e-5)


def test_eval_same_size_is_exact_and_pil_equals_array():
    img = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    t = build_transform("none", 20, train=False)
    assert torch.allclose(t(img), torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, atol=1e-6, rtol=0)
    big = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    t2 = build_transform("imagenet", (24, 32), train=False)
    assert t2(big).shape == (3, 24, 32)
    # the same pixels give the same tensor whatever the container (PIL, numpy, uint8 tensor)
    ref = t2(big)
    assert torch.equal(ref, t2(Image.fromarray(big)))
    assert torch.equal(ref, t2(torch.from_numpy(big).permute(2, 0, 1).contiguous()))
    # a uniform image resized stays uniform at the normalised pixel value
    flat = np.full((40, 50, 3), 77, np.uint8)
    v = (77 / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert torch.allclose(t2(flat), torch.tensor(v, dtype=torch.float32)[:, None, None].expand(3, 24, 32),
                          atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["imagenet", "sewerml", "none"])
def test_eval_transform_equals_the_torchvision_v2_chain(kind):
    """ToUint8 / ToFloat are v2.ToImage + v2.Resize(bilinear, antialias) + v2.ToDtype(scale) +
    v2.Normalize without the containers: the same floats, bit for bit, from every input kind,
    at the target size (the cache) and resized (PNG frames)."""
    from torchvision.transforms import InterpolationMode, v2

    from benchmark.data.transforms import NORMALIZATION

    norm = NORMALIZATION[kind]
    rng = np.random.default_rng(5)
    for shape, size in (((24, 24, 3), (24, 24)), ((30, 41, 3), (24, 24)), ((50, 40, 3), (16, 32))):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        chain = [v2.ToImage(), v2.Resize(size, interpolation=InterpolationMode.BILINEAR, antialias=True),
                 v2.ToDtype(torch.float32, scale=True)]
        if norm is not None:
            chain.append(v2.Normalize(mean=list(norm[0]), std=list(norm[1])))
        expect = v2.Compose(chain)(img).as_subclass(torch.Tensor)
        ours = build_transform(kind, size, train=False)
        for x in (img, Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1).contiguous()):
            y = ours(x)
            assert type(y) is torch.Tensor and y.is_contiguous() and torch.equal(y, expect)


def test_colour_jitter_is_the_references_pil_jitter():
    """The Sewer-ML jitter equals torchvision's ColorJitter on the PIL image (the reference's
    PIL pipeline) under the same torch seed, pixel for pixel."""
    from torchvision import transforms as T

    from benchmark.data.transforms import PILColorJitter

    rng = np.random.default_rng(0)
    for jitter in (0.1, 0.5):
        ours = PILColorJitter(jitter, jitter, jitter, jitter)
        theirs = T.ColorJitter(jitter, jitter, jitter, jitter)
        for seed in range(40):
            img = rng.integers(0, 256, (24 + seed % 3, 32 + seed % 5, 3), dtype=np.uint8)
            if seed % 4 == 0:
                img[:, :8] = img[:1, :1]          # flat patches (saturation 0 pixels)
            torch.manual_seed(seed)
            a = ours(torch.from_numpy(img).permute(2, 0, 1).contiguous())
            torch.manual_seed(seed)
            b = np.asarray(theirs(Image.fromarray(img)))
            assert a.dtype == torch.uint8 and torch.equal(a, torch.from_numpy(b.copy()).permute(2, 0, 1))
    assert not torch.equal(a, torch.from_numpy(img).permute(2, 0, 1))     # it does jitter
    with pytest.raises(SewerbenchError, match="uint8"):
        ours(torch.zeros(3, 4, 4))


def test_hue_lookup_equals_torchvisions_pil_adjust_hue():
    """pil_adjust_hue (PIL's HSV -> RGB looked up in a table) gives torchvision's bytes for
    every hue shift, the ends of the range included, and refuses factors outside it."""
    from torchvision.transforms import _functional_pil as F_pil

    from benchmark.data.transforms import pil_adjust_hue

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for h in [-0.5, -0.25, -1 / 255, 0.0, 0.5 / 255, 1 / 255, 0.1, 0.5, *rng.uniform(-0.5, 0.5, 40)]:
        assert np.array_equal(np.asarray(pil_adjust_hue(img, float(h))), np.asarray(F_pil.adjust_hue(img, float(h))))
    grey = img.convert("L")
    assert pil_adjust_hue(grey, 0.2) is grey or np.array_equal(np.asarray(pil_adjust_hue(grey, 0.2)), np.asarray(grey))
    with pytest.raises(ValueError, match="hue_factor"):
        pil_adjust_hue(img, 0.6)


def test_train_steps_per_family_and_overrides():
    def names(t):
        return [type(s).__name__ for s in t.transforms]
    assert names(build_transform("imagenet", 8, True)) == [
        "ToUint8", "ReferenceRandAugment", "ToFloat"]
    assert names(build_transform("imagenet", 8, True, randaugment_impl="torchvision")) == [
        "ToUint8", "RandAugment", "ToFloat"]
    assert names(build_transform("sewerml", 8, True)) == [
        "ToUint8", "RandomHorizontalFlip", "PILColorJitter", "ToFloat"]
    assert names(build_transform("none", 8, True)) == [
        "ToUint8", "Cutout", "ReferenceRandAugment", "ToFloat"]
    assert names(build_transform("imagenet", 8, True, cutout=0.5, randaugment=False)) == [
        "ToUint8", "Cutout", "ToFloat"]
    cj = build_transform("sewerml", 8, True).transforms[2].jitter
    assert cj.brightness == (0.9, 1.1) and cj.contrast == (0.9, 1.1) and cj.hue == (-0.1, 0.1)
    for kind in ("imagenet", "sewerml", "none"):
        assert names(build_transform(kind, 8, False)) == ["ToUint8", "ToFloat"]
    # only the imagenet and sewerml families normalise; none keeps inputs in [0, 1]
    assert build_transform("none", 8, False).transforms[-1].mean is None
    assert build_transform("imagenet", 8, False).transforms[-1].mean == list(IMAGENET_MEAN)
    assert build_transform("sewerml", 8, False).transforms[-1].std == list(SEWERML_STD)


def test_transform_errors():
    with pytest.raises(SewerbenchError, match="unknown normalisation family 'coco'"):
        build_transform("coco", 8, True)
    with pytest.raises(SewerbenchError, match="unknown augmentation option.*mixup"):
        build_transform("imagenet", 8, True, mixup=0.2)
    with pytest.raises(SewerbenchError, match="image_size"):
        build_transform("imagenet", 0, True)


def test_train_transform_seeded_and_cutout():
    img = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    t = build_transform("none", 32, True)
    draws = []
    for _ in range(2):   # torch (Cutout), python and numpy (the reference RandAugment)
        torch.manual_seed(5)
        random.seed(5)
        np.random.seed(5)
        draws.append(t(img))
    assert torch.equal(*draws)
    zero = torch.zeros(3, 20, 20, dtype=torch.uint8)
    torch.manual_seed(0)
    out = Cutout(0.5)(zero)
    changed = (out != 0).any(dim=0)
    assert 0 < int(changed.sum()) <= 100 and torch.equal(zero, torch.zeros_like(zero))
    assert torch.equal(Cutout(0.0)(zero), zero)


# ------------------------------------------------------------------ cache
def _save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    im.save(path)


@pytest.fixture
def image_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    sizes = [(30, 40), (20, 20), (50, 35), (24, 32), (31, 29)]
    modes = [None, "L", "RGBA", "P", None]
    for i, (hw, mode) in enumerate(zip(sizes, modes)):
        _save(root / f"part{i % 2}" / f"{i + 1:08d}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8), mode)
    return root


def names5():
    return [f"{i:08d}.png" for i in range(1, 6)]


def test_cache_build_contents_and_meta(tmp_path, image_root):
    idx = ImageIndex(image_root)
    cache = ImageCache.build(tmp_path / "cache", names5(), idx, 16, workers=2)
    assert len(cache) == 5 and cache.stack().shape == (5, 16, 16, 3) and cache.stack().dtype == np.uint8
    for n in names5():
        assert np.array_equal(cache.get(n), load_rgb(idx.path(n), (16, 16)))
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["image_size"] == [16, 16] and meta["count"] == 5 and meta["skipped_count"] == 0
    assert meta["source"] == str(image_root.resolve())
    assert sorted(os.listdir(tmp_path)) == ["cache", "imgs"]  # no temporary leftovers
    again = pickle.loads(pickle.dumps(cache))
    assert np.array_equal(again.get(names5()[2]), cache.get(names5()[2]))


def test_cache_reopen_reuse_and_rebuild(tmp_path, image_root, monkeypatch):
    idx = ImageIndex(image_root)
    ImageCache.build(tmp_path / "c", names5(), idx, 12, workers=1)
    assert len(ImageCache.open(tmp_path / "c")) == 5

    def boom(*a, **k):
        raise AssertionError("rebuilt")
    monkeypatch.setattr(ImageCache, "_fill", staticmethod(boom))
    ImageCache.build(tmp_path / "c", names5(), idx, 12)  # same params: reused, no decode
    with pytest.raises(AssertionError, match="rebuilt"):
        ImageCache.build(tmp_path / "c", names5(), idx, 14)  # other resolution
    with pytest.raises(AssertionError, match="rebuilt"):
        ImageCache.build(tmp_path / "c", names5()[:4], idx, 12)  # other filenames
    p = idx.path(names5()[0])
    os.utime(p, ns=(1, 1))
    with pytest.raises(AssertionError, match="rebuilt"):
        ImageCache.build(tmp_path / "c", names5(), idx, 12)  # a source file changed
    monkeypatch.undo()
    c = ImageCache.build(tmp_path / "c", names5(), idx, 14)
    assert c.image_size == (14, 14) and c.stack().shape == (5, 14, 14, 3)
    with pytest.raises(SewerbenchError, match="not an image cache"):
        ImageCache.open(tmp_path / "nothing")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(SewerbenchError, match="is not an image cache; refusing"):
        ImageCache.build(tmp_path / "mine", names5(), idx, 12)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"


def test_cache_corrupt_images_fail_or_skip(tmp_path, image_root):
    (image_root / "part0" / "00000006.png").write_bytes(b"not a png at all")
    good = image_root / "part1" / "00000002.png"
    data = (image_root / "part0" / "00000001.png").read_bytes()
    (image_root / "part1" / "00000007.png").write_bytes(data[: len(data) // 2])  # truncated
    names = names5() + ["00000006.png", "00000007.png"]
    idx = ImageIndex(image_root)
    with pytest.raises(SewerbenchError, match=r"2 unreadable or corrupt images \(first: 00000006\.png .*"
                                              r"00000007\.png.*--skip-corrupt") as e:
        ImageCache.build(tmp_path / "c", names, idx, 8, workers=2)
    assert "\n" not in str(e.value)
    # no cache; the partial build (resumable) is the only trace
    assert not (tmp_path / "c").exists() and sorted(os.listdir(tmp_path)) == [".c.partial", "imgs"]
    c = ImageCache.build(tmp_path / "c", names, idx, 8, skip_corrupt=True)
    assert len(c) == 5 and c.skipped == ["00000006.png", "00000007.png"]
    assert c.meta["skipped_count"] == 2 and c.meta["count"] == 5 and c.meta["total"] == 7
    assert "00000006.png" not in c and "00000002.png" in c and good.exists()
    with pytest.raises(SewerbenchError, match="skipped as unreadable"):
        c.get("00000006.png")
    with pytest.raises(SewerbenchError, match=r"1 images not found .*zz\.png"):
        ImageCache.build(tmp_path / "d", ["zz.png"], idx, 8)


# ------------------------------------------------------------------ dataset
def _frame(names, uncertain=False):
    rows = []
    for i, n in enumerate(names):
        y = [0] * 17
        y[i % 17] = 1
        if uncertain and i == 0:
            y[3] = -1
        rows.append([n, 10, 0, *y, 0, 1])
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def test_dataset_items_from_cache_and_index(tmp_path, image_root):
    idx = ImageIndex(image_root)
    df = _frame(names5(), uncertain=True)
    cache = ImageCache.build(tmp_path / "c", names5(), idx, 16)
    t = build_transform("imagenet", 16, train=False)
    for src in (cache, idx):
        ds = SewerMLDataset(df, src, t)
        assert len(ds) == 5
        x, y, name = ds[1]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert y.shape == (17,) and y.dtype == torch.float32 and name == "00000002.png"
        assert y.tolist() == [0.0, 1.0] + [0.0] * 15
        y0 = ds[0][1]
        assert y0[0] == 1.0 and y0[3] == 0.0  # -1 (uncertain) counts as 0
    raw = SewerMLDataset(df, cache)[2][0]
    assert torch.equal(raw, torch.from_numpy(cache.get("00000003.png").copy()).permute(2, 0, 1).float() / 255)
    assert SewerMLDataset(df, idx)[2][0].shape == (3, 50, 35)  # no transform, original size
    ds = pickle.loads(pickle.dumps(SewerMLDataset(df, cache, t)))
    assert ds[4][2] == "00000005.png"
    loader = torch.utils.data.DataLoader(SewerMLDataset(df, cache, t), batch_size=2, num_workers=1)
    xb, yb, nb = next(iter(loader))
    assert xb.shape == (2, 3, 16, 16) and type(xb) is torch.Tensor and yb.shape == (2, 17)
    assert list(nb) == names5()[:2]


def test_dataset_missing_and_skipped(tmp_path, image_root, caplog):
    (image_root / "part0" / "00000006.png").write_bytes(b"junk")
    idx = ImageIndex(image_root)
    names = names5() + ["00000006.png"]
    cache = ImageCache.build(tmp_path / "c", names, idx, 8, skip_corrupt=True)
    ds = SewerMLDataset(_frame(names), cache)
    assert len(ds) == 5 and "00000006.png" not in ds.filenames and "dropping 1 rows" in caplog.text
    with pytest.raises(SewerbenchError, match="1 images of the split are not in the cache"):
        SewerMLDataset(_frame(names), cache, drop_skipped=False)
    with pytest.raises(SewerbenchError, match=r"1 images of the split are not in the cache .*00000099"):
        SewerMLDataset(_frame(names5() + ["00000099.png"]), cache)
    with pytest.raises(SewerbenchError, match="images not found"):
        SewerMLDataset(_frame(["00000099.png"]), idx)
    test_only = SewerMLDataset(pd.DataFrame({"Filename": names5()}), idx)
    assert test_only[0][1].sum() == 0.0
