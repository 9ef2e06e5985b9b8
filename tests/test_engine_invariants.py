"""Engine invariants checked from outside the engine, on tiny CPU runs (about a second each).

* the loss criterion holds the BCE ``pos_weight`` of the *training* split (multi-label,
  binary and defect-only runs), observed at every BCE call;
* ``best.pt`` holds exactly the selected model (plain or EMA) at ``best_epoch``, and
  re-evaluating ``scores_val.csv`` reproduces ``selection_score``;
* the trainer's EMA has the configured decay and is updated after every optimiser step,
  and its weights equal an EMA recomputed here from the models it was fed.

Only the stable entry points ``resolve_run`` / ``train_run`` are used; instrumentation is
monkeypatched on stable objects (``torch.nn.functional``, ``ModelEma``, the global optimiser
step hook, ``train_run``'s epoch callback).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import tinyrun
from benchmark.classes import CLASS_CODES
from benchmark.config import resolve_run
from benchmark.train.ema import ModelEma
from benchmark.train.engine import train_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = tinyrun.make_dataset(tmp_path_factory.mktemp("tiny_inv"))
    return root, tinyrun.params(root)


def _clone(sd):
    return {k: v.detach().clone() for k, v in sd.items()}


def _hand_pos_weight(y: np.ndarray) -> np.ndarray:
    """Sewer-ML class weights (N - N_c) / N_c, 0 for a class without positives, by loop."""
    n = y.shape[0]
    out = []
    for k in range(y.shape[1]):
        pos = int(sum(1 for v in y[:, k] if v == 1))
        out.append(0.0 if pos == 0 else (n - pos) / pos)
    return np.array(out)


# ----------------------------------------------------------------------------- pos_weight
@pytest.mark.parametrize("run", ["tiny_sewer", "tiny_binary", "tiny_stage2"])
def test_criterion_pos_weight_is_the_training_splits(tiny, tmp_path, monkeypatch, run):
    root, params = tiny
    train = pd.read_csv(root / "prepared/full/train.csv")
    val = pd.read_csv(root / "prepared/full/val.csv")
    if run == "tiny_stage2":                      # defect-only: the training rows with a defect
        train, val = train[train["Defect"] == 1], val[val["Defect"] == 1]
    cols = ["Defect"] if run == "tiny_binary" else list(CLASS_CODES)
    expect = _hand_pos_weight(train[cols].to_numpy())
    wrong = _hand_pos_weight(val[cols].to_numpy())
    assert not np.allclose(expect, wrong)           # the splits really differ
    if run == "tiny_stage2":                        # ... and so do all rows vs defect rows
        all_rows = pd.read_csv(root / "prepared/full/train.csv")[cols].to_numpy()
        assert not np.allclose(expect, _hand_pos_weight(all_rows))
    if run != "tiny_binary":
        assert expect[14] == 0.0                    # OS has no training positives

    seen = []
    orig = torch.nn.functional.binary_cross_entropy_with_logits

    def spy(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
            pos_weight=None):
        seen.append(None if pos_weight is None else pos_weight.detach().cpu().double().numpy().copy())
        return orig(input, target, weight, size_average, reduce, reduction, pos_weight)

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", spy)
    train_run(resolve_run(params, run, {"epochs": 1}), tmp_path / run)
    n_train = len(train)
    # every training step (two calls with the aux head) and the validation pass used it
    assert len(seen) >= n_train // 16
    for pw in seen:
        assert pw is not None and pw.shape == expect.shape
        np.testing.assert_allclose(pw, expect, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- EMA / selection
class _EmaSpy:
    """Records every ModelEma built and every update (with the model state it was given and
    the number of optimiser steps taken so far) and snapshots models after each epoch."""

    def __init__(self, monkeypatch):
        self.instances, self.models, self.init_states = [], [], []
        self.updates: list[tuple[int, dict]] = []
        self.steps = 0
        self.epochs: list[dict] = []
        orig_init, orig_update = ModelEma.__init__, ModelEma.update
        spy = self

        def init(self, model, *args, **kwargs):
            spy.init_states.append(_clone(model.state_dict()))
            orig_init(self, model, *args, **kwargs)
            spy.instances.append(self)
            spy.models.append(model)

        def update(self, model, *args, **kwargs):
            spy.updates.append((spy.steps, _clone(model.state_dict())))
            return orig_update(self, model, *args, **kwargs)

        monkeypatch.setattr(ModelEma, "__init__", init)
        monkeypatch.setattr(ModelEma, "update", update)

    def hook(self, optimizer, args, kwargs):
        self.steps += 1

    def callback(self, epoch, row):
        self.epochs.append({"epoch": epoch, "row": dict(row), "steps": self.steps,
                            "updates": len(self.updates),
                            "plain": _clone(self.models[0].state_dict()),
                            "ema": _clone(self.instances[0].module.state_dict())})


def _train_spied(params, out, overrides, monkeypatch):
    spy = _EmaSpy(monkeypatch)
    handle = register_optimizer_step_post_hook(spy.hook)
    try:
        summary = train_run(resolve_run(params, "tiny", overrides), out, callback=spy.callback)
    finally:
        handle.remove()
    return spy, summary


def test_ema_has_configured_decay_and_updates_after_every_step(tiny, tmp_path, monkeypatch):
    _, params = tiny
    decay = 0.8  # neither the recipe's 0.9 nor ModelEma's default
    over = {"epochs": 2, "ema": {"decay": decay}, "model": {"batchnorm": True}}
    spy, _ = _train_spied(params, tmp_path / "ema", over, monkeypatch)
    assert len(spy.instances) == 1
    assert spy.instances[0].decay == decay
    steps_per_epoch = 64 // 16
    assert spy.steps == 2 * steps_per_epoch
    # update k (1-based) comes right after optimiser step k: once per step, never per epoch
    assert [s for s, _ in spy.updates] == list(range(1, 2 * steps_per_epoch + 1))
    assert [e["updates"] for e in spy.epochs] == [steps_per_epoch, 2 * steps_per_epoch]
    # the EMA weights equal an average recomputed here from the fed models
    ema = _clone(spy.init_states[0])
    done = 0
    for snap in spy.epochs:
        for _, model_state in spy.updates[done:snap["updates"]]:
            for k, v in model_state.items():
                ema[k] = decay * ema[k] + (1 - decay) * v if v.is_floating_point() else v.clone()
        done = snap["updates"]
        assert set(snap["ema"]) == set(ema)
        for k, v in snap["ema"].items():
            torch.testing.assert_close(v, ema[k], rtol=1e-5, atol=1e-6, msg=k)
        assert not all(torch.equal(v, snap["plain"][k]) for k, v in snap["ema"].items())


@pytest.mark.parametrize("overrides, which, best_epoch", [
    # EMA wins at epoch 2 of 3
    ({"epochs": 3, "optimizer": {"lr": 3e-3}, "ema": {"decay": 0.8}}, "ema", 2),
    # the plain model wins at epoch 3 of 4
    ({"epochs": 4, "optimizer": {"lr": 3e-3}, "ema": {"decay": 0.5}}, "plain", 3),
])
def test_best_checkpoint_is_the_selected_model_at_best_epoch(tiny, tmp_path, monkeypatch,
                                                             overrides, which, best_epoch):
    from benchmark import metrics as M
    from benchmark.train import checkpointing as ck

    root, params = tiny
    out = tmp_path / "sel"
    spy, s = _train_spied(params, out, overrides, monkeypatch)
    rows = [e["row"] for e in spy.epochs]
    # selection recomputed from the per-epoch validation scores: best of plain and EMA
    cand = [max(r["val_mAP"], r["ema_val_mAP"]) for r in rows]
    best = int(np.argmax(cand))
    picked = "ema" if rows[best]["ema_val_mAP"] > rows[best]["val_mAP"] else "plain"
    assert (best + 1, picked) == (best_epoch, which)  # the scenario exercises this branch
    assert s["best_epoch"] == best_epoch and s["selected_model"] == which
    assert s["selection_score"] == cand[best]
    other = "plain" if which == "ema" else "ema"

    blob = ck.load(out / ck.BEST)
    sd = blob["state_dict"] if "state_dict" in blob else blob
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    want = spy.epochs[best][which]
    assert set(sd) == set(want)
    assert all(torch.equal(sd[k], want[k]) for k in want)
    assert not all(torch.equal(sd[k], spy.epochs[best][other][k]) for k in want)
    assert not all(torch.equal(sd[k], spy.epochs[-1][which][k]) for k in want)  # not the last epoch

    # the written val scores come from that model: their mAP is the selection score
    sc = pd.read_csv(out / "scores_val.csv", dtype={"Filename": str})
    gt = pd.read_csv(root / "prepared/full/val.csv", dtype={"Filename": str})
    assert list(sc["Filename"]) == list(gt["Filename"])
    m = M.evaluate(sc[list(CLASS_CODES)].to_numpy(), gt[list(CLASS_CODES)].to_numpy())
    assert m["Main"]["mAP"] == pytest.approx(s["selection_score"], abs=1e-12)


class _Killed(Exception):
    pass


def test_resume_after_the_best_epoch_keeps_the_selection(tiny, tmp_path):
    """Killed right after the best epoch (3 of 4) and resumed: the last, worse epoch must not
    replace the best model; summary, best.pt and scores equal the uninterrupted run's."""
    from benchmark.train import checkpointing as ck

    _, params = tiny
    over = {"epochs": 4, "optimizer": {"lr": 3e-3}, "ema": {"decay": 0.5}}
    full = train_run(resolve_run(params, "tiny", over), tmp_path / "full")
    assert full["best_epoch"] == 3 and full["epochs_run"] == 4

    def kill(epoch, row):
        if epoch == 2:
            raise _Killed()

    with pytest.raises(_Killed):
        train_run(resolve_run(params, "tiny", over), tmp_path / "res", callback=kill)
    assert not (tmp_path / "res/scores_val.csv").exists()
    res = train_run(resolve_run(params, "tiny", over), tmp_path / "res", resume=True)
    for k in ("best_epoch", "selected_model", "selection_score", "epochs_run"):
        assert res[k] == full[k], k
    a, b = ck.load(tmp_path / "full" / ck.BEST), ck.load(tmp_path / "res" / ck.BEST)
    sa, sb = a.get("state_dict", a), b.get("state_dict", b)
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    for f in ("scores_val.csv", "scores_test.csv"):
        assert (tmp_path / "full" / f).read_bytes() == (tmp_path / "res" / f).read_bytes()
