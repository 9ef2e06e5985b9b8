"""Exponential moving average of model weights (the ModelEma of the ASL / Q2L / MA-Q2L code).

A deep copy of the model kept in eval mode; after every optimiser step each floating-point
entry of the state dict (parameters and buffers) becomes
``ema = decay * ema + (1 - decay) * model``; integer buffers (e.g. BatchNorm's
``num_batches_tracked``) are copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.9997):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)

    def _pairs(self, model: nn.Module):
        """(average, source) tensor lists, floating-point and other, and whether the source's
        floating-point dtypes differ from the average's, built once per source model:
        ``state_dict`` entries share storage with the modules' tensors, which every optimiser step
        and ``load_state_dict`` update in place."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is model:
            return cached[1]
        src = model.state_dict()
        fe, fm, oe, om = [], [], [], []
        for k, e in self.module.state_dict().items():
            m = src[k].detach()
            if e.is_floating_point():
                fe.append(e)
                fm.append(m)
            else:
                oe.append(e)
                om.append(m)
        pairs = (fe, fm, oe, om, any(m.dtype != e.dtype for e, m in zip(fe, fm)))
        self._cache = (model, pairs)
        return pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay
        fe, fm, oe, om, cast = self._pairs(model)
        if cast:
            fm = [m.to(e.dtype) for e, m in zip(fe, fm)]
        if fe:   # ema = ema * d + model * (1 - d), tensor by tensor in one call
            torch._foreach_mul_(fe, d)
            torch._foreach_add_(fe, fm, alpha=1.0 - d)
        for e, m in zip(oe, om):
            e.copy_(m)

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Copy ``model``'s weights into the average."""
        self.module.load_state_dict(model.state_dict())

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
