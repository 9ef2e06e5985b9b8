"""Atomic checkpoints: ``checkpoint.pt`` (full training state, rewritten every epoch) and
``best.pt`` (the selected weights only)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import SewerbenchError
from benchmark.io import atomic_path

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a torn file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise SewerbenchError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt or foreign file
        raise SewerbenchError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def clean_state_dict(state: dict) -> dict:
    """Strip ``module.`` / ``_orig_mod.`` prefixes left by DDP or torch.compile."""
    from methods.backbones import clean_state_dict as strip

    return dict(strip(state))
