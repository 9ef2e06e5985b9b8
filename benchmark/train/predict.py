"""Inference over a dataset (sharded over DDP ranks, gathered in dataset order) and the
official scores CSVs of a trained run.

``predict_run(out_dir, split_csv)`` re-loads a finished run (config.json + best.pt, or
model.pkl for scikit-learn methods) and returns (filenames, probabilities); with
``out_csv`` it also writes the scores CSV.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from benchmark.classes import CLASS_CODES
from benchmark.errors import SewerbenchError
from benchmark.io import atomic_to_csv

log = logging.getLogger(__name__)

AMP_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
              "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def autocast(device: torch.device, cfg: dict):
    """The run's autocast context (no-op when amp is off)."""
    if not cfg.get("amp"):
        return contextlib.nullcontext()
    dtype = AMP_DTYPES.get(str(cfg.get("amp_dtype", "float16")).lower())
    if dtype is None:
        raise SewerbenchError(f"amp_dtype must be float16 or bfloat16, got {cfg.get('amp_dtype')!r}")
    return torch.autocast(device_type=device.type, dtype=dtype)


def main_logits(out):
    """Logits of a model output; Inception-style (logits, aux) tuples give the main head."""
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "logits"):
        return out.logits
    return out


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def infer(model: torch.nn.Module, dataset, cfg: dict, device: torch.device, ctx=None,
          criterion=None, batch_size: int | None = None, desc: str = "predict") -> dict:
    """Logits (N, C) in dataset order, targets and the sample-weighted mean loss.

    Each rank runs indices rank, rank + W, ...; results are all-gathered, so every rank
    returns the full arrays.
    """
    from benchmark.seed import worker_init_fn
    from benchmark.train.distributed import ShardSampler
    from tqdm.auto import tqdm

    rank = ctx.rank if ctx is not None else 0
    world = ctx.world_size if ctx is not None else 1
    sampler = ShardSampler(len(dataset), rank, world)
    # a global batch split over the ranks (the value only affects speed, not results)
    bs = max(1, int(batch_size or cfg.get("eval_batch_size") or cfg["batch_size"]) // world)
    loader = DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=int(cfg.get("workers", 0)),
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn,
                        persistent_workers=False)
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    loss_sum, count = 0.0, 0
    show = (ctx is None or ctx.is_main) and cfg.get("progress", True)
    for x, y, _ in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if show else True):
        x = to_input(x, device, cfg.get("channels_last", False))
        with autocast(device, cfg):
            out = main_logits(model(x))
        logits = out.float()
        if criterion is not None:
            loss = criterion(logits, y.to(device).float())
            loss_sum += float(loss) * x.shape[0]
            count += x.shape[0]
        chunks.append(logits.cpu())
    model.train(was_training)
    local = torch.cat(chunks) if chunks else torch.zeros((0, int(cfg.get("num_outputs", 17))))
    idx = np.asarray(sampler.indices, dtype=np.int64)
    if ctx is not None and ctx.distributed:
        parts = ctx.all_gather_object((idx, local.numpy(), loss_sum, count))
    else:
        parts = [(idx, local.numpy(), loss_sum, count)]
    n = len(dataset)
    width = max(p[1].shape[1] for p in parts if p[1].ndim == 2) if parts else 1
    logits_all = np.zeros((n, width), dtype=np.float32)
    for pidx, plog, _, _ in parts:
        if len(pidx):
            logits_all[pidx] = plog
    total_loss = sum(p[2] for p in parts)
    total_count = sum(p[3] for p in parts)
    return {
        "logits": logits_all,
        "probs": 1.0 / (1.0 + np.exp(-logits_all.astype(np.float64))),
        "targets": np.asarray(dataset.targets, dtype=np.float32),
        "filenames": list(dataset.filenames),
        "loss": (total_loss / total_count) if total_count else float("nan"),
    }


