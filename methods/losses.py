"""Losses: ASL (Ridnik et al. 2021), the Q2L / MA-Q2L optimised ASL, BCE with pos_weight.

All take raw logits ``x`` (B, K) and binary targets ``y`` (B, K).
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from benchmark.classes import BOTTLENECK_CLASSES, CLASS_INDEX, NUM_CLASSES
from benchmark.errors import SewerbenchError


def _focusing_context(no_grad: bool):
    """``torch.no_grad()`` for a gradient-free focusing weight; restores the caller's mode on exit."""
    return torch.no_grad() if no_grad else contextlib.nullcontext()


class AsymmetricLoss(nn.Module):
    """Official ASL: L = -sum[ y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m) ], p_m = max(p - clip, 0).

    Defaults as the official code (gamma_neg 4, gamma_pos 1, clip 0.05, eps 1e-8, sum).
    ``disable_torch_grad_focal_loss`` computes the focusing weight without gradient (the
    official switch; its current code leaves the gradient on, which is our default).
    """

    def __init__(self, gamma_neg: float = 4, gamma_pos: float = 1, clip: float | None = 0.05,
                 eps: float = 1e-8, disable_torch_grad_focal_loss: bool = False):
        super().__init__()
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.disable_torch_grad_focal_loss = disable_torch_grad_focal_loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(x.dtype)
        p = torch.sigmoid(x)
        xs_neg = 1 - p
        if self.clip is not None and self.clip > 0:
            xs_neg = (xs_neg + self.clip).clamp(max=1)
        loss = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(xs_neg.clamp(min=self.eps))
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with _focusing_context(self.disable_torch_grad_focal_loss):
                pt = p * y + xs_neg * (1 - y)
                w = torch.pow(1 - pt, self.gamma_pos * y + self.gamma_neg * (1 - y))
            loss = loss * w
        return -loss.sum()


def bottleneck_class_weights(num_classes: int = NUM_CLASSES, factor: float = 2.0) -> torch.Tensor:
    """c_k = 2 for the MA-Q2L "bottleneck" classes RB, IS, FO, OS, else 1."""
    w = torch.ones(num_classes)
    for code in BOTTLENECK_CLASSES:
        w[CLASS_INDEX[code]] = factor
    return w


def dynamic_class_weights(ap: Sequence[float], top: int = 4) -> np.ndarray:
    """MA-Q2L's AP-based class weights (``--dy_weight``), from per-class AP on a 0-1 scale.

    As the reference (which works with AP in percent): w_k = (mean(AP) - AP_k) / 10; classes
    with AP above the mean get 1; classes are ranked by w (descending, stable) and all but the
    first ``top`` are reset to 1. The weights replace the bottleneck weights when given.
    """
    ap_pct = np.asarray(ap, dtype=np.float64) * 100.0
    w = (ap_pct.mean() - ap_pct) / 10.0
    w[w < 0] = 1
    order = [i for i, _ in sorted(enumerate(w), key=lambda t: t[1], reverse=True)]
    for rank, i in enumerate(order):
        if rank >= top:
            w[i] = 1
    return w


