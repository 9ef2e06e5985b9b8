"""Atomic, code-free checkpoints: ``checkpoint.pt`` (full training state, rewritten every epoch)
and ``best.pt`` (the selected weights only).

Format: a ``torch.save`` file holding only tensors and plain data (dict, list, tuple, str, int,
float, bool, None, ``collections.Counter``/``OrderedDict``, torch dtypes/devices), so it loads
with ``torch.load(weights_only=True)``: loading never runs code stored in the file. A crafted
file that needs any other pickled object is refused with a one-line error naming it.

Integrity: :func:`save` adds the key :data:`INTEGRITY_KEY` with a SHA-256 digest over every
tensor's dtype, shape and bytes and every plain value; :func:`load` recomputes it, so a file
that was truncated, bit-flipped or edited is detected and named (truncation also breaks the
zip container). The file is written to a temporary name and renamed, so a process killed
mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import collections
import hashlib
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import SewerbenchError
from methods.checkpoint import INTEGRITY_KEY, digest, numpy_safe_globals
from benchmark.io import atomic_path, remove_stale_temps

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FORMAT = 2

_SCALARS = (str, int, float, bool, type(None), bytes)


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy scalars as python scalars; refuses anything that is not plain data."""
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise SewerbenchError(f"checkpoint: {where}: {obj.layout} tensors are not supported")
        return obj
    try:
        import numpy as np
        if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":  # before float: np.float64 is one
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (torch.dtype, torch.device)) or type(obj) in _SCALARS:
        return obj
    if isinstance(obj, collections.Counter):
        return collections.Counter({_plain(k, where): _plain(v, f"{where}.{k}") for k, v in obj.items()})
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((_plain(k, where), _plain(v, f"{where}.{k}")) for k, v in obj.items())
    if type(obj) is dict:
        return {_plain(k, where): _plain(v, f"{where}.{k}") for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, torch.Size):
        return obj
    raise SewerbenchError(f"checkpoint: {where}: {type(obj).__module__}.{type(obj).__qualname__} is not "
                          "plain data (tensors, numbers, strings, lists, dicts); convert it before saving")


def save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` plain data + tensors with an integrity digest to a temporary file, then
    rename: a crash never leaves a torn file, and the result loads with ``weights_only=True``."""
    path = Path(path)
    payload = _plain(obj, path.name)
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != INTEGRITY_KEY}
        payload[INTEGRITY_KEY] = {"format": FORMAT, "sha256": digest(payload)}
    remove_stale_temps(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        with open(tmp, "rb+") as fh:  # on disk before the rename makes it the checkpoint
            os.fsync(fh.fileno())


def _legacy_numpy_globals() -> list:
    """numpy arrays / scalars / dtypes: data-only globals of checkpoints written before format 2
    (their RNG state held a numpy array). Reconstructing them runs no stored code."""
    return numpy_safe_globals()


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return (text[:limit] + "...") if len(text) > limit else (text or type(exc).__name__)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by :func:`save` without executing anything stored in it.

    Raises a one-line :class:`SewerbenchError` naming the file when it is missing, empty,
    truncated, corrupt (digest mismatch) or needs arbitrary pickle (a crafted file).
    """
    path = Path(path)
    if not path.is_file():
        raise SewerbenchError(f"{path}: checkpoint not found")
    size = path.stat().st_size
    if size == 0:
        raise SewerbenchError(f"{path}: empty checkpoint file (truncated write?); delete it to start over")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _one_line(exc, 10_000)
        marker = "Unsupported global:"
        what = ""
        if marker in detail:
            what = detail[detail.find(marker) + len(marker):].split(" was not")[0].strip()[:100]
            what = f" (it stores {what})"
        raise SewerbenchError(f"{path}: refused: not a sewerbench checkpoint of tensors and plain data"
                              f"{what}; loading it would run code stored in the file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            struct.error, IndexError, TypeError, AttributeError) as exc:
        raise SewerbenchError(f"{path}: truncated or corrupt checkpoint ({size} bytes: "
                              f"{_one_line(exc)}); delete it, or resume from a good copy") from None
    if isinstance(obj, dict) and INTEGRITY_KEY in obj:
        block = obj.pop(INTEGRITY_KEY)
        expected = block.get("sha256") if isinstance(block, dict) else None
        if not isinstance(expected, str) or digest(obj) != expected:
            raise SewerbenchError(f"{path}: corrupt checkpoint: its contents do not match the digest "
                                  "stored at save time (bit rot or an edited file)")
    return obj


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
