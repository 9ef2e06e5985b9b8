"""What training and prediction share: the device-side helpers (autocast, inputs, logits),
the model and loss of a run, and batched inference over a dataset (sharded over DDP ranks,
gathered back in dataset order)."""
from __future__ import annotations

import contextlib
import platform
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmark.config import RunConfig
from benchmark.errors import SewerbenchError

AMP_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
              "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def intra_op_threads(n: int | None, where: str = "threads"):
    """torch's intra-op threads set to ``n`` inside the block (None: unchanged), restored after."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SewerbenchError(f"{where}: must be an integer >= 1 or null, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def amp_dtype(cfg: RunConfig) -> torch.dtype:
    return AMP_DTYPES[cfg.runtime.amp_dtype]


def scoring_amp(cfg: RunConfig) -> bool:
    """Whether scoring (validation, final scores) runs under autocast: ``eval_amp``, else ``amp``."""
    rt = cfg.runtime
    return bool(rt.amp if rt.eval_amp is None else rt.eval_amp)


def native_precision(cfg: RunConfig, device: torch.device) -> RunConfig:
    """``cfg`` as it runs on ``device``: with ``amp_native_only`` on a CPU without native bf16
    (emulated bf16 trains the tiny models 1.7-2.4x slower than fp32), autocast off for training
    and scoring; otherwise ``cfg`` unchanged."""
    import dataclasses

    from benchmark.cpus import cpu_supports_bf16

    rt = cfg.runtime
    if not (rt.amp_native_only and device.type == "cpu" and amp_dtype(cfg) == torch.bfloat16
            and (rt.amp or scoring_amp(cfg))) or cpu_supports_bf16():
        return cfg
    return cfg.replace(runtime=dataclasses.replace(rt, amp=False, eval_amp=None if rt.eval_amp is None else False))


def autocast(device: torch.device, cfg: RunConfig, scoring: bool = False):
    """The run's autocast context for training (``amp``) or scoring (:func:`scoring_amp`);
    a no-op when that is off."""
    if not (scoring_amp(cfg) if scoring else cfg.runtime.amp):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(cfg))


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


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- model and loss
def build_model(cfg: RunConfig, train_targets: np.ndarray | None = None):
    """The run's model (or scikit-learn estimator), built from its registry entry.

    The spec says which extra arguments the builder takes: the training labels for a label
    graph (KSSNet), the run seed (scikit-learn forests), the input size (Q2L / MA-Q2L, the
    GIST size of Myrans2018), the run's protocol (Myrans2018).
    """
    from methods.registry import get_spec

    spec = get_spec(cfg.method)
    kwargs: dict[str, Any] = {**spec.defaults, "size": cfg.size, "num_classes": cfg.num_outputs,
                              "pretrained": cfg.pretrained}
    kwargs.update(cfg.model)
    if spec.kind == "sklearn":
        kwargs.update(cfg.sklearn)
    if spec.needs_train_targets and "targets" not in kwargs and kwargs.get("adjacency") is None:
        if train_targets is None:
            raise SewerbenchError(f"run {cfg.run}: {cfg.method} needs the training labels to build")
        kwargs["targets"] = np.asarray(train_targets)
    if spec.takes_seed:
        kwargs.setdefault("seed", cfg.seed)
    if spec.takes_image_size:
        kwargs.setdefault("image_size", cfg.image_size)
    if spec.takes_protocol:
        if "protocol" in kwargs:
            raise SewerbenchError(f"run {cfg.run}: protocol is a run setting (protocol: published | "
                                  f"corrected), not a {'sklearn' if spec.kind == 'sklearn' else 'model'} option")
        kwargs["protocol"] = cfg.protocol
    try:
        return spec.builder()(**kwargs)
    except TypeError as exc:
        raise SewerbenchError(f"run {cfg.run}: building {cfg.method}: {exc}") from None


def build_criterion(cfg: RunConfig, train_targets: np.ndarray, device: torch.device):
    """The recipe's loss; ``pos_weight: auto`` = Sewer-ML class weights (N - N_c) / N_c of the
    training labels (``train_targets``: the rows the model trains on)."""
    from benchmark.train.data import pos_weight
    from methods.losses import build_loss

    kwargs = cfg.loss.kwargs()
    if kwargs.get("pos_weight") == "auto":
        kwargs["pos_weight"] = pos_weight(train_targets)
    elif kwargs.get("pos_weight") is not None:
        kwargs["pos_weight"] = torch.as_tensor(kwargs["pos_weight"], dtype=torch.float32)
    try:
        crit = build_loss(cfg.loss.name, **kwargs)
    except TypeError as exc:
        raise SewerbenchError(f"run {cfg.run}: loss {cfg.loss.name}: {exc}") from None
    return crit.to(device) if isinstance(crit, nn.Module) else crit


# ----------------------------------------------------------------------------- inference
@contextlib.contextmanager
def batch_one_semantics(model: nn.Module):
    """MA-Q2L with the reference's head-major mask tiling, evaluated as at batch 1 whatever the
    batch: at B = 1 ``repeat(heads, 1, 1)`` gives every head the sample's own maps, which is
    per-sample tiling, so per-sample tiling at any batch equals batch-1 inference exactly
    (up to float summation order)."""
    from methods.maq2l import set_mask_tiling

    transformer = getattr(model, "transformer", None)
    previous = getattr(transformer, "mask_tiling", None)
    if previous is None:
        yield model
        return
    set_mask_tiling(model, "per_sample")
    try:
        yield model
    finally:
        set_mask_tiling(model, previous)


@torch.no_grad()
def infer(model: nn.Module, dataset, cfg: RunConfig, device: torch.device, ctx=None,
          criterion=None, batch_size: int | None = None, desc: str = "predict") -> dict:
    """Logits (N, C) in dataset order, targets and the sample-weighted mean loss.

    Each rank runs indices rank, rank + W, ...; results are all-gathered, so every rank
    returns the full arrays. ``batch_size`` is the global batch (default: the run's eval batch).
    """
    from tqdm.auto import tqdm

    from benchmark.seed import worker_init_fn
    from benchmark.train.distributed import ShardSampler

    rank = ctx.rank if ctx is not None else 0
    world = ctx.world_size if ctx is not None else 1
    sampler = ShardSampler(len(dataset), rank, world)
    bs = max(1, int(batch_size or cfg.eval_batch_size) // world)
    rt = cfg.runtime
    loader = DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=rt.workers,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn,
                        persistent_workers=False)
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    loss_sum, count = 0.0, 0
    show = (ctx is None or ctx.is_main) and rt.progress
    for x, y, _ in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if show else True):
        x = to_input(x, device, rt.channels_last)
        with autocast(device, cfg, scoring=True):
            out = main_logits(model(x))
        logits = out.float()
        if criterion is not None:
            loss = criterion(logits, y.to(device).float())
            loss_sum += float(loss) * x.shape[0]
            count += x.shape[0]
        chunks.append(logits.cpu())
    model.train(was_training)
    local = torch.cat(chunks) if chunks else torch.zeros((0, cfg.num_outputs))
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
