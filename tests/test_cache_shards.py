"""The sharded image cache: codecs, resuming a killed build, repairing or refreshing only the
shards that need it, concurrent builders, and one cache per split (only the images it uses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.data import cache as cache_mod
from benchmark.data.cache import ImageCache, decode_image, encode_image, load_rgb
from benchmark.data.images import ImageIndex
from benchmark.errors import SewerbenchError
from helpers import cache_build_dying_at, gt_frame

REPO = Path(__file__).resolve().parents[1]
N = 12


@pytest.fixture()
def images(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:32]
    names = [f"{i:08d}.png" for i in range(1, N + 1)]
    for i, n in enumerate(names):   # smooth images with some noise: what a camera gives
        base = np.stack([(xx * 7 + i * 13) % 256, (yy * 9) % 256, (xx + yy) * 4 % 256], -1)
        img = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / n)
    return root, names


@pytest.fixture()
def count_decodes(monkeypatch):
    calls = []
    real = cache_mod.load_rgb

    def counting(path, size=None):
        calls.append(os.path.basename(path))
        return real(path, size)
    monkeypatch.setattr(cache_mod, "load_rgb", counting)
    return calls


def test_shards_hold_the_images_in_row_order(tmp_path, images):
    root, names = images
    idx = ImageIndex(root)
    c = ImageCache.build(tmp_path / "c", names, idx, (12, 16), workers=2, shard_images=5)
    assert [sh["rows"] for sh in c.shards] == [5, 5, 2] and c.codec == "raw"
    assert sorted(os.listdir(tmp_path / "c" / "shards")) == ["00000.npy", "00001.npy", "00002.npy"]
    want = np.stack([load_rgb(idx.path(n), (12, 16)) for n in names])
    assert np.array_equal(c.stack(), want)
    assert np.array_equal(c.get(names[7]), want[7])
    assert c.nbytes == sum(os.path.getsize(p) for p in (tmp_path / "c" / "shards").iterdir())
    assert c.verify() and sorted(os.listdir(tmp_path)) == ["c", "imgs"]


@pytest.mark.parametrize("codec", ["jpeg", "webp", "png"])
def test_encoded_codecs_decode_to_what_was_encoded(tmp_path, images, codec):
    root, names = images
    idx = ImageIndex(root)
    c = ImageCache.build(tmp_path / "c", names, idx, 16, workers=2, codec=codec, quality=90, shard_images=4)
    raw = ImageCache.build(tmp_path / "r", names, idx, 16)
    for n in names:
        src = load_rgb(idx.path(n), (16, 16))
        got = c.get(n)
        assert np.array_equal(got, decode_image(encode_image(src, codec, 90)))
        err = np.abs(got.astype(int) - raw.get(n).astype(int)).mean()
        assert err == 0 if codec == "png" else 0 < err < 8, err
    assert c.meta["quality"] == (None if codec == "png" else 90)
    # a DataLoader worker gets a small reader that reopens the shards
    import pickle
    r = pickle.loads(pickle.dumps(c.reader()))
    assert np.array_equal(r.read(5), c.get(names[5]))


def test_jpeg_shards_are_smaller_than_raw(tmp_path, images):
    root, names = images
    idx = ImageIndex(root)
    j = ImageCache.build(tmp_path / "j", names, idx, 24, codec="jpeg")
    r = ImageCache.build(tmp_path / "r", names, idx, 24)
    assert j.nbytes < r.nbytes


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_a_killed_build_resumes_with_the_shards_it_finished(tmp_path, images, count_decodes, codec):
    root, names = images
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    script = cache_build_dying_at(9, "shard_images=4, codec=sys.argv[3]")
    res = subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "c"), codec], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    partial = tmp_path / ".c.partial"
    assert not (tmp_path / "c").exists()
    assert sorted(p.name for p in (partial / "shards").glob("*.done.json")) == ["00000.done.json",
                                                                               "00001.done.json"]
    c = ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1, shard_images=4, codec=codec)
    assert sorted(count_decodes) == names[8:]       # only the unfinished shard was decoded
    fresh = ImageCache.build(tmp_path / "f", names, ImageIndex(root), 8, shard_images=4, codec=codec)
    assert np.array_equal(c.stack(), fresh.stack())
    assert sorted(os.listdir(tmp_path / "c" / "shards")) == sorted(os.listdir(tmp_path / "f" / "shards"))
    assert not partial.exists()


def test_a_partial_build_with_other_parameters_is_started_over(tmp_path, images, count_decodes):
    root, names = images
    idx = ImageIndex(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache_mod, "_write_shard", _die_after(1, cache_mod._write_shard))
        with pytest.raises(KeyboardInterrupt):
            ImageCache.build(tmp_path / "c", names, idx, 8, shard_images=4)
    count_decodes.clear()
    ImageCache.build(tmp_path / "c", names, idx, 10, shard_images=4)   # another resolution
    assert len(count_decodes) == N


def _die_after(k, real):
    n = {"i": 0}

    def write(*a, **kw):
        if n["i"] == k:
            raise KeyboardInterrupt
        n["i"] += 1
        return real(*a, **kw)
    return write


def test_a_corrupt_shard_is_the_only_one_rebuilt(tmp_path, images, count_decodes):
    root, names = images
    idx = ImageIndex(root)
    c = ImageCache.build(tmp_path / "c", names, idx, 8, shard_images=4)
    good = c.stack()
    shard = tmp_path / "c" / "shards" / "00001.npy"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0xFF                               # same size: only the checksum can tell
    shard.write_bytes(bytes(data))
    assert ImageCache.open(tmp_path / "c").bad_shards() == ["00001"]
    count_decodes.clear()
    again = ImageCache.build(tmp_path / "c", names, idx, 8, shard_images=4)
    assert sorted(count_decodes) == names[4:8]
    assert np.array_equal(again.stack(), good) and again.verify()
    count_decodes.clear()
    ImageCache.build(tmp_path / "c", names, idx, 8, shard_images=4)
    assert count_decodes == []                     # now reused as it is


def test_a_changed_source_file_rebuilds_only_its_shard(tmp_path, images, count_decodes):
    root, names = images
    idx = ImageIndex(root)
    ImageCache.build(tmp_path / "c", names, idx, 8, shard_images=4)
    new = np.full((24, 32, 3), 200, np.uint8)
    Image.fromarray(new).save(root / names[9])
    count_decodes.clear()
    c = ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, shard_images=4)
    assert sorted(count_decodes) == names[8:12]
    assert np.array_equal(c.get(names[9]), np.full((8, 8, 3), 200, np.uint8))
    # one more image: the three full shards are kept, a fourth holds the new one
    count_decodes.clear()
    extra = root / "00000099.png"
    Image.fromarray(new).save(extra)
    c = ImageCache.build(tmp_path / "c", names + [extra.name], ImageIndex(root), 8, shard_images=4)
    assert count_decodes == [extra.name] and [sh["rows"] for sh in c.shards] == [4, 4, 4, 1]


def test_a_folder_in_the_partial_builds_place_is_not_replaced(tmp_path, images):
    root, names = images
    mine = tmp_path / ".c.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SewerbenchError, match=r"\.c\.partial: exists and is not a partial image cache build; refusing"):
        ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8)
    assert (mine / "notes.txt").read_text() == "keep"


def test_bad_cache_parameters_are_named(tmp_path, images):
    root, names = images
    idx = ImageIndex(root)
    with pytest.raises(SewerbenchError, match="unknown cache codec 'gif'"):
        ImageCache.build(tmp_path / "c", names, idx, 8, codec="gif")
    with pytest.raises(SewerbenchError, match="cache quality must be 1..100"):
        ImageCache.build(tmp_path / "c", names, idx, 8, codec="jpeg", quality=0)
    with pytest.raises(SewerbenchError, match="shard_images must be >= 1"):
        ImageCache.build(tmp_path / "c", names, idx, 8, shard_images=0)
    assert sorted(os.listdir(tmp_path)) == ["imgs"]


def test_concurrent_builders_build_once(tmp_path, images, count_decodes):
    root, names = images
    idx = ImageIndex(root)
    out, errors = [], []

    def build():
        try:
            out.append(ImageCache.build(tmp_path / "c", names, idx, 8, workers=1, shard_images=4))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 3
    assert sorted(count_decodes) == names             # decoded once in all
    assert all(np.array_equal(o.stack(), out[0].stack()) for o in out)


def test_a_run_caches_only_its_splits_images(tmp_path, images):
    from benchmark.train.data import image_source

    root, names = images
    prep = tmp_path / "prepared"
    prep.mkdir()
    y = np.zeros((N, 17), np.int64)
    csvs = {}
    for part, rows in (("train", names[:4]), ("val", names[4:6]), ("test", names[6:7])):
        csvs[part] = prep / f"{part}.csv"
        gt_frame(rows, y[: len(rows)]).to_csv(csvs[part], index=False)
    rt = SimpleNamespace(use_cache=True, cache_codec="jpeg", cache_quality=80, cache_shard_images=2,
                         cache_workers=1)
    data = SimpleNamespace(images=str(root), prepared=str(prep), cache=str(tmp_path / "cache"),
                           train_csv=str(csvs["train"]), val_csv=str(csvs["val"]), full_val_csv="",
                           test_csv=str(csvs["test"]))
    cfg = SimpleNamespace(run="r", method="maq2l", split="sub_0.0625", image_size=8, data=data, runtime=rt)
    c = image_source(cfg)
    assert c.directory == tmp_path / "cache" / "sub_0.0625" / "8x8-jpegq80"
    assert c.filenames == sorted(names[:7]) and c.meta["quality"] == 80
    assert image_source(cfg, filenames=names[1:3]).directory == c.directory   # inside the split
    other = image_source(cfg, filenames=names[9:])                           # outside: its own set
    assert other.filenames == names[9:] and other.directory.parent.name.startswith("files-")
    cfg.runtime = SimpleNamespace(**{**vars(rt), "use_cache": False})
    assert isinstance(image_source(cfg), ImageIndex)