def write_scores(path: str | Path, filenames, probs: np.ndarray, binary: bool) -> None:
    """Official scores CSV: Filename + 17 class probabilities, or Filename,Defect for binary runs."""
    probs = np.asarray(probs, dtype=np.float64)
    if binary:
        df = pd.DataFrame({"Filename": list(filenames), "Defect": probs.reshape(len(filenames), -1)[:, 0]})
        atomic_to_csv(df, path)
        return
    try:
        from benchmark.scores import write_scores_csv
    except ImportError:
        write_scores_csv = None
    if write_scores_csv is not None:
        write_scores_csv(path, list(filenames), probs)
        return
    df = pd.DataFrame(probs, columns=list(CLASS_CODES))
    df.insert(0, "Filename", list(filenames))
    atomic_to_csv(df, path)


# ----------------------------------------------------------------------------- models
def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def build_model(cfg: dict, train_targets: np.ndarray | None = None):
    """The run's model (or scikit-learn estimator) from the registry or ``model_target``.

    ``model_target: "module:function"`` overrides the registry builder (tests, custom models).
    Builders that take ``targets`` (KSSNet) get the training labels for their label graph.
    """
    import importlib

    kwargs: dict[str, Any] = {"size": cfg.get("size", "tiny"), "num_classes": int(cfg["num_outputs"]),
                              "pretrained": cfg.get("pretrained", False)}
    target = cfg.get("model_target")
    if target:
        module, _, func = str(target).partition(":")
        fn = getattr(importlib.import_module(module), func)
    else:
        from methods.registry import get_spec

        spec = get_spec(cfg["method"])
        fn = spec.builder()
        kwargs = {**spec.defaults, **kwargs}
    kwargs.update(cfg.get("model") or {})
    if (train_targets is not None and _accepts(fn, "targets") and "targets" not in kwargs
            and kwargs.get("adjacency") is None):
        kwargs["targets"] = np.asarray(train_targets)
    if _accepts(fn, "seed") and "seed" not in kwargs:
        kwargs["seed"] = int(cfg.get("seed", 0))
    if _accepts(fn, "image_size") and "image_size" not in kwargs:
        kwargs["image_size"] = int(cfg["image_size"])
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise SewerbenchError(f"run {cfg.get('run')}: building {cfg['method']}: {exc}") from None


# ----------------------------------------------------------------------------- re-prediction
def load_run(out_dir: str | Path, device: str | None = None):
    """(cfg, model on device, device) of a finished run."""
    from benchmark.train import checkpointing as ck
    from benchmark.train.data import read_frame, targets_of
    from benchmark.train.distributed import resolve_device

    out_dir = Path(out_dir)
    cfg_path = out_dir / "config.json"
    if not cfg_path.is_file():
        raise SewerbenchError(f"{cfg_path}: not found (is {out_dir} a training run folder?)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    dev = resolve_device(device or cfg.get("device", "auto"))
    if cfg.get("kind") == "sklearn":
        import pickle

        with open(out_dir / "model.pkl", "rb") as fh:
            return cfg, pickle.load(fh), dev
    train_targets = None
    if cfg.get("method") == "kssnet" or cfg.get("needs_train_targets"):
        train_targets = targets_of(read_frame(cfg["data"]["train_csv"], True), False)
    model = build_model({**cfg, "pretrained": False}, train_targets)
    best = ck.load(out_dir / ck.BEST)
    model.load_state_dict(ck.clean_state_dict(best["state_dict"]))
    model.to(dev)
    if cfg.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    model.eval()
    return cfg, model, dev


def predict_run(out_dir: str | Path, split_csv: str | Path, out_csv: str | Path | None = None,
                batch_size: int | None = None, device: str | None = None) -> tuple[list[str], np.ndarray]:
    """Scores of a finished run on ``split_csv``: (filenames, probabilities (N, C))."""
    from benchmark.train.data import image_source, make_dataset, read_frame

    cfg, model, dev = load_run(out_dir, device)
    df = read_frame(split_csv, require_labels=False)
    images = image_source(cfg)
    if cfg.get("kind") == "sklearn":
        from benchmark.train.engine import sklearn_predict

        names, probs = sklearn_predict(model, df, images, cfg)
    else:
        ds = make_dataset(df, images, cfg, train=False)
        res = infer(model, ds, cfg, dev, batch_size=batch_size or cfg.get("eval_batch_size") or cfg["batch_size"])
        names, probs = res["filenames"], res["probs"]
    if out_csv is not None:
        write_scores(out_csv, names, probs, bool(cfg.get("binary")))
    return names, probs
