"""Reliability, fault class "faults": a process killed (SIGKILL) while writing a checkpoint, an
image cache or a dataset leaves the previous state usable and the rerun completes with the same
results; a truncated or corrupted checkpoint, cache, model or metrics file is detected (size,
zip structure, checksum) and named.

Kills are real: a child process replaces one write with "write half of it, then SIGKILL
myself", so the test is deterministic and exercises exactly the torn-write window.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmark.errors import SewerbenchError
from benchmark.train import checkpointing as ck
from helpers import cache_build_dying_at

REPO = Path(__file__).resolve().parents[1]


def _child(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (repo and tests importable); returns the result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


DIE_IN_TORCH_SAVE = """
import os, signal, sys, torch
_real, _calls = torch.save, {"n": 0}
def _dying(obj, f, *a, **k):
    name = os.path.basename(str(f))
    if name == TARGET or name.startswith("." + TARGET + "."):  # the file itself or its temp
        _calls["n"] += 1
        if _calls["n"] == WHEN:
            _real(obj, f, *a, **k)
            os.truncate(f, os.path.getsize(f) // 2)   # the torn write a kill leaves behind
            os.kill(os.getpid(), signal.SIGKILL)
    return _real(obj, f, *a, **k)
torch.save = _dying
"""


def _killed(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr[-2000:])


# ----------------------------------------------------------------------------- checkpoints
def test_sigkill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / ck.CHECKPOINT
    ck.save({"epoch": 1, "model": {"w": torch.full((5000,), 1.0)}}, path)
    res = _child("TARGET, WHEN = 'checkpoint.pt', 1\n" + DIE_IN_TORCH_SAVE + """
from benchmark.train import checkpointing as ck
ck.save({"epoch": 2, "model": {"w": torch.full((5000,), 2.0)}}, sys.argv[1])
""", str(path))
    _killed(res)
    stale = [p for p in tmp_path.iterdir() if p.name != ck.CHECKPOINT]
    assert len(stale) == 1 and stale[0].name.startswith(".checkpoint.pt.")  # the torn temp file
    state = ck.load(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.full((5000,), 1.0))
    ck.save({"epoch": 2, "model": {"w": torch.zeros(1)}}, path)  # the next save clears the debris
    assert [p.name for p in tmp_path.iterdir()] == [ck.CHECKPOINT]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers import make_tiny_dataset, tiny_params

    torch.set_num_threads(1)
    root = make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    params = tiny_params(root)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, params


def test_training_killed_while_writing_a_checkpoint_resumes_to_the_same_results(tiny, tmp_path):
    from benchmark.config import resolve_run
    from benchmark.train import train_run

    root, params = tiny
    over = {"epochs": 3, "aug": {"flip": 0.5}}
    train_run(resolve_run(params, "tiny", over), tmp_path / "full")
    killed = tmp_path / "killed"
    res = _child("TARGET, WHEN = 'checkpoint.pt', 2\n" + DIE_IN_TORCH_SAVE + """
import yaml, torch
torch.set_num_threads(1)
from benchmark.config import resolve_run
from benchmark.train import train_run
params = yaml.safe_load(open(sys.argv[1]))
train_run(resolve_run(params, "tiny", {"epochs": 3, "aug": {"flip": 0.5}}), sys.argv[2])
""", str(root / "params.yaml"), str(killed))
    _killed(res)  # died writing epoch 2's checkpoint
    assert ck.load(killed / ck.CHECKPOINT)["epoch"] == 0  # epoch 1's checkpoint is intact
    train_run(resolve_run(params, "tiny", over), killed, resume=True)
    timing = ["images_per_s", "epoch_seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full/history.csv").drop(columns=timing),
                                  pd.read_csv(killed / "history.csv").drop(columns=timing))
    for f in ("scores_val.csv", "scores_test.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (killed / f).read_bytes()
    assert not [p for p in killed.iterdir() if p.name.startswith(".checkpoint.pt.")]


def _pattern_file(tmp_path) -> tuple[Path, bytes]:
    w = torch.arange(4096, dtype=torch.float32) * 3.25
    path = tmp_path / ck.BEST
    ck.save({"state_dict": {"w": w}, "epoch": 3, "which": "ema", "score": 0.5}, path)
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [0, 10, 0.3, 0.9, -1])
def test_truncated_checkpoint_is_detected_and_named(tmp_path, cut):
    path, data = _pattern_file(tmp_path)
    n = cut if isinstance(cut, int) and cut >= 0 else (len(data) - 1 if cut == -1 else int(len(data) * cut))
    path.write_bytes(data[:n])
    with pytest.raises(SewerbenchError) as e:
        ck.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and ("truncated" in msg or "corrupt" in msg or "empty" in msg), msg


def test_bit_flip_in_checkpoint_tensor_data_is_detected(tmp_path):
    path, data = _pattern_file(tmp_path)
    at = data.find((torch.arange(4096, dtype=torch.float32) * 3.25)[1000:1004].numpy().tobytes())
    assert at > 0
    flipped = bytearray(data)
    flipped[at + 5] ^= 0x10
    path.write_bytes(bytes(flipped))
    raw = torch.load(path, weights_only=True)  # torch itself does not notice ...
    assert not torch.equal(raw["state_dict"]["w"], torch.arange(4096, dtype=torch.float32) * 3.25)
    with pytest.raises(SewerbenchError, match=rf"{path}: corrupt checkpoint: its contents do not match"):
        ck.load(path)  # ... the digest does
    from methods.checkpoint import read_checkpoint
    with pytest.raises(SewerbenchError, match="corrupt checkpoint"):
        read_checkpoint(path)  # nor does predict --checkpoint load it


def test_edited_plain_value_is_detected(tmp_path):
    """Changing the recorded selection (a plain value) without the digest is caught too."""
    path, _ = _pattern_file(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["which"] = "plain"
    torch.save(raw, path)
    with pytest.raises(SewerbenchError, match="do not match the digest"):
        ck.load(path)


# ----------------------------------------------------------------------------- image cache
@pytest.fixture()
def images(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"{i:08d}.png" for i in range(1, 41)]
    for n in names:
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / n)
    return root, names


def test_truncated_cache_array_is_named_and_rebuilt(tmp_path, images):
    from benchmark.data.cache import ImageCache
    from benchmark.data.images import ImageIndex

    root, names = images
    c = ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1)
    good = c.stack()
    npy = tmp_path / "c" / "shards" / "00000.npy"
    os.truncate(npy, npy.stat().st_size - 100)
    with pytest.raises(SewerbenchError, match=rf"{npy}: truncated or corrupt image cache shard"):
        ImageCache.open(tmp_path / "c")
    again = ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1)  # detected: rebuilt
    assert np.array_equal(again.stack(), good)


def test_corrupted_cache_bytes_fail_the_checksum_and_are_rebuilt(tmp_path, images, monkeypatch):
    from benchmark.data import cache as cache_mod
    from benchmark.data.cache import ImageCache
    from benchmark.data.images import ImageIndex

    root, names = images
    ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1)
    npy = tmp_path / "c" / "shards" / "00000.npy"
    good = npy.read_bytes()
    data = bytearray(good)
    data[-50] ^= 0xFF  # same size: only the checksum can tell
    npy.write_bytes(bytes(data))
    assert not ImageCache.open(tmp_path / "c").verify()
    calls = []
    real = cache_mod.ImageCache._fill
    monkeypatch.setattr(cache_mod.ImageCache, "_fill",
                        staticmethod(lambda *a: calls.append(1) or real(*a)))
    ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1)
    assert calls == [1] and npy.read_bytes() == good
    ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1)  # now reused
    assert calls == [1]


def test_sigkill_during_cache_build_leaves_the_previous_cache_usable(tmp_path, images):
    from benchmark.data.cache import ImageCache
    from benchmark.data.images import ImageIndex

    root, names = images
    c = ImageCache.build(tmp_path / "c", names[:20], ImageIndex(root), 8, workers=1)
    before = c.stack()
    res = _child(cache_build_dying_at(25), str(root), str(tmp_path / "c"))
    _killed(res)
    assert any(p.name.startswith(".c.") for p in tmp_path.iterdir())  # the killed build's debris
    old = ImageCache.open(tmp_path / "c")  # the previous cache is untouched and usable
    assert len(old) == 20 and np.array_equal(old.stack(), before)
    new = ImageCache.build(tmp_path / "c", names, ImageIndex(root), 8, workers=1)  # the rerun completes
    assert len(new) == 40 and np.array_equal(new.stack()[:20], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "imgs"]


def test_sigkill_between_the_renames_of_a_replace_is_recovered(tmp_path, images):
    from benchmark.data.cache import ImageCache
    from benchmark.data.images import ImageIndex

    root, names = images
    ImageCache.build(tmp_path / "c", names[:10], ImageIndex(root), 8, workers=1)
    res = _child("""
import os, signal, sys
from benchmark import io
real, n = os.replace, {"i": 0}
def dying(a, b):
    real(a, b)
    if ".old-" in os.path.basename(str(b)):   # the old cache was just set aside
        os.kill(os.getpid(), signal.SIGKILL)
io.os.replace = dying
from benchmark.data.cache import ImageCache
from benchmark.data.images import ImageIndex
idx = ImageIndex(sys.argv[1])
ImageCache.build(sys.argv[2], idx.filenames, idx, 8, workers=1)
""", str(root), str(tmp_path / "c"))
    _killed(res)
    assert not (tmp_path / "c").exists()
    from benchmark.io import recover_dir
    assert recover_dir(tmp_path / "c") == "restored"
    assert len(ImageCache.open(tmp_path / "c")) == 10  # the previous cache is back


# ----------------------------------------------------------------------------- synthetic dataset
def test_sigkill_during_synth_keeps_the_previous_dataset(tmp_path):
    from benchmark.synth import SynthConfig, generate

    out = tmp_path / "ds"
    cfg = dict(out=str(out), n_train=8, n_val=4, n_test=4, width=32, height=24, workers=1, folder_size=8)
    generate(SynthConfig.from_dict(cfg), progress=False)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = _child("""
import importlib, json, os, signal, sys
g = importlib.import_module("benchmark.synth.generate")
real, n = g.render_row, {"i": 0}
def dying(*a, **k):
    n["i"] += 1
    if n["i"] == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
g.render_row = dying
cfg = json.loads(sys.argv[1]); cfg["seed"] = 5
g.generate(g.SynthConfig.from_dict(cfg), progress=False)
""", json.dumps(cfg))
    _killed(res)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    generate(SynthConfig.from_dict({**cfg, "seed": 5}), progress=False)  # the rerun completes ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # ... and clears the debris
    assert json.loads((out / "meta.json").read_text())["seed"] == 5


# ----------------------------------------------------------------------------- models and metrics
def test_truncated_or_corrupted_sklearn_model_is_named(tmp_path):
    from benchmark.sk_io import load_sklearn_model, save_sklearn_model
    from methods.myrans2018 import build_myrans2018

    rng = np.random.default_rng(0)
    model = build_myrans2018(size="tiny", n_jobs=1, grid_search=False).fit_features(rng.random((40, 512)),
                                                                   (rng.random((40, 17)) < 0.3).astype(int))
    path = tmp_path / "model.skops"
    save_sklearn_model(model, path)
    data = path.read_bytes()
    for broken in (data[: len(data) // 2], data[:-30], b""):
        path.write_bytes(broken)
        with pytest.raises(SewerbenchError) as e:
            load_sklearn_model(path)
        assert str(e.value).startswith(f"{path}: ")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x01  # inside a member: its CRC-32 no longer matches
    path.write_bytes(bytes(flipped))
    with pytest.raises(SewerbenchError, match=rf"{path}: "):
        load_sklearn_model(path)


def test_truncated_metrics_file_is_named_by_tables(tmp_path, capsys):
    from benchmark.cli import main

    m = {"New": {"F2": 0.5, "F1_Normal": 0.25}, "Main": {"mAP": 0.75}, "Auxillary": {}}
    f = tmp_path / "metrics" / "run_a" / "val.json"
    f.parent.mkdir(parents=True)
    text = json.dumps(m, indent=2)
    f.write_text(text[: len(text) * 2 // 3])
    for d in ("runs", "prepared"):
        (tmp_path / d).mkdir()
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    rc = main(["tables", "--params", str(tmp_path / "params.yaml"), "--metrics", str(tmp_path / "metrics"),
               "--runs", str(tmp_path / "runs"), "--prepared", str(tmp_path / "prepared"),
               "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{f}: corrupt or truncated metrics JSON" in err
    assert not (tmp_path / "results").exists()
