"""End-to-end training engine tests on a tiny dataset (64 train / 32 val / 16 test images,
16 px) and a tiny CNN: outputs, selection, schedules, determinism, exact resume, the
binary / defect-only / aux-loss paths, AMP + channels_last on CPU, scikit-learn, CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmark.classes import SCORE_COLUMNS
from benchmark.cli import main
from benchmark.config import resolve_run
from benchmark.errors import SewerbenchError
from benchmark.train import predict_run, train_run
from helpers import make_tiny_dataset, tiny_params

TIMING = ["images_per_s", "epoch_seconds"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    params = tiny_params(root)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, params


def _history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns=TIMING)


class _Killed(Exception):
    """Raised by the test's epoch callback: the run dies right after an epoch's checkpoint."""


def _kill_after(epoch_index):
    def callback(epoch, row):
        if epoch >= epoch_index:
            raise _Killed(epoch)
    return callback


def _train(params, run, out, overrides=None, kill_after=None, **kw):
    cfg = resolve_run(params, run, overrides)
    if kill_after is None:
        return train_run(cfg, out, **kw)
    with pytest.raises(_Killed):
        train_run(cfg, out, callback=_kill_after(kill_after), **kw)
    return None


def test_outputs_selection_and_onecycle(tiny, tmp_path):
    root, params = tiny
    out = tmp_path / "run"
    s = _train(params, "tiny", out)
    for f in ["config.json", "checkpoint.pt", "best.pt", "history.csv", "scores_val.csv",
              "scores_test.csv", "train_summary.json", "dvclive/metrics.json", "dvclive/params.yaml",
              "dvclive/plots/metrics/val_mAP.tsv", "dvclive/plots/metrics/ema_val_F2_CIW.tsv"]:
        assert (out / f).is_file(), f
    assert not (out / "scores_val_sub.csv").exists()
    h = _history(out)
    assert list(h["epoch"]) == [1, 2]
    live = json.loads((out / "dvclive/metrics.json").read_text())
    assert live["step"] == 1 and live["val_mAP"] == pytest.approx(h["val_mAP"].iloc[-1])
    assert len(pd.read_csv(out / "dvclive/plots/metrics/train_loss.tsv", sep="\t")) == 2
    # selection: the better of plain / EMA mAP, best over epochs
    both = np.maximum(h["val_mAP"], h["ema_val_mAP"])
    assert s["selection_score"] == pytest.approx(both.max())
    assert s["best_epoch"] == int(both.idxmax()) + 1
    assert s["selected_model"] == ("ema" if h["ema_val_mAP"].iloc[s["best_epoch"] - 1]
                                   > h["val_mAP"].iloc[s["best_epoch"] - 1] else "plain")
    # OneCycle stepped once per iteration: 64 images / batch 16 = 4 steps per epoch
    m = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, epochs=2, steps_per_epoch=4, pct_start=0.2)
    lrs = []
    for _ in range(8):
        opt.step()
        ref.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert list(h["lr"]) == pytest.approx([lrs[3], lrs[7]], rel=1e-12)
    # scores: official header, one row per image, probabilities
    val = pd.read_csv(out / "scores_val.csv", dtype={"Filename": str})
    assert tuple(val.columns) == SCORE_COLUMNS and len(val) == 32
    assert val.iloc[:, 1:].to_numpy().min() >= 0 and val.iloc[:, 1:].to_numpy().max() <= 1
    gt = pd.read_csv(root / "prepared/full/val.csv", dtype={"Filename": str})
    assert list(val["Filename"]) == list(gt["Filename"])
    assert len(pd.read_csv(out / "scores_test.csv")) == 16
    summ = json.loads((out / "train_summary.json").read_text())
    for k in ["best_epoch", "selection_metric", "wall_seconds", "train_images_per_s", "device", "params"]:
        assert k in summ
    assert summ["train_images_per_s"] > 0 and summ["device"].startswith("cpu")
    # re-prediction from the run folder gives the same scores
    names, probs = predict_run(out, root / "prepared/full/val.csv")
    assert names == list(val["Filename"])
    np.testing.assert_allclose(probs, val.iloc[:, 1:].to_numpy(), rtol=0, atol=1e-12)


def test_same_seed_same_numbers_other_seed_differs(tiny, tmp_path):
    _, params = tiny
    over = {"aug": {"randaugment": True, "flip": 0.5}, "model": {"dropout": 0.2}}
    _train(params, "tiny", tmp_path / "a", over)
    _train(params, "tiny", tmp_path / "b", over)
    pd.testing.assert_frame_equal(_history(tmp_path / "a"), _history(tmp_path / "b"))
    assert (tmp_path / "a/scores_val.csv").read_bytes() == (tmp_path / "b/scores_val.csv").read_bytes()
    train_run(resolve_run(params, "tiny", over, seed=1), tmp_path / "c")
    assert not _history(tmp_path / "a").equals(_history(tmp_path / "c"))


def test_augmentation_independent_of_workers(tiny, tmp_path):
    _, params = tiny
    over = {"epochs": 1, "aug": {"randaugment": True, "flip": 0.5, "cutout": 0.5}}
    _train(params, "tiny", tmp_path / "w0", over)
    _train(params, "tiny", tmp_path / "w2", {**over, "workers": 2})
    pd.testing.assert_frame_equal(_history(tmp_path / "w0"), _history(tmp_path / "w2"))


@pytest.mark.parametrize("run", ["tiny", "tiny_sewer"])
def test_killed_and_resumed_equals_uninterrupted(tiny, tmp_path, run):
    _, params = tiny
    # augmentation, dropout and (tiny_sewer) BatchNorm make every RNG stream matter
    over = {"epochs": 3, "aug": {"randaugment": True, "flip": 0.5}, "model": {"dropout": 0.3}}
    _train(params, run, tmp_path / "full", over)
    _train(params, run, tmp_path / "resumed", over, kill_after=0)
    assert not (tmp_path / "resumed/scores_val.csv").exists()
    assert len(pd.read_csv(tmp_path / "resumed/history.csv")) == 1
    _train(params, run, tmp_path / "resumed", over, resume=True)
    pd.testing.assert_frame_equal(_history(tmp_path / "full"), _history(tmp_path / "resumed"))
    for f in ["scores_val.csv", "scores_test.csv"]:
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "resumed" / f).read_bytes()
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=False)
    for key in ("model", "ema"):
        if a[key] is not None:
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert len(pd.read_csv(tmp_path / "resumed/dvclive/plots/metrics/train_loss.tsv", sep="\t")) == 3
    # a resumed run must keep its configuration
    with pytest.raises(SewerbenchError, match="configuration changed"):
        _train(params, run, tmp_path / "resumed", {**over, "optimizer": {"lr": 0.5}}, resume=True)


def test_subset_run_writes_subset_val_scores(tiny, tmp_path):
    root, params = tiny
    s = _train(params, "tiny_sub", tmp_path / "sub", {"epochs": 1})
    assert s["scores"] == {"val": "scores_val.csv", "val_sub": "scores_val_sub.csv", "test": "scores_test.csv"}
    assert len(pd.read_csv(tmp_path / "sub/scores_val_sub.csv")) == 16
    assert len(pd.read_csv(tmp_path / "sub/scores_val.csv")) == 32
    assert s["train_images"] == 32


def test_sewerml_binary_and_defect_only(tiny, tmp_path):
    root, params = tiny
    s = _train(params, "tiny_sewer", tmp_path / "sewer")
    h = _history(tmp_path / "sewer")
    assert s["selection_metric"] == "val_loss" and s["selection_score"] == pytest.approx(h["val_loss"].min())
    # SGD lr 0.1 * 16 / 256, MultiStep [30, 60, 80] of 90 epochs rescaled to [1, 2] of 2, per epoch
    assert list(h["lr"]) == pytest.approx([0.1 * 16 / 256 * 0.1, 0.1 * 16 / 256 * 0.01])
    assert "ema_val_loss" not in h.columns

    b = _train(params, "tiny_binary", tmp_path / "bin")
    val = pd.read_csv(tmp_path / "bin/scores_val.csv")
    assert list(val.columns) == ["Filename", "Defect"] and len(val) == 32
    assert b["params"] == sum(p.numel() for p in torch.nn.Linear(8, 1).parameters()) + 8 * 3 * 9 + 8 + 8 * 8 * 9 + 8

    s2 = _train(params, "tiny_stage2", tmp_path / "stage2")  # Inception-style aux output
    train = pd.read_csv(root / "prepared/full/train.csv")
    val_gt = pd.read_csv(root / "prepared/full/val.csv")
    assert s2["train_images"] == int(train["Defect"].sum())
    assert s2["val_images"] == int(val_gt["Defect"].sum())
    assert len(pd.read_csv(tmp_path / "stage2/scores_val.csv")) == 32  # predicted on every image


def test_amp_bf16_and_channels_last_on_cpu(tiny, tmp_path):
    _, params = tiny
    over = {"amp": True, "amp_dtype": "bfloat16", "channels_last": True, "grad_clip": 1.0, "epochs": 1}
    seen = []
    cfg = resolve_run(params, "tiny", over)

    def cb(epoch, row):
        seen.append(row)

    s = train_run(cfg, tmp_path / "amp", callback=cb)
    assert len(seen) == 1 and np.isfinite(seen[0]["train_loss"])
    assert s["amp"] is True and s["amp_dtype"] == "bfloat16"
    assert np.isfinite(pd.read_csv(tmp_path / "amp/scores_val.csv").iloc[:, 1:].to_numpy()).all()
    # the autocast context really runs the conv in bf16 on CPU with channels_last input
    from benchmark.train.runtime import autocast, to_input

    net = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    x = to_input(torch.randn(2, 3, 8, 8), torch.device("cpu"), True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with autocast(torch.device("cpu"), cfg):
        assert net(x).dtype == torch.bfloat16


def test_eval_amp_false_scores_in_fp32_while_training_in_bf16(tiny, tmp_path):
    """``eval_amp: false`` (the smoke profile): training under bf16 autocast, validation and the
    final scores in fp32 (bf16 logits tie); ``eval_amp: null`` scores as ``amp``."""
    from benchmark.train.runtime import autocast, scoring_amp

    _, params = tiny
    base = {"amp": True, "amp_dtype": "bfloat16", "epochs": 1}
    fp32 = resolve_run(params, "tiny", {**base, "eval_amp": False})
    bf16 = resolve_run(params, "tiny", base)
    assert scoring_amp(fp32) is False and scoring_amp(bf16) is True
    assert scoring_amp(resolve_run(params, "tiny", {"amp": False, "eval_amp": True})) is True
    net, x = torch.nn.Conv2d(3, 4, 3), torch.randn(2, 3, 8, 8)
    cpu = torch.device("cpu")
    with autocast(cpu, fp32):
        assert net(x).dtype == torch.bfloat16
    with autocast(cpu, fp32, scoring=True):
        assert net(x).dtype == torch.float32
    with autocast(cpu, bf16, scoring=True):
        assert net(x).dtype == torch.bfloat16
    sa = train_run(fp32, tmp_path / "fp32")
    sb = train_run(bf16, tmp_path / "bf16")
    assert sa["eval_amp"] is False and sb["eval_amp"] is True
    ha, hb = _history(tmp_path / "fp32"), _history(tmp_path / "bf16")
    assert ha["train_loss"].tolist() == hb["train_loss"].tolist()     # the same training
    va = pd.read_csv(tmp_path / "fp32/scores_val.csv").iloc[:, 1:].to_numpy()
    vb = pd.read_csv(tmp_path / "bf16/scores_val.csv").iloc[:, 1:].to_numpy()
    assert not np.array_equal(va, vb)                                  # scored differently
    assert np.abs(va - vb).max() < 0.05                                # the same model


def test_fp16_gradscaler_path_and_resume_on_cpu(tiny, tmp_path):
    _, params = tiny
    over = {"amp": True, "amp_dtype": "float16", "epochs": 2}
    _train(params, "tiny", tmp_path / "a", over)
    ck = torch.load(tmp_path / "a/checkpoint.pt", weights_only=False)
    assert ck["scaler"]["scale"] > 0  # the GradScaler ran and its state is checkpointed
    _train(params, "tiny", tmp_path / "b", over, kill_after=0)
    _train(params, "tiny", tmp_path / "b", over, resume=True)
    pd.testing.assert_frame_equal(_history(tmp_path / "a"), _history(tmp_path / "b"))


def test_bce_pos_weight_from_training_labels(tiny):
    """Hand values of the recipe's ``pos_weight: auto``; that a training run's criterion holds
    the *training* split's weights (also binary / defect-only) is checked through the engine
    in tests/test_engine_invariants.py."""
    from benchmark.train.runtime import build_criterion

    _, params = tiny
    y = np.zeros((4, 17), dtype=np.int64)
    y[[0, 1, 3], 0] = 1          # RB: 3 of 4 -> (4 - 3) / 3
    y[[1, 2], 2] = 1             # PF: 2 of 4 -> 1
    y[0, 3:] = 1                 # DE..OK: 1 of 4 -> 3; OB has no positives -> 0
    crit = build_criterion(resolve_run(params, "tiny_sewer"), y, torch.device("cpu"))
    assert crit.pos_weight.tolist() == pytest.approx([1 / 3, 0.0, 1.0] + [3.0] * 14, rel=1e-6)


def test_sklearn_myrans(tiny, tmp_path):
    _, params = tiny
    over = {"sklearn": {"n_jobs": 1, "grid": {"n_estimators": [2, 5], "max_depth": [5], "max_features": ["sqrt"]}}}
    s = _train(params, "myrans", tmp_path / "m", over)
    val = pd.read_csv(tmp_path / "m/scores_val.csv")
    assert tuple(val.columns) == SCORE_COLUMNS and len(val) == 32
    assert (tmp_path / "m/model.skops").is_file() and (tmp_path / "m/dvclive/metrics.json").is_file()
    assert s["train_images"] == 64
    _train(params, "myrans_binary", tmp_path / "mb", over)
    assert list(pd.read_csv(tmp_path / "mb/scores_test.csv").columns) == ["Filename", "Defect"]
    root = tiny[0]
    names, probs = predict_run(tmp_path / "m", root / "prepared/full/val.csv")
    np.testing.assert_allclose(probs, val.iloc[:, 1:].to_numpy(), rtol=0, atol=1e-12)


def test_cli_train_and_errors(tiny, tmp_path, capsys):
    root, _ = tiny
    p = str(root / "params.yaml")
    assert main(["train", "tiny", "--params", p, "--out", str(tmp_path / "cli"), "--set", "epochs=1",
                 "--set", "optimizer.lr=1e-3"]) == 0
    cfg = json.loads((tmp_path / "cli/config.json").read_text())
    assert cfg["epochs"] == 1 and cfg["optimizer"]["lr"] == 1e-3
    assert (tmp_path / "cli/scores_test.csv").is_file()
    # `sewerbench predict --run` re-scores a split with the run's selected model
    out_csv = tmp_path / "again.csv"
    assert main(["predict", "--run", str(tmp_path / "cli"), "--csv", cfg["data"]["test_csv"],
                 "--out", str(out_csv)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out_csv), pd.read_csv(tmp_path / "cli/scores_test.csv"))
    assert main(["predict", "--run", str(tmp_path / "cli"), "--out", str(out_csv)]) == 2
    assert "--run needs --csv" in capsys.readouterr().err
    assert main(["predict", "--run", str(tmp_path), "--csv", cfg["data"]["test_csv"],
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main(["train", "--run", "nope", "--params", p]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sewerbench: error:") and "no run named 'nope'" in err and err.count("\n") == 1
    assert main(["train", "tiny", "--params", p, "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "tiny_cnn"


def test_early_stopping_rule_and_stop_epoch(tiny, tmp_path):
    from benchmark.train.selection import Selector

    _, params = tiny
    t = Selector(resolve_run(params, "tiny", {"early_stop": {"patience": 2}, "epochs": 40}))
    plain = [0.5, 0.6, 0.55, 0.55, 0.58, 0.4]
    ema = [0.4, 0.5, 0.62, 0.61, 0.60, 0.59]
    stops = []
    for e, (p, m) in enumerate(zip(plain, ema)):
        is_best, which = t.select(e, {"val_mAP": p, "ema_val_mAP": m})
        assert is_best == (e in (0, 1, 2)) and (which == "ema") == (m > p)
        stops.append(t.should_stop(e))
    # best (EMA 0.62) at epoch 2, best plain at epoch 1: stop once epoch - 2 > 2 with EMA below its best
    assert stops[:5] == [None] * 5 and stops[5].startswith("early stop")
    assert (t.state["best"], t.state["best_epoch"], t.state["best_which"]) == (0.62, 2, "ema")
    t = Selector(resolve_run(params, "tiny_sewer", {"early_stop": None, "stop_epoch": 1, "epochs": 90}))
    assert t.select(0, {"val_loss": 2.0})[0] and t.select(1, {"val_loss": 1.0})[0]
    assert not t.select(2, {"val_loss": float("nan")})[0]
    assert t.should_stop(0) is None and t.should_stop(1).startswith("stop_epoch")

    _, params = tiny
    s = _train(params, "tiny", tmp_path / "asl_like", {"stop_epoch": 0})
    assert s["epochs_run"] == 1 and s["stop_reason"].startswith("stop_epoch")
    assert len(pd.read_csv(tmp_path / "asl_like/history.csv")) == 1


def test_registry_methods_through_the_engine(tiny, tmp_path):
    """A real registry model trains end to end; KSSNet gets its label graph from training labels."""
    from benchmark.train.runtime import build_model

    _, params = tiny
    p = {**params, "runs": {**params["runs"],
                            "xie": {"method": "xie2019", "recipe": "sewerml", "split": "full"},
                            "kss": {"method": "kssnet", "recipe": "sewerml", "split": "full"}}}
    s = _train(p, "xie", tmp_path / "xie", {"epochs": 1, "image_size": 32})
    assert s["method"] == "xie2019" and s["params"] > 0
    assert tuple(pd.read_csv(tmp_path / "xie/scores_val.csv").columns) == SCORE_COLUMNS
    cfg = resolve_run(p, "kss")
    y = (np.random.default_rng(0).random((40, 17)) < 0.3).astype(np.float32)
    model = build_model(cfg, y)
    assert model.adjacency_source == "training labels"


def test_runtime_threads_during_the_run_and_a_bad_value_refused_first(tiny, tmp_path, monkeypatch):
    """``threads: N`` runs the training with N torch threads and restores the caller's count;
    a bad count is a one-line error before the run folder exists."""
    import benchmark.train.loop as loop

    _, params = tiny
    seen = []
    real = loop.Trainer.run

    def run(self):
        seen.append(torch.get_num_threads())
        return real(self)
    monkeypatch.setattr(loop.Trainer, "run", run)
    before = torch.get_num_threads()
    _train(params, "tiny", tmp_path / "t2", {"epochs": 1, "threads": 2})
    assert seen == [2] and torch.get_num_threads() == before
    with pytest.raises(SewerbenchError, match=r"run tiny: threads: must be an integer >= 1 or null, got 0"):
        _train(params, "tiny", tmp_path / "t0", {"epochs": 1, "threads": 0})
    assert not (tmp_path / "t0").exists()
