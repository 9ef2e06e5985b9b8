"""Seeding: one call makes python, numpy and torch (and cuDNN) deterministic.

``seed_everything(seed)`` at start-up, ``derive_seed(seed, *keys)`` for stream-specific
seeds (epoch, rank, worker), ``worker_init_fn`` for DataLoader workers.
"""
from __future__ import annotations

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
    """The state of every global generator (for checkpoints)."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generators saved by :func:`rng_state`."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # different number of devices: keep fresh state
            pass
