"""ResNet-101 (torchvision layout), as in the Sewer-ML benchmark and for ResNet-101 + ASL.

The Sewer-ML code builds ``torchvision.models.resnet101(num_classes=C)`` and trains it from
scratch. ``pretrained`` loads ImageNet weights (timm hub tag ``resnet101.tv_in1k``, the
torchvision weights, whose keys equal torchvision's) or a local weights file.

This module also holds the weight-loading helpers shared by the other baseline builders.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from benchmark.errors import SewerbenchError

logger = logging.getLogger(__name__)

SIZES = ("reference", "tiny")
# Parameter counts of the reference builds (num_classes=17), checked by the tests.
REFERENCE_NUM_PARAMS = 42_534_993
REFERENCE_IMAGE_SIZE = 224
TINY_IMAGE_SIZE = 64
TIMM_TAG = "resnet101.tv_in1k"


def check_size(size: str, what: str) -> None:
    if size not in SIZES:
        raise SewerbenchError(f"{what}: size {size!r} is not one of {', '.join(SIZES)}")


def tag_model(model: nn.Module, reference_num_params: int | None, input_size: int) -> nn.Module:
    """Attach the contract attributes every model carries."""
    model.reference_num_params = reference_num_params
    model.input_size = input_size
    return model


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; works on meta tensors."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Read a weights file (torch or safetensors) without arbitrary pickle.

    Accepts a bare state dict or a dict holding it under ``state_dict`` / ``model``;
    strips ``module.`` / ``model.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise SewerbenchError(f"{path}: {what}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError and friends
            raise SewerbenchError(
                f"{path}: {what}: cannot be read with weights_only=True ({type(exc).__name__}); "
                f"re-save it as a plain state dict (torch.save(model.state_dict(), ...))") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SewerbenchError(f"{path}: {what}: not a state dict of tensors")
    from methods.backbones import clean_state_dict

    return dict(clean_state_dict(state, prefixes=("module.", "model.")))


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str, what: str,
                  head_prefixes: tuple[str, ...]) -> None:
    """Load ``state`` into ``model``; the classifier head may be skipped (shape mismatch),
    anything else missing or mismatched is an error."""
    own = model.state_dict()
    keep, skipped = {}, []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            keep[k] = v
        elif k.startswith(head_prefixes):
            skipped.append(k)
    missing = [k for k in own if k not in keep and not k.startswith(head_prefixes)
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise SewerbenchError(
            f"{source}: {what}: weights do not fit the model ({len(missing)} tensors missing or "
            f"of the wrong shape, e.g. {missing[0]})")
    model.load_state_dict(keep, strict=False)
    logger.info("%s: loaded %d tensors from %s (head skipped: %s)", what, len(keep), source,
                ", ".join(skipped) or "no")


def hub_state_dict(timm_name: str, what: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of ``timm_name`` from the timm hub, or a SewerbenchError saying how to
    supply a local file instead."""
    import timm
    try:
        net = timm.create_model(timm_name, pretrained=True)
    except Exception as exc:
        raise SewerbenchError(
            f"{what}: pretrained weights {timm_name!r} could not be fetched from the timm hub "
            f"({type(exc).__name__}); download them where the network is reachable "
            f"(e.g. timm.create_model('{timm_name}', pretrained=True) and torch.save its "
            f"state_dict(), or the hub's model.safetensors) and pass pretrained=<path to that file>"
        ) from None
    return net.state_dict()


def apply_pretrained(model: nn.Module, pretrained: Any, timm_name: str, what: str,
                     head_prefixes: tuple[str, ...],
                     convert: Callable[[dict, nn.Module], dict] | None = None) -> nn.Module:
    """``pretrained``: False/None = keep random init; True = timm hub; str/Path = local file."""
    if pretrained is False or pretrained is None:
        return model
    if pretrained is True:
        state, source = hub_state_dict(timm_name, what), f"timm hub {timm_name}"
    elif isinstance(pretrained, (str, os.PathLike)):
        state, source = read_state_dict(pretrained, what), str(pretrained)
    else:
        raise SewerbenchError(
            f"{what}: pretrained must be false, true or a path, got {pretrained!r}")
    if convert is not None:
        state = convert(state, model)
    if any(t.is_meta for t in model.parameters()):
        return model
    load_matching(model, state, source, what, head_prefixes)
    return model


def _torchvision_resnet(size: str, num_classes: int) -> ResNet:
    if size == "reference":
        return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes)
    # tiny: same block type, stem and stage wiring; one block per stage, narrow 3x3 convs
    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=num_classes, width_per_group=16)


def build_resnet101(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                    **kwargs: Any) -> nn.Module:
    """ResNet-101 (torchvision), raw logits (B, num_classes).

    ``size="tiny"``: the same ResNet with one bottleneck per stage and 16-wide groups.
    """
    check_size(size, "resnet101")
    if kwargs:
        logger.debug("resnet101: ignoring options %s", sorted(kwargs))
    model = _torchvision_resnet(size, num_classes)
    if size != "reference" and pretrained is True:
        raise SewerbenchError("resnet101: hub weights exist only for size=reference "
                              "(a local file of matching shapes loads at any size)")
    apply_pretrained(model, pretrained, TIMM_TAG, "resnet101", ("fc.",))
    return tag_model(model, REFERENCE_NUM_PARAMS,
                     REFERENCE_IMAGE_SIZE if size == "reference" else TINY_IMAGE_SIZE)
