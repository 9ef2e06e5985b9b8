"""Optimisers, weight-decay parameter groups and learning-rate schedules of the recipes.

- ``adam`` + ``decay_filter: no_bias_1d``: MA-Q2L "Adam_twd" and ASL: Adam with L2 weight
  decay only on parameters with ndim > 1 that are not biases (``add_weight_decay`` of the
  reference code), Adam's own weight_decay=0 on the other group.
- ``adamw`` + ``decay_filter: all``: Query2Label (decoupled decay on every trainable param).
- ``sgd``: Sewer-ML benchmark (momentum 0.9, no Nesterov, wd 1e-4 on every parameter,
  lr = base_lr * global_batch / 256 via ``lr_batch_scale: 256``).

Schedules: ``onecycle`` (torch OneCycleLR, max_lr = lr, stepped every iteration),
``multistep`` (MultiStepLR, stepped every epoch), ``none``.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from benchmark.errors import SewerbenchError

PER_ITERATION = "iteration"
PER_EPOCH = "epoch"


def decays(name: str, param: torch.Tensor, decay_filter: str) -> bool:
    """Whether parameter ``name`` gets weight decay under ``decay_filter``."""
    if decay_filter == "all":
        return True
    if decay_filter == "no_bias_1d":
        return not (param.ndim <= 1 or name.endswith(".bias"))
    raise SewerbenchError(f"optimizer: unknown decay_filter {decay_filter!r} (all | no_bias_1d)")


def param_groups(model: nn.Module, weight_decay: float, decay_filter: str = "all") -> list[dict]:
    """Trainable parameters split into a no-decay and a decay group (frozen params skipped).

    Empty groups are dropped; group order is fixed (no_decay first, as the reference code).
    """
    no_decay: list[torch.Tensor] = []
    decay: list[torch.Tensor] = []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if decays(name, p, decay_filter) else no_decay).append(p)
    groups = []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay), "name": "decay"})
    if not groups:
        raise SewerbenchError("optimizer: the model has no trainable parameters")
    return groups


def effective_lr(opt_cfg: dict, global_batch: int) -> float:
    """Base lr, scaled by global_batch / lr_batch_scale when the recipe asks for it."""
    lr = float(opt_cfg["lr"])
    scale = opt_cfg.get("lr_batch_scale")
    if scale:
        lr = lr * global_batch / float(scale)
    return lr


def build_optimizer(model: nn.Module, opt_cfg: dict, global_batch: int,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``model``'s trainable parameters. ``fused``: torch's fused
    kernel (one launch for all parameters; the engine asks for it on CPU and CUDA, see
    :func:`fused_for`), the same update rule."""
    name = str(opt_cfg.get("name", "adam")).lower()
    lr = effective_lr(opt_cfg, global_batch)
    wd = float(opt_cfg.get("weight_decay", 0.0))
    groups = param_groups(model, wd, opt_cfg.get("decay_filter", "all"))
    betas = tuple(float(b) for b in opt_cfg.get("betas", (0.9, 0.999)))
    eps = float(opt_cfg.get("eps", 1e-8))
    kw = {"fused": True} if fused else {}
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, weight_decay=0.0, **kw)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=wd, **kw)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(opt_cfg.get("momentum", 0.9)),
                               nesterov=bool(opt_cfg.get("nesterov", False)), weight_decay=wd, **kw)
    raise SewerbenchError(f"optimizer: unknown name {name!r} (adam | adamw | sgd)")


#: Devices with fused Adam / AdamW / SGD kernels in torch (one kernel over every parameter).
FUSED_DEVICES = ("cpu", "cuda")


def fused_for(model: nn.Module, device: torch.device) -> bool:
    """Fused optimiser kernels wherever torch has them (CPU and CUDA) and every trainable
    parameter is a floating tensor on ``device``. The update rule is the unfused one; on the
    CPU it replaces a loop of ~6 elementwise passes per parameter tensor (an MA-Q2L step at
    224 px, batch 4: the optimiser step goes from 1.1 s to about 0.2 s of 5 s)."""
    kind = torch.device(device).type
    params = [p for p in model.parameters() if p.requires_grad]
    return (kind in FUSED_DEVICES and bool(params)
            and all(p.device.type == kind and p.is_floating_point() for p in params))


def build_scheduler(optimizer: torch.optim.Optimizer, sched_cfg: dict | None, epochs: int,
                    steps_per_epoch: int, max_lr: float) -> tuple[Any, str | None]:
    """(scheduler or None, "iteration" | "epoch" | None): when to call ``scheduler.step()``."""
    sched_cfg = dict(sched_cfg or {})
    name = str(sched_cfg.get("name", "none")).lower()
    if name in ("none", "constant", ""):
        return None, None
    if name == "onecycle":
        kw = {k: sched_cfg[k] for k in ("div_factor", "final_div_factor", "anneal_strategy",
                                         "cycle_momentum", "three_phase") if sched_cfg.get(k) is not None}
        sch = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, epochs=int(epochs), steps_per_epoch=max(1, int(steps_per_epoch)),
            pct_start=float(sched_cfg.get("pct_start", 0.2)), **kw)
        return sch, PER_ITERATION
    if name == "multistep":
        sch = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(m) for m in sched_cfg.get("milestones", [30, 60, 80])],
            gamma=float(sched_cfg.get("gamma", 0.1)))
        return sch, PER_EPOCH
    raise SewerbenchError(f"schedule: unknown name {name!r} (onecycle | multistep | none)")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def count_params(params: Iterable[torch.Tensor]) -> int:
    return int(sum(p.numel() for p in params))
