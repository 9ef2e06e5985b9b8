"""Import Query2Label / MA-Q2L checkpoints: the authors' released files or ours.

A reference checkpoint is a ``torch.save`` dict whose ``state_dict`` holds the model's
parameters (saved from DDP, so keys may start with ``module.``); our modules carry the
reference names, so keys load as they are (REFERENCE.md sections 3 and 4). Files are read with
``torch.load(weights_only=True)``; the only non-tensor globals allowed are numpy scalars,
dtypes and arrays (the references store ``best_mAP`` as a numpy float). A file needing any
other pickled object is refused.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import SewerbenchError
from methods.backbones import clean_state_dict

log = logging.getLogger(__name__)

_MAX_LISTED = 8


#: Top-level key of the integrity block (``{"format": 2, "sha256": hex}``) of our checkpoints.
INTEGRITY_KEY = "__integrity__"


def _feed(h, obj: Any) -> None:
    """Hash ``obj`` canonically (type tags, lengths, tensor dtype/shape/bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        h.update(b"T" + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        return
    if isinstance(obj, dict):
        h.update(b"D" + type(obj).__name__.encode() + struct.pack("<q", len(obj)))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
        return
    if isinstance(obj, (list, tuple)):
        h.update(b"L" + type(obj).__name__.encode() + struct.pack("<q", len(obj)))
        for v in obj:
            _feed(h, v)
        return
    if isinstance(obj, bytes):
        h.update(b"B" + struct.pack("<q", len(obj)) + obj)
        return
    text = repr(obj).encode()
    h.update(b"S" + type(obj).__name__.encode() + struct.pack("<q", len(text)) + text)


def digest(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint payload, independent of how the file is laid out."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def numpy_safe_globals() -> list:
    import numpy as np
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma
    out: list = [np.dtype, np.ndarray, ma.scalar, ma._reconstruct]
    # files written under numpy 1.x name numpy.core.*, under 2.x numpy._core.*
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((ma.scalar, f"{mod}.scalar"))
        out.append((ma._reconstruct, f"{mod}._reconstruct"))
    out.extend(type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG")
    return out


def load_weights_only(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with numpy scalars allowed; clear errors."""
    path = Path(path)
    if not path.is_file():
        raise SewerbenchError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = " ".join(str(exc).split())
        marker = "Unsupported global:"
        if marker in detail:
            what = detail[detail.find(marker) + len(marker):].split(" was not")[0].strip()[:120]
            raise SewerbenchError(
                f"{path}: refused: the file needs arbitrary pickle to load (it stores {what}); only "
                "weights-only checkpoints are accepted. If you trust it, re-save its tensors with "
                "torch.save({'state_dict': checkpoint['state_dict']}, FILE)") from None
        marker = "WeightsUnpickler error:"
        what = detail[detail.find(marker) + len(marker):].split(" Check the")[0].strip()[:120] \
            if marker in detail else detail[:120]
        raise SewerbenchError(f"{path}: not a readable torch checkpoint for weights-only loading ({what})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError,
            TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SewerbenchError(f"{path}: not a readable torch checkpoint ({first})") from None
    return _verified(obj, path)


def _verified(obj: Any, path: Path) -> Any:
    """Our own checkpoints carry an integrity digest (written by benchmark.train.checkpointing): check it."""
    if isinstance(obj, dict) and INTEGRITY_KEY in obj:
        obj = dict(obj)
        block = obj.pop(INTEGRITY_KEY)
        expected = block.get("sha256") if isinstance(block, dict) else None
        if not isinstance(expected, str) or digest(obj) != expected:
            raise SewerbenchError(f"{path}: corrupt checkpoint: its contents do not match the digest "
                                  "stored at save time")
    return obj


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The parameter dict of a checkpoint: ``state_dict`` (reference), ``model`` or ``ema`` (ours),
    or the object itself; ``module.`` / ``_orig_mod.`` prefixes removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "ema", "model_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SewerbenchError(f"{source}: no state_dict of tensors found (expected a dict with "
                              "'state_dict' or a plain state_dict)")
    return dict(clean_state_dict(obj))


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its cleaned state_dict."""
    return extract_state_dict(load_weights_only(path), str(path))


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return f"{shown}{', ...' if len(keys) > _MAX_LISTED else ''} ({len(keys)})"


def load_state_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint",
                      assign: bool = False) -> None:
    """Load every key strictly; any missing, unexpected or mis-shaped key is one clear error.

    ``assign=True`` adopts the checkpoint's tensors (for a model built on the meta device)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state_dict and state_dict[k].shape != own[k].shape and not k.endswith(".pe")]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch: {_listing(shapes)}")
        raise SewerbenchError(f"{source}: checkpoint does not match the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True, assign=assign)
    _check_position_embedding(model, source)


def _check_position_embedding(model: nn.Module, source: str) -> None:
    from methods.transformer import PositionEmbeddingSine, sine_position_embedding
    for module in model.modules():
        if isinstance(module, PositionEmbeddingSine):
            h, w = module.pe.shape[-2:]
            expected = sine_position_embedding(h, w, module.num_pos_feats, module.temperature, module.scale)
            if not torch.allclose(module.pe.float().cpu(), expected, atol=1e-5):
                log.warning("%s: stored position embedding differs from the sine formula "
                            "(used as stored at %dx%d features)", source, h, w)


def infer_maq2l_flags(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, bool]:
    """mask_attention / label_correlation of an MA-Q2L state_dict, read from its keys."""
    if not any(".multihead_attn_sy." in k for k in state_dict):
        raise SewerbenchError(f"{source}: not an MA-Q2L model (no decoder 'multihead_attn_sy' keys); "
                              "use --method q2l for Query2Label checkpoints")
    return {"mask_attention": any(k.startswith("transformer.cam_mask.") for k in state_dict),
            "label_correlation": any(".decoder.layers.0.multihead_attn." in k for k in state_dict)}


def infer_architecture(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, Any]:
    """Size and dims of a Q2L-family state_dict: size, num_classes, overrides, image_size.

    ``overrides["backbone_norm"]`` is ``"batch"`` when the backbone holds trainable BatchNorm
    (``num_batches_tracked`` counters: our from-scratch smoke-profile runs), else ``"frozen"``
    (the references)."""
    try:
        num_classes, hidden = state_dict["query_embed.weight"].shape
    except KeyError:
        raise SewerbenchError(f"{source}: checkpoint has no 'query_embed.weight': not a "
                              "Query2Label-family model") from None
    except ValueError:
        raise SewerbenchError(f"{source}: 'query_embed.weight' is not a 2-d matrix") from None
    ffn_key = "transformer.decoder.layers.0.linear1.weight"
    if ffn_key not in state_dict or state_dict[ffn_key].dim() != 2:
        raise SewerbenchError(f"{source}: checkpoint has no 2-d {ffn_key!r}: not a "
                              "Query2Label-family model")
    size = "reference" if "backbone.0.body.layer3.22.conv1.weight" in state_dict else "tiny"
    enc = len({k.split(".")[3] for k in state_dict if k.startswith("transformer.encoder.layers.")})
    dec = len({k.split(".")[3] for k in state_dict if k.startswith("transformer.decoder.layers.")})
    ffn = state_dict[ffn_key].shape[0]
    trainable_bn = any(k.startswith("backbone.0.body.") and k.endswith(".num_batches_tracked")
                       for k in state_dict)
    out: dict[str, Any] = {"size": size, "num_classes": int(num_classes),
                           "overrides": {"hidden_dim": int(hidden), "dim_feedforward": int(ffn),
                                         "enc_layers": enc, "dec_layers": dec,
                                         "backbone_norm": "batch" if trainable_bn else "frozen"}}
    pe = state_dict.get("backbone.1.pe")
    if pe is not None and pe.dim() == 4:
        out["image_size"] = int(pe.shape[-1]) * 32
    return out


def build_from_checkpoint(method: str, path: str | os.PathLike, mask_tiling: str = "reference",
                          nheads: int | None = None) -> nn.Module:
    """Build ``maq2l`` or ``q2l`` to fit a checkpoint's layout and load it strictly.

    Heads cannot be read from a state_dict: the reference value (4) is used unless given.
    """
    state = read_checkpoint(path)
    arch = infer_architecture(state, str(path))
    overrides = dict(arch["overrides"])
    if nheads is not None:
        overrides["nheads"] = nheads
    # built on the meta device (no random init of ~200M parameters), then the tensors are adopted
    common = dict(size=arch["size"], num_classes=arch["num_classes"], pretrained=False,
                  image_size=arch.get("image_size"), **overrides)
    if method == "maq2l":
        from methods.maq2l import build_maq2l
        flags = infer_maq2l_flags(state, str(path))
        with torch.device("meta"):
            model = build_maq2l(mask_tiling=mask_tiling, **flags, **common)
    elif method == "q2l":
        from methods.q2l import build_q2l
        if any(".multihead_attn_sy." in k for k in state):
            raise SewerbenchError(f"{path}: this is an MA-Q2L checkpoint; use --method maq2l")
        self_attn = any(".decoder.layers.0.self_attn." in k for k in state)
        with torch.device("meta"):
            model = build_q2l(decoder_self_attn=self_attn, **common)
    else:
        raise SewerbenchError(f"--method {method}: checkpoint import supports maq2l and q2l")
    load_state_strict(model, state, str(path), assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise SewerbenchError(f"{path}: checkpoint left tensors uninitialised: {_listing(leftover)}")
    log.info("loaded %s checkpoint %s (%s, %d classes)", method, path, arch["size"], arch["num_classes"])
    return model
