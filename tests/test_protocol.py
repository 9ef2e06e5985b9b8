"""The `published` / `corrected` protocol: which quirks a run reproduces, and that each engine-level
quirk does what the reference did (MA-Q2L batch-1 scores, validation batch, DDP refusal, Chen at
224 px, ASL saving the plain weights); the README table lists every quirk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import quirks
from benchmark.config import resolve_run
from benchmark.errors import SewerbenchError
from helpers import make_tiny_dataset, tiny_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = make_tiny_dataset(tmp_path_factory.mktemp("proto"), size=32)
    params = tiny_params(root, image_size=32)
    params["recipes"]["maq2l"] = dict(params["recipes"]["q2l"], aug={"randaugment": False, "cutout": 0.5})
    params["recipes"]["asl"] = dict(params["recipes"]["q2l"], loss={"name": "asl"})
    params["runs"].update({
        "ma": {"method": "maq2l", "split": "full",
               "model": {"backbone_norm": "batch", "freeze_stem": False}},
        "asl": {"method": "asl_tresnet_l", "recipe": "asl", "split": "full"},
        "q2l": {"method": "q2l", "recipe": "q2l", "split": "full"},
        "chen": {"method": "chen2018", "recipe": "sewerml", "split": "full"},
    })
    return root, params


def test_quirks_per_protocol(tiny):
    _, p = tiny
    ma = resolve_run(p, "ma")
    assert set(ma.quirks) == {"maq2l_mask_tiling", "maq2l_batch1_scores", "maq2l_val_batch", "maq2l_ddp_batch",
                              "degenerate_cutout"}
    assert ma.aug.cutout == 0.0 and ma.protocol == "published"
    fixed = resolve_run(p, "ma", {"protocol": "corrected"})
    assert fixed.quirks == () and fixed.aug.cutout == 0.5 and fixed.model["mask_tiling"] == "per_sample"
    own = resolve_run(p, "ma", {"model": {"mask_tiling": "per_sample"}})
    assert own.quirks == ("degenerate_cutout",)
    assert resolve_run(p, "q2l").quirks == ("degenerate_cutout",)
    assert resolve_run(p, "chen").quirks == ("chen2018_eval_224",)
    assert resolve_run(p, "asl").quirks == ("asl_saves_plain",)
    assert resolve_run(p, "tiny").quirks == ()
    with pytest.raises(SewerbenchError, match="protocol: expected one of 'published', 'corrected'"):
        resolve_run(p, "ma", {"protocol": "paper"})


def test_batch_one_semantics_equal_batch_one_inference():
    """Per-sample tiling at batch 8 = the reference tiling at batch 1, image by image."""
    from benchmark.train.runtime import batch_one_semantics
    from methods.maq2l import build_maq2l

    torch.manual_seed(0)
    model = build_maq2l(size="tiny", image_size=64, backbone_norm="batch", freeze_stem=False).eval()
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        one = torch.cat([model(x[i:i + 1]) for i in range(8)])
        mixed = model(x)
        with batch_one_semantics(model):
            batched = model(x)
            reversed_ = model(x.flip(0)).flip(0)
    assert model.transformer.mask_tiling == "reference"       # restored
    assert (mixed - one).abs().max() > 1e-4                    # batch 8 mixes samples' maps
    assert torch.allclose(batched, one, atol=1e-5, rtol=0)
    assert torch.allclose(reversed_, one, atol=1e-5, rtol=0)


def test_published_maq2l_scores_do_not_depend_on_batch_or_order(tiny, tmp_path):
    from benchmark.train import predict_run, train_run

    root, p = tiny
    cfg = resolve_run(p, "ma", {"epochs": 1, "eval_batch_size": 16})
    train_run(cfg, tmp_path / "ma")
    val = pd.read_csv(tmp_path / "ma/scores_val.csv")
    gt = pd.read_csv(root / "prepared/full/val.csv")
    rev = tmp_path / "rev.csv"
    gt.iloc[::-1].to_csv(rev, index=False)
    for bs in (1, 5, 32):
        names, probs = predict_run(tmp_path / "ma", rev, batch_size=bs)
        got = pd.DataFrame(probs, columns=val.columns[1:]).assign(Filename=names).set_index("Filename")
        np.testing.assert_allclose(got.loc[val["Filename"]].to_numpy(), val.iloc[:, 1:].to_numpy(), atol=1e-5, rtol=0)


def test_asl_saves_plain_weights_when_ema_wins(tiny, tmp_path, monkeypatch):
    import benchmark.train.checkpointing as ck
    from benchmark.train import train_run
    from benchmark.train.selection import Selector

    _, p = tiny
    monkeypatch.setattr(Selector, "select", lambda self, epoch, m: (self.state.update(best=1.0, best_epoch=epoch,
                                                                                       best_which="ema") or (True, "ema")))
    for protocol, saved in (("published", "plain"), ("corrected", "ema")):
        out = tmp_path / protocol
        s = train_run(resolve_run(p, "asl", {"epochs": 1, "protocol": protocol, "image_size": 32}), out)
        best = ck.load(out / ck.BEST)
        state = ck.load(out / ck.CHECKPOINT)
        assert best["which"] == saved and best["selected"] == "ema" and s["selected_model"] == "ema"
        ref = state["model"] if saved == "plain" else state["ema"]
        assert all(torch.equal(best["state_dict"][k], ref[k]) for k in ref)


def test_chen2018_final_scores_at_224(tiny, monkeypatch):
    from benchmark.train import inference

    _, p = tiny
    assert inference.scoring_config(resolve_run(p, "chen", {"image_size": 299})).image_size == 224
    assert inference.scoring_config(resolve_run(p, "chen", {"image_size": 299, "protocol": "corrected"})).image_size == 299
    ma = resolve_run(p, "ma", {"amp": True, "amp_dtype": "bfloat16"})
    assert inference.scoring_config(ma).runtime.amp is False        # infer.py: no autocast
    assert resolve_run(p, "ma", {"amp": True}).runtime.amp is True    # training keeps the recipe's amp


def test_readme_lists_every_quirk():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for q in quirks.QUIRKS:
        assert f"`{q.key}`" in text and q.reference in text, q.key
