"""The DataLoader's batched fetch (``__getitems__``) gives exactly the items of the per-item
path: same tensors bit for bit, same targets and names, same augmentation draws."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from benchmark.classes import CLASS_CODES
from benchmark.data.cache import ImageCache
from benchmark.data.dataset import SewerMLDataset
from benchmark.data.images import ImageIndex
from benchmark.data.transforms import build_transform, deterministic_steps
from benchmark.train.data import BinaryTargets, EpochSeeded

torch.set_num_threads(1)

N = 12


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """PNGs of different sizes (so the resize path runs), their 20 px cache and a label frame."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(3)
    names = [f"{i:08d}.png" for i in range(1, N + 1)]
    for i, n in enumerate(names):
        Image.fromarray(rng.integers(0, 256, (18 + i, 25 + 2 * i, 3), dtype=np.uint8)).save(root / n)
    y = (rng.random((N, len(CLASS_CODES))) < 0.3).astype(int)
    df = pd.DataFrame(y, columns=list(CLASS_CODES))
    df.insert(0, "Filename", names)
    index = ImageIndex(root)
    cache = ImageCache.build(tmp_path_factory.mktemp("cache") / "c", names, index, 20, workers=1)
    return df, index, cache


def per_item(ds, idx):
    return default_collate([ds[i] for i in idx])


def batched(ds, idx):
    return default_collate(ds.__getitems__(idx))


def same(a, b):
    assert torch.equal(a[0], b[0]) and a[0].dtype == b[0].dtype == torch.float32
    assert torch.equal(a[1], b[1]) and list(a[2]) == list(b[2])


@pytest.mark.parametrize("kind", ["imagenet", "sewerml", "none"])
@pytest.mark.parametrize("src", ["cache", "png"])
def test_eval_batches_equal_per_item(source, kind, src):
    df, index, cache = source
    ds = SewerMLDataset(df, cache if src == "cache" else index, build_transform(kind, 20, train=False))
    assert ds.deterministic
    idx = [5, 0, 11, 3, 3, 7]
    same(batched(ds, idx), per_item(ds, idx))
    assert not torch.equal(batched(ds, idx)[0][0], batched(ds, idx)[0][1])  # different images


def test_train_without_augmentation_is_batched_and_equal(source):
    df, _, cache = source
    tf = build_transform("imagenet", 20, train=True, randaugment=False)
    assert deterministic_steps(tf) is not None
    ds = EpochSeeded(SewerMLDataset(df, cache, tf), seed=4)
    ds.set_epoch(2)
    idx = list(range(N))[::-1]
    same(batched(ds, idx), per_item(ds, idx))
    # the batched fetch leaves torch's generator where it was, as the per-item one does
    torch.manual_seed(9)
    ds.__getitems__(idx)
    after = torch.rand(3)
    torch.manual_seed(9)
    assert torch.equal(torch.rand(3), after)


@pytest.mark.parametrize("kind, aug", [("sewerml", {}), ("imagenet", {"randaugment": True}),
                                       ("none", {})])
def test_augmented_items_stay_per_item_and_seeded(source, kind, aug):
    df, _, cache = source
    tf = build_transform(kind, 20, train=True, **aug)
    assert deterministic_steps(tf) is None
    ds = EpochSeeded(SewerMLDataset(df, cache, tf), seed=4)
    assert not ds.base.deterministic
    idx = [1, 2, 3, 4, 5, 6]
    same(batched(ds, idx), per_item(ds, idx))
    ds.set_epoch(1)
    assert not torch.equal(batched(ds, idx)[0], per_item(ds.base, idx)[0])  # seeded draws, not the global ones


def test_binary_targets_batched(source):
    df, _, cache = source
    ds = BinaryTargets(SewerMLDataset(df, cache, build_transform("sewerml", 20, train=False)))
    assert ds.deterministic
    idx = [0, 4, 8]
    b = batched(ds, idx)
    same(b, per_item(ds, idx))
    assert b[1].shape == (3, 1)