class Q2LAsymmetricLoss(nn.Module):
    """The optimised ASL of Query2Label / MA-Q2L (``AsymmetricLossOptimized`` there).

    Defaults are MA-Q2L's run (gamma_neg 2, gamma_pos 0, clip 0, eps 1e-5, focusing weight
    without gradient); reduction L = -(1000 / (B*K)) * sum_{b,k} c_k w_bk l_bk. ``class_weights``:
    ``"bottleneck"`` (c_k = 2 for RB, IS, FO, OS; MA-Q2L), ``None`` (all 1; Query2Label) or a
    length-K sequence. ``forward(x, y, weight_list)`` takes optional dynamic weights that
    replace ``class_weights`` (see :func:`dynamic_class_weights`). The focusing weight is
    computed inside ``torch.no_grad()``, which leaves the caller's grad mode as it was.
    The reference multiplies the class weights into the no-gradient focusing weight, so they
    act only when a gamma is > 0 and the focusing weight is gradient-free (its configuration);
    here they apply in every configuration.
    """

    def __init__(self, gamma_neg: float = 2, gamma_pos: float = 0, clip: float | None = 0.0,
                 eps: float = 1e-5, disable_torch_grad_focal_loss: bool = True,
                 class_weights: str | Sequence[float] | torch.Tensor | None = "bottleneck",
                 num_classes: int = NUM_CLASSES, scale: float = 1000.0):
        super().__init__()
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip
        self.eps = eps
        self.disable_torch_grad_focal_loss = disable_torch_grad_focal_loss
        self.scale = scale
        if isinstance(class_weights, str):
            if class_weights != "bottleneck":
                raise ValueError(f"class_weights must be 'bottleneck', None or a sequence, not {class_weights!r}")
            cw = bottleneck_class_weights(num_classes)
        elif class_weights is None:
            cw = torch.ones(num_classes)
        else:
            cw = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
        self.register_buffer("class_weights", cw, persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight_list: Any = None) -> torch.Tensor:
        y = y.to(x.dtype)
        anti = 1 - y
        p = torch.sigmoid(x)
        xs_neg = 1.0 - p
        if self.clip is not None and self.clip > 0:
            xs_neg = (xs_neg + self.clip).clamp(max=1)
        loss = y * torch.log(p.clamp(min=self.eps)) + anti * torch.log(xs_neg.clamp(min=self.eps))
        if weight_list is not None:
            cw = torch.as_tensor(np.asarray(weight_list), dtype=x.dtype, device=x.device)
        else:
            cw = self.class_weights.to(device=x.device, dtype=x.dtype)
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with _focusing_context(self.disable_torch_grad_focal_loss):
                w = torch.pow(1 - p * y - xs_neg * anti, self.gamma_pos * y + self.gamma_neg * anti)
                w = w * cw
            loss = loss * w
        else:
            loss = loss * cw
        return -loss.sum() / x.size(0) / y.size(1) * self.scale


def bce_pos_weight(labels: Any) -> torch.Tensor:
    """Official Sewer-ML pos_weight: (N - N_c) / N_c per class from training labels (N, K),
    0 for a class without positives (as the official code). A 1-D array gives one weight."""
    arr = np.asarray(labels)
    if arr.ndim == 1:
        arr = arr[:, None]
    n = arr.shape[0]
    pos = (arr == 1).sum(axis=0).astype(np.float64)
    w = np.where(pos > 0, (n - pos) / np.maximum(pos, 1), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)


class BCEWithLogitsPosWeight(nn.BCEWithLogitsLoss):
    """BCEWithLogitsLoss (mean) with pos_weight computed from training label counts."""

    def __init__(self, pos_weight: Any = None, labels: Any = None, reduction: str = "mean"):
        if pos_weight is None and labels is not None:
            pos_weight = bce_pos_weight(labels)
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
        super().__init__(pos_weight=pos_weight, reduction=reduction)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().forward(x, y.to(x.dtype))


_LOSSES = {
    "asl": AsymmetricLoss,
    "q2l_asl": Q2LAsymmetricLoss,
    "maq2l_asl": Q2LAsymmetricLoss,
    "bce": BCEWithLogitsPosWeight,
}


def build_loss(name: str, **cfg: Any) -> nn.Module:
    """``asl`` | ``q2l_asl`` (Q2L: no class weights) | ``maq2l_asl`` (bottleneck weights) | ``bce``
    (``labels=`` or ``pos_weight=``). ``cfg`` overrides the constructor defaults."""
    if name not in _LOSSES:
        raise SewerbenchError(f"loss: unknown loss {name!r} (known: {', '.join(_LOSSES)})")
    if name == "q2l_asl":
        cfg.setdefault("class_weights", None)
    return _LOSSES[name](**cfg)
