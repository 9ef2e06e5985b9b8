"""Seeding: one call makes python, numpy and torch (and cuDNN) deterministic.

``seed_everything(seed)`` at start-up, ``derive_seed(seed, *keys)`` for stream-specific
seeds (epoch, rank, worker), ``worker_init_fn`` for DataLoader workers.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from typing import Any

import numpy as np

_MASK = (1 << 63) - 1


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed that depends only on ``seed`` and ``keys`` (stable across runs and machines)."""
    text = ":".join(str(x) for x in (int(seed), *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & _MASK


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also fix cuDNN/cuBLAS algorithms."""
    import torch

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        if torch.cuda.is_available():
            # cuBLAS needs this for deterministic matmuls; warn (not fail) on ops without a
            # deterministic CUDA kernel. Skipped on CPU-only machines, where the kernels used
            # are deterministic and the switch costs a ~2 s import of torch._inductor.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False


def seed_step(seed: int, *keys: Any) -> None:
    """Re-seed the global python/numpy/torch generators for one stream (e.g. an epoch on a rank)."""
    import torch

    s = derive_seed(seed, *keys)
    random.seed(s)
    np.random.seed(s % (2 ** 32))
    torch.manual_seed(s)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker hook: seed python and numpy from the worker's torch seed."""
    import torch

    s = torch.initial_seed() & _MASK
    random.seed(s)
    np.random.seed(s % (2 ** 32))


def rng_state() -> dict:
    """The state of every global generator (for checkpoints), as tensors and plain data only
    (python ints/tuples, lists, a torch ByteTensor), so a checkpoint holding it loads with
    ``torch.load(weights_only=True)``. :func:`set_rng_state` restores it exactly."""
    import torch

    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": {"bit_generator": str(kind), "key": [int(k) for k in key], "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state(s) -> tuple:
    """``random.setstate`` needs (version, tuple of ints, gauss); lists are accepted too."""
    version, internal, gauss = s
    return (int(version), tuple(int(x) for x in internal), gauss)


def _numpy_state(s) -> tuple:
    if isinstance(s, dict):  # format 2: plain data
        return (s["bit_generator"], np.asarray(s["key"], dtype=np.uint32), int(s["pos"]),
                int(s["has_gauss"]), float(s["cached_gaussian"]))
    return s  # the legacy tuple with a numpy array (checkpoints written before format 2)


def set_rng_state(state: dict) -> None:
    """Restore generators saved by :func:`rng_state` (either checkpoint format)."""
    import torch

    random.setstate(_python_state(state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # different number of devices: keep fresh state
            pass


# ----------------------------------------------------------------------------- per-item streams
class ItemStreams:
    """The Python and NumPy generators of one dataset item, created on first use.

    ``random.Random(s)`` draws exactly what the global ``random`` module draws after
    ``random.seed(s)``, and ``np.random.RandomState(s)`` what ``np.random`` draws after
    ``np.random.seed(s)``; creating them only when a transform asks (the reference
    RandAugment's Cutout is the only NumPy user, about one image in 15) costs a few
    microseconds, where saving and restoring NumPy's global state cost ~120 us an item."""

    __slots__ = ("_py_seed", "_np_seed", "_py", "_np")

    def __init__(self, py_seed: int, np_seed: int):
        self._py_seed, self._np_seed = int(py_seed), int(np_seed) % (2 ** 32)
        self._py: random.Random | None = None
        self._np: np.random.RandomState | None = None

    @property
    def python(self) -> random.Random:
        if self._py is None:
            self._py = random.Random(self._py_seed)
        return self._py

    @property
    def numpy(self) -> np.random.RandomState:
        if self._np is None:
            self._np = np.random.RandomState(self._np_seed)
        return self._np


_ITEM: list[ItemStreams | None] = [None]


@contextlib.contextmanager
def item_streams(py_seed: int, np_seed: int):
    """Within the block, :func:`python_random` / :func:`numpy_random` are the item's own
    generators (seeded with ``py_seed`` / ``np_seed``); the global generators are untouched."""
    previous = _ITEM[0]
    _ITEM[0] = ItemStreams(py_seed, np_seed)
    try:
        yield _ITEM[0]
    finally:
        _ITEM[0] = previous


def python_random():
    """The generator a transform draws Python randomness from: the current item's
    (:func:`item_streams`) or, outside one, the global ``random`` module."""
    current = _ITEM[0]
    return current.python if current is not None else random


def numpy_random():
    """Likewise for NumPy: the current item's ``RandomState`` or the global ``np.random``."""
    current = _ITEM[0]
    return current.numpy if current is not None else np.random