@pytest.mark.parametrize("workers", [0, 1])
def test_dataloader_uses_the_batched_fetch_with_the_same_batches(source, workers, monkeypatch):
    df, _, cache = source
    ds = SewerMLDataset(df, cache, build_transform("imagenet", 20, train=False))
    ref = [per_item(ds, list(range(i, min(i + 5, N)))) for i in range(0, N, 5)]
    calls = []
    real = SewerMLDataset.__getitems__
    monkeypatch.setattr(SewerMLDataset, "__getitems__", lambda self, idx: calls.append(len(idx)) or real(self, idx))
    got = list(DataLoader(ds, batch_size=5, shuffle=False, num_workers=workers))
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        same(a, b)
    if workers == 0:
        assert calls == [5, 5, 2]


def test_only_the_plain_two_step_transform_counts_as_deterministic():
    assert deterministic_steps(build_transform("imagenet", 20, train=False)) is not None
    assert deterministic_steps(build_transform("imagenet", 20, train=True, randaugment=False, flip=0.5)) is None
    assert deterministic_steps(build_transform("none", 20, train=True, randaugment=False, cutout=0.5)) is None
    assert deterministic_steps(None) is None


def test_flip_and_jitter_train_batches_are_planned_and_equal_per_item(source):
    """The Sewer-ML train transform (flip + colour jitter) runs as one batch pass after per-item
    draws: the same tensors as item by item, under EpochSeeded's seeds and under the global
    generator alike."""
    from benchmark.data.transforms import batch_plan

    df, index, cache = source
    tf = build_transform("sewerml", 20, train=True)
    plan = batch_plan(tf)
    assert plan is not None and len(plan.random) == 2 and deterministic_steps(tf) is None
    assert batch_plan(build_transform("imagenet", 20, train=True, randaugment=True)) is None
    assert batch_plan(build_transform("none", 20, train=True, randaugment=False, cutout=0.5)) is None
    for src in (cache, index):
        ds = EpochSeeded(SewerMLDataset(df, src, tf), seed=5)
        for epoch in (0, 3):
            ds.set_epoch(epoch)
            idx = [7, 1, 1, 10, 4, 0, 11, 2]
            same(batched(ds, idx), per_item(ds, idx))
        flat = SewerMLDataset(df, src, tf)      # no per-item seeds: draws from the global generator
        torch.manual_seed(11)
        a = batched(flat, idx)
        after_batched = torch.rand(2)
        torch.manual_seed(11)
        b = per_item(flat, idx)
        same(a, b)
        assert torch.equal(torch.rand(2), after_batched)   # the same number of draws
    binary = EpochSeeded(BinaryTargets(SewerMLDataset(df, cache, tf)), seed=5)
    same(batched(binary, [3, 9]), per_item(binary, [3, 9]))


def test_jitter_batch_is_pil_byte_for_byte():
    """Brightness, contrast, saturation and hue of a whole batch, each image with its own order
    and factors (extrapolating ones included), equal PIL's adjustments image by image."""
    from benchmark.data.transforms import _JITTER_STEPS, jitter_batch

    rng = np.random.default_rng(0)
    for trial in range(40):
        b, h, w = int(rng.integers(1, 7)), int(rng.integers(1, 30)), int(rng.integers(1, 30))
        a = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
        if trial % 3 == 0:
            a[:, : h // 2] = 255            # saturated and grey areas
        spread = 1.5 if trial % 2 else 0.1
        draws = [(rng.permutation(4).tolist(),
                  tuple(float(x) for x in rng.uniform(1 - spread, 1 + spread, 3)) + (float(rng.uniform(-0.5, 0.5)),))
                 for _ in range(b)]
        if trial == 0:
            draws[0] = ([0, 1, 2, 3], (0.0, 1.0, 2.5, -0.5))
        got = jitter_batch(a, draws)
        for k in range(b):
            pil = Image.fromarray(a[k])
            for step in draws[k][0]:
                pil = _JITTER_STEPS[step](pil, draws[k][1][step])
            assert np.array_equal(np.asarray(pil), got[k]), (trial, k)
