"""Scores of a trained run: the evaluation sets of a run, and the one prediction path that
both the engine (right after training) and ``sewerbench predict --run`` go through.

``predict_run(out_dir, split_csv)`` re-loads a finished run (config.json + best.pt, or the
fitted scikit-learn model) and returns (filenames, probabilities); with ``out_csv`` it also
writes the scores CSV.
"""
from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from benchmark import quirks
from benchmark.config import RunConfig
from benchmark.errors import SewerbenchError
from benchmark.scores import write_scores
from benchmark.train.data import image_source, make_dataset, read_frame, targets_of
from benchmark.train.runtime import batch_one_semantics, build_model, infer, scoring_amp

log = logging.getLogger("benchmark.train.predict")


def eval_sets(cfg: RunConfig) -> dict[str, str]:
    """Which CSV each scores file comes from: val (full val), val_sub (the split's own val
    set, subset-trained runs only), test."""
    d = cfg.data
    sets = {"val": d.full_val_csv}
    if (os.path.normpath(d.val_csv) != os.path.normpath(d.full_val_csv)
            and not filecmp.cmp(d.val_csv, d.full_val_csv, shallow=False)):
        sets["val_sub"] = d.val_csv  # subset-trained runs: the paper's starred rows
    if d.test_csv and Path(d.test_csv).is_file():
        sets["test"] = d.test_csv
    elif d.test_csv:
        log.warning("%s not found: no scores_test.csv", d.test_csv)
    return sets


def score_frame(cfg: RunConfig, model, df, images, device=None, ctx=None,
                batch_size: int | None = None) -> tuple[list[str], np.ndarray]:
    """(filenames, probabilities (N, C) float64) of ``model`` on the rows of ``df``."""
    if cfg.kind == "sklearn":
        from benchmark.train.sklearn_io import sklearn_predict

        return sklearn_predict(model, df, images, cfg)
    cfg = scoring_config(cfg)
    if cfg.image_size != getattr(images, "image_size", (cfg.image_size,) * 2)[0]:
        images = image_source(cfg, ctx)   # final scores at another size (chen2018_eval_224)
    ds = make_dataset(df, images, cfg, train=False)
    with contextlib.ExitStack() as stack:
        if quirks.active(cfg, "maq2l_batch1_scores"):
            stack.enter_context(batch_one_semantics(model))
        res = infer(model, ds, cfg, device, ctx, batch_size=batch_size, desc="predict")
    return res["filenames"], res["probs"]


def scoring_config(cfg: RunConfig) -> RunConfig:
    """The configuration the final scores are computed under (the published protocol scores
    MA-Q2L in fp32 as its infer.py, and Chen2018 at 224 px as the official inference)."""
    if quirks.active(cfg, "maq2l_batch1_scores") and scoring_amp(cfg):
        cfg = cfg.replace(runtime=dataclasses.replace(cfg.runtime, amp=False, eval_amp=False))
    if quirks.active(cfg, "chen2018_eval_224"):
        cfg = cfg.replace(image_size=quirks.CHEN2018_PUBLISHED_EVAL_SIZE)
    return cfg


def predict_splits(cfg: RunConfig, model, images, device, ctx, out_dir: Path) -> dict:
    """Write scores_<set>.csv for every evaluation set; returns {set: file name}."""
    written = {}
    for name, csv in eval_sets(cfg).items():
        names, probs = score_frame(cfg, model, read_frame(csv, require_labels=False), images, device, ctx)
        if ctx is None or ctx.is_main:
            write_scores(Path(out_dir) / f"scores_{name}.csv", names, probs, cfg.binary)
        written[name] = f"scores_{name}.csv"
    return written


def load_run(out_dir: str | Path, device: str | None = None):
    """(cfg, model on device, device) of a finished run."""
    import benchmark.train.checkpointing as ck
    from benchmark.train.distributed import resolve_device
    from methods.registry import get_spec

    out_dir = Path(out_dir)
    cfg_path = out_dir / "config.json"
    if not cfg_path.is_file():
        raise SewerbenchError(f"{cfg_path}: not found (is {out_dir} a training run folder?)")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SewerbenchError(f"{cfg_path}: not a readable run configuration ({type(exc).__name__})") from None
    cfg = RunConfig.from_dict(raw, where=str(cfg_path))
    dev = resolve_device(device or cfg.runtime.device)
    if cfg.kind == "sklearn":
        from benchmark.train.sklearn_io import load_sklearn

        return cfg, load_sklearn(out_dir), dev
    train_targets = None
    if get_spec(cfg.method).needs_train_targets:
        train_targets = targets_of(read_frame(cfg.data.train_csv, True), False)
    model = build_model(cfg.replace(pretrained=False), train_targets)
    best = ck.load(out_dir / ck.BEST)
    model.load_state_dict(ck.clean_state_dict(best["state_dict"]))
    model.to(dev)
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    return cfg, model, dev


def predict_run(out_dir: str | Path, split_csv: str | Path, out_csv: str | Path | None = None,
                batch_size: int | None = None, device: str | None = None) -> tuple[list[str], np.ndarray]:
    """Scores of a finished run on ``split_csv``: (filenames, probabilities (N, C))."""
    cfg, model, dev = load_run(out_dir, device)
    df = read_frame(split_csv, require_labels=False)
    images = image_source(cfg, filenames=df["Filename"].astype(str))
    names, probs = score_frame(cfg, model, df, images, dev, batch_size=batch_size)
    if out_csv is not None:
        write_scores(out_csv, names, probs, cfg.binary)
    return names, probs
