"""The tiny deterministic training run of ``sewerbench check`` (a few seconds on CPU).

The engine's tiny fixtures (``benchmark.train.testing``): a 16 px dataset with a learnable
colour-cell signal and a small CNN, trained 2 epochs with the Q2L recipe on one CPU thread.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def tiny_train_metrics(seed: int = 0) -> dict[str, float]:
    """Final-epoch validation metrics and best score of the tiny run."""
    import torch

    from benchmark.config import resolve_run
    from benchmark.train import train_run
    from benchmark.train.testing import make_tiny_dataset, tiny_params

    import logging

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    quiet = [logging.getLogger(n) for n in ("benchmark.train", "benchmark.data")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="sewerbench-check-") as tmp:
            root = make_tiny_dataset(Path(tmp) / "data", seed=seed)
            params = tiny_params(root)
            cfg = resolve_run(params, "tiny", seed=seed)
            summary = train_run(cfg, Path(tmp) / "run")
    finally:
        torch.set_num_threads(threads)
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    final = summary.get("final", {})
    out = {k: float(final[k]) for k in ("train_loss", "val_loss", "val_mAP", "val_F2_CIW",
                                        "val_F1_Normal", "ema_val_mAP") if k in final}
    out["selection_score"] = float(summary["selection_score"])
    out["best_epoch"] = float(summary["best_epoch"])
    return out
