"""Reliability, fault class "code runs on load": no file we read can run code.

Training checkpoints (``checkpoint.pt``, ``best.pt``) load with ``weights_only=True``; imported
checkpoints (``predict --checkpoint``) likewise; scikit-learn models go through skops with a
trusted-types list. Each crafted file below carries a payload that writes a marker file when
unpickled/constructed; every test proves the payload is live (a control load without the
protection runs it) and that our loaders refuse the file, naming it, without running it.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from benchmark.errors import SewerbenchError
from benchmark.train import checkpointing as ck


class Payload:
    """Unpickling this object calls ``exec`` on code that writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class SetstatePayload:
    """skops builds objects with ``__new__`` + ``__setstate__``: this one writes a marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").write("pwned")
        self.__dict__.update(state)

    def predict_proba(self, x):  # pragma: no cover - never reached
        return x


def _crafted_torch(path, marker, kind="zip"):
    obj = {"state_dict": {"w": torch.zeros(2)}, "epoch": 1, "evil": Payload(marker)}
    if kind == "zip":
        torch.save(obj, path)
    else:  # the legacy (non-zip) torch format, and a bare pickle
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)


def _assert_live(path, marker):
    """Control: without weights_only the payload does run (so the refusal test means something)."""
    if zipfile.is_zipfile(path):
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as fh:
            pickle.load(fh)
    assert marker.read_text() == "pwned"
    marker.unlink()


@pytest.mark.parametrize("name", [ck.CHECKPOINT, ck.BEST])
@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_crafted_training_checkpoint_is_refused_and_payload_never_runs(tmp_path, name, kind):
    path, marker = tmp_path / name, tmp_path / "marker"
    _crafted_torch(path, marker, kind)
    _assert_live(path, marker)
    with pytest.raises(SewerbenchError) as e:
        ck.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: refused") and "\n" not in msg
    assert not marker.exists()


def test_crafted_checkpoint_refused_by_the_import_path(tmp_path):
    """``predict --checkpoint`` (methods.checkpoint) refuses the same file."""
    from methods.checkpoint import read_checkpoint

    path, marker = tmp_path / "model_best.pth.tar", tmp_path / "marker"
    _crafted_torch(path, marker)
    with pytest.raises(SewerbenchError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()


def test_our_checkpoints_are_plain_data_loadable_with_weights_only(tmp_path):
    """What the engine saves (incl. optimizer, scheduler, scaler and RNG state) loads with a
    plain ``torch.load(weights_only=True)``: no allow-listed globals needed."""
    from benchmark import seed as seeding

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10)
    ms = torch.optim.lr_scheduler.MultiStepLR(torch.optim.SGD(model.parameters(), lr=0.1), [1, 2])
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    sch.step()
    np.random.seed(3)
    np.random.randn()  # a cached gaussian in the numpy state
    state = {"format": 1, "epoch": 0, "config": {"run": "x", "lr": 1e-3, "milestones": [1, 2]},
             "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sch.state_dict(),
             "multistep": ms.state_dict(), "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
             "rng": seeding.rng_state(), "history": [{"epoch": 1, "val_mAP": np.float64(0.5)}]}
    ck.save(state, tmp_path / ck.CHECKPOINT)
    raw = torch.load(tmp_path / ck.CHECKPOINT, weights_only=True)  # no safe_globals at all
    assert ck.INTEGRITY_KEY in raw
    back = ck.load(tmp_path / ck.CHECKPOINT)
    assert ck.INTEGRITY_KEY not in back and back["history"][0]["val_mAP"] == 0.5
    assert all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())
    # the RNG state restores exactly
    a = (np.random.randn(), np.random.rand(), torch.rand(1).item())
    seeding.set_rng_state(back["rng"])
    assert (np.random.randn(), np.random.rand(), torch.rand(1).item()) == a


def test_saving_a_non_plain_object_fails_before_writing(tmp_path):
    with pytest.raises(SewerbenchError, match=r"checkpoint.pt.*evil.*Payload.*not plain data"):
        ck.save({"evil": Payload(tmp_path / "m")}, tmp_path / ck.CHECKPOINT)
    assert list(tmp_path.iterdir()) == []


def test_legacy_checkpoint_with_numpy_rng_state_still_loads(tmp_path):
    """Files written before the plain-data format (numpy RNG state tuple) still resume."""
    from benchmark import seed as seeding

    legacy = {"rng": {"python": __import__("random").getstate(), "numpy": np.random.get_state(),
                      "torch": torch.get_rng_state()}, "model": {"w": torch.ones(1)}}
    torch.save(legacy, tmp_path / "old.pt")
    back = ck.load(tmp_path / "old.pt")
    a = np.random.rand()
    seeding.set_rng_state(back["rng"])
    assert np.random.rand() == a


# ----------------------------------------------------------------------------- integration
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from benchmark.config import resolve_run
    from benchmark.train import train_run
    from helpers import make_tiny_dataset, tiny_params

    torch.set_num_threads(1)
    root = make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    params = tiny_params(root)
    out = root / "run"
    train_run(resolve_run(params, "tiny", {"epochs": 1}), out)
    return root, params, out


def test_predict_run_refuses_a_crafted_best_pt(tiny_run, tmp_path, capsys):
    import shutil

    from benchmark.cli import main

    root, _, out = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    marker = tmp_path / "marker"
    _crafted_torch(run / ck.BEST, marker)
    scores = tmp_path / "scores.csv"
    rc = main(["predict", "--run", str(run), "--csv", str(root / "prepared/full/test.csv"),
               "--out", str(scores)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(run / ck.BEST) in err and "refused" in err
    assert not marker.exists() and not scores.exists()


def test_resume_refuses_a_crafted_checkpoint_pt(tiny_run, tmp_path):
    import shutil

    from benchmark.config import resolve_run
    from benchmark.train import train_run

    _, params, out = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    marker = tmp_path / "marker"
    _crafted_torch(run / ck.CHECKPOINT, marker)
    with pytest.raises(SewerbenchError, match=rf"{ck.CHECKPOINT}: refused"):
        train_run(resolve_run(params, "tiny", {"epochs": 1}), run, resume=True)
    assert not marker.exists()


# ----------------------------------------------------------------------------- our best.pt
@pytest.mark.parametrize("method", ["maq2l", "q2l"])
def test_our_trainable_bn_best_pt_loads_in_checkpoint_mode(tmp_path, method):
    """A best.pt of ours (smoke profile: trainable BatchNorm, num_batches_tracked) loads in
    ``predict --checkpoint`` mode and predicts exactly what the trained model predicts."""
    from methods.checkpoint import build_from_checkpoint
    from methods.maq2l import build_maq2l
    from methods.q2l import build_q2l

    torch.manual_seed(0)
    build = build_maq2l if method == "maq2l" else build_q2l
    model = build(size="tiny", backbone_norm="batch", freeze_stem=False)
    model.train()
    model(torch.randn(2, 3, 64, 64))  # BN statistics and counters move
    model.eval()
    assert any(k.endswith("num_batches_tracked") for k in model.state_dict())
    path = tmp_path / ck.BEST
    ck.save({"state_dict": model.state_dict(), "epoch": 1, "which": "plain", "selection": "mAP",
             "score": 0.5}, path)
    loaded = build_from_checkpoint(method, path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_not_a_q2l_checkpoint_error_names_the_file(tmp_path):
    from methods.checkpoint import build_from_checkpoint

    path = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(17, 4)}}, path)
    with pytest.raises(SewerbenchError) as e:
        build_from_checkpoint("maq2l", path)
    assert str(e.value).startswith(f"{path}: checkpoint has no 'query_embed.weight'")


# ----------------------------------------------------------------------------- skops
@pytest.fixture(scope="module")
def fitted_myrans():
    from methods.myrans2018 import build_myrans2018, build_myrans2018_binary

    rng = np.random.default_rng(0)
    x = rng.random((60, 512))
    y = (rng.random((60, 17)) < 0.3).astype(int)
    small = {"n_estimators": [2, 3], "max_depth": [4], "max_features": ["sqrt"]}
    multi = build_myrans2018(size="tiny", n_jobs=1, grid=small).fit_features(x, y, x[:20], y[:20])  # grid search
    binary = build_myrans2018_binary(size="tiny", n_jobs=1, grid_search=False).fit_features(
        x, (rng.random(60) < 0.4).astype(int))
    return x, multi, binary


def test_sklearn_model_round_trip(tmp_path, fitted_myrans):
    from benchmark.sk_io import MODEL_FILE, load_sklearn_model, save_sklearn_model

    x, multi, binary = fitted_myrans
    for i, model in enumerate((multi, binary)):
        path = tmp_path / str(i) / MODEL_FILE
        save_sklearn_model(model, path)
        assert zipfile.is_zipfile(path) and [p.name for p in path.parent.iterdir()] == [MODEL_FILE]
        back = load_sklearn_model(path)
        assert type(back) is type(model) and back.binary == model.binary
        assert np.array_equal(back.predict_proba_features(x), model.predict_proba_features(x))


def test_crafted_skops_file_is_refused_and_payload_never_runs(tmp_path):
    import skops.io as sio

    from benchmark.sk_io import load_sklearn_model

    marker, path = tmp_path / "marker", tmp_path / "model.skops"
    sio.dump(SetstatePayload(marker), path)
    untrusted = sio.get_untrusted_types(file=path)
    assert any(t.endswith("SetstatePayload") for t in untrusted)
    sio.load(path, trusted=untrusted)  # control: trusting it runs the payload
    assert marker.read_text() == "pwned"
    marker.unlink()
    with pytest.raises(SewerbenchError) as e:
        load_sklearn_model(path)
    assert str(e.value).startswith(f"{path}: refused: the file names untrusted types")
    assert "SetstatePayload" in str(e.value) and not marker.exists()


def test_pickle_named_model_skops_is_refused(tmp_path, fitted_myrans):
    from benchmark.sk_io import load_sklearn_model

    marker, path = tmp_path / "model.marker", tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(Payload(marker)))
    pickle.loads(path.read_bytes())  # control: the payload is live
    assert marker.exists()
    marker.unlink()
    with pytest.raises(SewerbenchError, match=r"model.skops: not a skops model file"):
        load_sklearn_model(path)
    assert not marker.exists()
    # a run of an older sewerbench: its model.pkl is never loaded, the message says why
    path.unlink()
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(fitted_myrans[1]))
    with pytest.raises(SewerbenchError, match=r"model.skops: model file not found; .*model.pkl is a "
                                              r"pickle .* retrain"):
        load_sklearn_model(path)


def test_saving_an_untrusted_object_writes_nothing(tmp_path):
    from benchmark.sk_io import save_sklearn_model

    with pytest.raises(SewerbenchError, match="not trusted for loading"):
        save_sklearn_model(SetstatePayload(tmp_path / "m"), tmp_path / "model.skops")
    assert list(tmp_path.iterdir()) == []


def test_digest_covers_every_tensor_byte():
    """Changing one element of one tensor (or a plain value) changes the digest."""
    state = {"a": torch.arange(10, dtype=torch.float32), "b": [1, 2.5, "x", None, (True,)]}
    d = ck.digest(state)
    state["a"][7] += 1
    assert ck.digest(state) != d
    state["a"][7] -= 1
    assert ck.digest(state) == d
    state["b"][1] = 2.5000001
    assert ck.digest(state) != d
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1, dtype=torch.bfloat16), "y": torch.zeros(2, dtype=torch.bool)}, buf)
    buf.seek(0)
    assert ck.digest(torch.load(buf, weights_only=True))  # every dtype hashes
    assert os.path.basename(ck.BEST) == "best.pt"
