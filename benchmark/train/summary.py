"""The run folder's ``train_summary.json`` (one schema for the torch and scikit-learn paths)
and the configuration comparison that guards ``--resume``."""
from __future__ import annotations

import json
from typing import Any

import torch

from benchmark.config import RunConfig
from benchmark.config.schema import RESUME_FREE
from benchmark.train.runtime import describe_device, scoring_amp


def config_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (runtime keys free to change on resume, and data paths, skipped)."""
    out = []
    for k in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{k}"
        if dotted == "data" or dotted in {f"runtime.{f}" for f in RESUME_FREE}:
            continue
        va, vb = saved.get(k), current.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{dotted}.")
        elif va != vb:
            out.append(dotted)
    return out


def make_summary(cfg: RunConfig, *, best_epoch: int, selected_model: str, selection_score: float | None,
                 epochs_run: int, stop_reason: str, wall_seconds: float, train_seconds: float,
                 train_images_seen: int, device: torch.device, world_size: int, params: int | None,
                 trainable_params: int | None, reference_num_params: int | None, train_images: int,
                 val_images: int, final: dict, scores: dict) -> dict[str, Any]:
    summary = {
        "run": cfg.run, "method": cfg.method, "recipe": cfg.recipe, "profile": cfg.profile,
        "split": cfg.split, "target": cfg.target, "train_on": cfg.train_on, "seed": cfg.seed,
        "best_epoch": best_epoch, "selected_model": selected_model,
        "selection_metric": cfg.selection, "selection_score": selection_score,
        "epochs_run": epochs_run, "epochs_planned": cfg.epochs, "stop_reason": stop_reason,
        "wall_seconds": wall_seconds, "train_seconds": train_seconds,
        "train_images_per_s": train_images_seen / max(train_seconds, 1e-9),
        "device": describe_device(device), "world_size": world_size,
        "amp": cfg.runtime.amp, "amp_dtype": cfg.runtime.amp_dtype if cfg.runtime.amp else None,
        "eval_amp": scoring_amp(cfg),
        "params": params, "trainable_params": trainable_params, "reference_num_params": reference_num_params,
        "train_images": train_images, "val_images": val_images, "final": final, "scores": scores,
    }
    return json.loads(json.dumps(summary, default=str))
