"""Checkpoint import (reference layout, ``module.`` prefix, weights-only) and ``sewerbench predict``."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.classes import SCORE_COLUMNS
from benchmark.cli import main
from benchmark.errors import SewerbenchError
from benchmark.predict import predict_images, reference_eval_transform
from methods.checkpoint import build_from_checkpoint, load_state_strict, read_checkpoint
from methods.maq2l import build_maq2l, set_mask_tiling
from methods.q2l import build_q2l


def _reference_style_file(model, path, prefix="module."):
    """What the reference training scripts save: DDP keys, numpy best_mAP, optimizer state."""
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 12, "state_dict": state, "best_mAP": np.float64(61.25),
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]}}, path)


@pytest.fixture(scope="module")
def tiny_ma():
    torch.manual_seed(0)
    return build_maq2l(size="tiny").eval()


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_round_trip_reference_layout(tmp_path, tiny_ma, prefix):
    path = tmp_path / "model_best.pth.tar"
    _reference_style_file(tiny_ma, path, prefix)
    loaded = build_from_checkpoint("maq2l", path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_ma(x))
    assert loaded.transformer.mask_tiling == "reference"


def test_ablation_cell_flags_are_read_from_keys(tmp_path):
    torch.manual_seed(0)
    model = build_maq2l(size="tiny", mask_attention=False, label_correlation=True)
    path = tmp_path / "cell.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = build_from_checkpoint("maq2l", path)
    assert not loaded.transformer.mask_attention and loaded.transformer.label_correlation


def test_q2l_round_trip_and_method_mismatch(tmp_path, tiny_ma):
    torch.manual_seed(1)
    q2l = build_q2l(size="tiny").eval()
    path = tmp_path / "q2l.pkl"
    _reference_style_file(q2l, path)
    loaded = build_from_checkpoint("q2l", path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), q2l(x))
    with pytest.raises(SewerbenchError, match="not an MA-Q2L model"):
        build_from_checkpoint("maq2l", path)
    ma_path = tmp_path / "ma.pth"
    _reference_style_file(tiny_ma, ma_path)
    with pytest.raises(SewerbenchError, match="use --method maq2l"):
        build_from_checkpoint("q2l", ma_path)


def test_position_embedding_of_another_size_loads(tmp_path, tiny_ma):
    """A checkpoint trained at 96 px stores a 12x12 pe (tiny trunk: output stride 8); it loads into
    a model configured for 64 px (8x8)."""
    state = dict(tiny_ma.state_dict())
    torch.manual_seed(0)
    at96 = build_maq2l(size="tiny", image_size=96)
    state["backbone.1.pe"] = at96.state_dict()["backbone.1.pe"]
    model = build_maq2l(size="tiny")
    load_state_strict(model, state)
    assert model.backbone[1].pe.shape == (1, 64, 12, 12)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), tiny_ma(x))


def test_strict_loading_lists_bad_keys(tiny_ma):
    state = dict(tiny_ma.state_dict())
    del state["fc.b"]
    state["transformer.extra.weight"] = torch.zeros(1)
    state["query_embed.weight"] = torch.zeros(3, 64)
    model = build_maq2l(size="tiny")
    with pytest.raises(SewerbenchError) as err:
        load_state_strict(model, state, "x.pth")
    msg = str(err.value)
    assert msg.startswith("x.pth:") and "\n" not in msg
    assert "missing keys: fc.b" in msg and "unexpected keys: transformer.extra.weight" in msg
    assert "query_embed.weight (3, 64) vs (17, 64)" in msg


def test_pickle_requiring_file_is_refused(tmp_path, tiny_ma):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": tiny_ma.state_dict(), "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(SewerbenchError, match="refused: the file needs arbitrary pickle.*argparse.Namespace"):
        read_checkpoint(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SewerbenchError, match="not a readable torch checkpoint"):
        read_checkpoint(garbage)
    with pytest.raises(SewerbenchError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(SewerbenchError, match="no state_dict"):
        read_checkpoint(empty)


def test_numpy1_era_checkpoint_loads(tmp_path, tiny_ma):
    """Files written under numpy 1.x name numpy.core.multiarray.scalar (the released ones do)."""
    import zipfile
    new = tmp_path / "np2.pth"
    _reference_style_file(tiny_ma, new)
    old = tmp_path / "np1.pth"
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)
    state = read_checkpoint(old)
    assert set(state) == set(tiny_ma.state_dict())


def _images(folder, n=5, seed=0):
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        sub = folder / ("part_a" if i % 2 else "part_b")
        sub.mkdir(parents=True, exist_ok=True)
        name = f"{(n - i) * 7:08d}.png"
        arr = rng.integers(0, 256, (40 + 9 * i, 70, 3), dtype=np.uint8)
        img = Image.fromarray(arr) if i != 2 else Image.fromarray(arr[..., 0])  # one grayscale
        img.save(sub / name)
        names.append(name)
    return sorted(names)


def test_predict_cli_end_to_end(tmp_path, tiny_ma):
    ckpt = tmp_path / "ckpt.pth.tar"
    _reference_style_file(tiny_ma, ckpt)
    names = _images(tmp_path / "imgs")
    out = tmp_path / "scores.csv"
    rc = main(["predict", "--method", "maq2l", "--checkpoint", str(ckpt), "--images", str(tmp_path / "imgs"),
               "--image-size", "64", "--batch-size", "2", "--mask-tiling", "per_sample", "--device", "cpu",
               "--workers", "0", "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df.columns) == list(SCORE_COLUMNS)
    assert df["Filename"].tolist() == names
    # the same as running the model one image at a time with the reference eval transform
    paths = sorted((tmp_path / "imgs").rglob("*.png"), key=lambda p: p.name)
    set_mask_tiling(tiny_ma, "reference")
    _, probs = predict_images(tiny_ma, paths, reference_eval_transform(64), batch_size=1)
    np.testing.assert_allclose(df[list(SCORE_COLUMNS[1:])].to_numpy(), probs, atol=1e-6)
    assert ((probs > 0) & (probs < 1)).all()


def test_predict_cli_errors(tmp_path, tiny_ma, capsys):
    ckpt = tmp_path / "ckpt.pth"
    _reference_style_file(tiny_ma, ckpt)
    imgs = tmp_path / "imgs"
    _images(imgs, n=2)
    base = ["predict", "--method", "maq2l", "--checkpoint", str(ckpt), "--images", str(imgs),
            "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "s.csv")]
    assert main(base + ["--image-size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    (imgs / "part_a" / "00000099.png").write_bytes(b"broken")
    assert main(base + ["--image-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "00000099.png: cannot read image" in err
    assert not (tmp_path / "s.csv").exists()
