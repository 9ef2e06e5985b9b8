"""Class activation maps of MA-Q2L / Query2Label models and their localisation scores.

Maps are captured with forward hooks, so the models need no special API:

* ``cam``: MA-Q2L's mask-attention head (``model.transformer.cam_mask``), the raw class
  activation maps M = W f (B, K, h, w) that MA adds to the cross-attention logits;
* ``attention``: the head-averaged cross-attention weights of the last decoder layer
  (``multihead_attn_sy`` in MA-Q2L layers, ``multihead_attn`` in Query2Label layers),
  (B, K, h, w): where each label query looks. Available for every Q2L-style model.

Localisation against per-class pixel masks (the synthetic data's ``masks/``, :func:`benchmark.synth.generate.load_masks`), over
(image, class) pairs whose class is present and has a non-empty mask:

* pointing game: the map's maximum (after bilinear upsampling to the mask size) lies inside
  the mask;
* CAM IoU: IoU of the mask with the map min-max normalised and thresholded at 0.5.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def cross_attention_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The cross-attention module of the last decoder layer (None for non-Q2L models)."""
    tr = getattr(model, "transformer", None)
    layers = getattr(getattr(tr, "decoder", None), "layers", None)
    if not layers:
        return None
    last = layers[-1]
    for name in ("multihead_attn_sy", "multihead_attn"):
        mod = getattr(last, name, None)
        if mod is not None and not (name == "multihead_attn" and hasattr(last, "multihead_attn_sy")):
            return mod
    return None


def cam_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """MA-Q2L's mask-attention head, or None when the model has no (active) MA."""
    tr = getattr(model, "transformer", None)
    if tr is None or not getattr(tr, "mask_attention", False):
        return None
    return getattr(tr, "cam_mask", None)


@contextmanager
def _hooks(model: torch.nn.Module, store: dict) -> Iterator[None]:
    handles = []
    tr = getattr(model, "transformer", None)
    if tr is not None:
        def pre(_m, args):
            store["hw"] = tuple(args[0].shape[-2:])
        handles.append(tr.register_forward_pre_hook(pre))
    cm = cam_module(model)
    if cm is not None:
        def on_cam(_m, _args, out):
            store["cam"] = out.detach()
        handles.append(cm.register_forward_hook(on_cam))
    ca = cross_attention_module(model)
    if ca is not None:
        def on_attn(_m, _args, out):
            if isinstance(out, tuple) and len(out) > 1 and out[1] is not None:
                store["attention"] = out[1].detach()
        handles.append(ca.register_forward_hook(on_attn))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def extract_maps(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Run ``model`` on ``x``; return logits and the available maps as (B, K, h, w) tensors."""
    store: dict[str, Any] = {}
    was_training = model.training
    model.eval()
    try:
        with _hooks(model, store):
            out = model(x)
    finally:
        model.train(was_training)
    logits = out[0] if isinstance(out, tuple) else out
    res: dict[str, Any] = {"logits": logits.detach().float()}
    hw = store.get("hw")
    for key in ("cam", "attention"):
        m = store.get(key)
        if m is None or hw is None:
            continue
        b, k = m.shape[0], m.shape[1]
        res[key] = m.reshape(b, k, *hw).float()
    return res


def upsample(maps: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) -> (K, H, W) bilinear."""
    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()


def normalise(m: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (constant maps become 0)."""
    lo, hi = float(np.min(m)), float(np.max(m))
    if hi - lo <= 0:
        return np.zeros_like(m, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


def pointing_hit(m: np.ndarray, mask: np.ndarray) -> bool:
    """The map's maximum lies inside the mask (first maximum in row-major order)."""
    idx = np.unravel_index(int(np.argmax(m)), m.shape)
    return bool(mask[idx])


def cam_iou(m: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of ``mask`` with the min-max normalised map thresholded at ``threshold``."""
    pred = normalise(m) >= threshold
    union = np.logical_or(pred, mask).sum()
    return float(np.logical_and(pred, mask).sum() / union) if union else 0.0


def localisation(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray], threshold: float = 0.5) -> dict[str, Any]:
    """Pointing game and CAM IoU over present classes with non-empty masks.

    ``maps[i]``: (K, h, w) for image i; ``masks[i]``: bool (K, H, W); ``labels[i]``: (K,) 0/1.
    Returns means overall and per class (nan where a class never occurs).
    """
    k_all = None
    hits: list[list[float]] = []
    ious: list[list[float]] = []
    for m, mk, y in zip(maps, masks, labels):
        mk = np.asarray(mk, dtype=bool)
        if k_all is None:
            k_all = mk.shape[0]
            hits = [[] for _ in range(k_all)]
            ious = [[] for _ in range(k_all)]
        up = upsample(m, mk.shape[-2:])
        for k in range(k_all):
            if int(y[k]) != 1 or not mk[k].any():
                continue
            hits[k].append(float(pointing_hit(up[k], mk[k])))
            ious[k].append(cam_iou(up[k], mk[k], threshold))
    all_hits = [h for hs in hits for h in hs]
    all_ious = [v for vs in ious for v in vs]
    return {
        "pairs": len(all_hits),
        "pointing_game": float(np.mean(all_hits)) if all_hits else float("nan"),
        "cam_iou": float(np.mean(all_ious)) if all_ious else float("nan"),
        "pointing_game_class": [float(np.mean(h)) if h else float("nan") for h in hits],
        "cam_iou_class": [float(np.mean(v)) if v else float("nan") for v in ious],
    }


def random_baseline(masks: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Expected pointing-game score of a uniformly random point (mask area fraction)."""
    vals = [float(np.asarray(mk[k]).mean()) for mk, y in zip(masks, labels)
            for k in range(len(y)) if int(y[k]) == 1 and np.asarray(mk[k]).any()]
    return float(np.mean(vals)) if vals else float("nan")
