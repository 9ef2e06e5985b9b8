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

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay
        src = model.state_dict()
        for k, e in self.module.state_dict().items():
            m = src[k].detach()
            if e.is_floating_point():
                e.mul_(d).add_(m.to(e.dtype), alpha=1.0 - d)
            else:
                e.copy_(m)

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Copy ``model``'s weights into the average."""
        self.module.load_state_dict(model.state_dict())

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
