"""TResNet-M / L / XL (Ridnik et al. 2021) through timm.

The Sewer-ML code uses the authors' TResNet (InPlace-ABN, anti-aliased downsampling,
``remove_aa_jit=True``), trained from scratch at 224 px; ASL trains TResNet-L at 448 px from
ImageNet weights. timm's ``TResNet`` is the same network with InPlace-ABN replaced by
BatchNorm + LeakyReLU (same parameters; timm converts the authors' checkpoints), so it runs on
CPU without the inplace-abn extension. Stages: M [3,4,11,3] width 1.0, L [4,5,18,3] width 1.2,
XL [4,5,24,3] width 1.3.

``pretrained``: True loads the timm hub ImageNet weights (``<arch>.miil_in1k``, or
``hub_tag=...``, e.g. ``miil_in1k_448`` for the ASL 448 px recipe); a path loads a local file
(timm layout, or the authors' original layout, converted by timm's filter).
"""
from __future__ import annotations

import logging
from typing import Any

import timm
from timm.models.tresnet import TResNet, checkpoint_filter_fn
from torch import nn

from benchmark.errors import SewerbenchError
from methods.resnet import apply_pretrained, check_size, tag_model

logger = logging.getLogger(__name__)

# Parameter counts of the reference builds with num_classes=17 (timm 1.0.x).
REFERENCE_NUM_PARAMS = {
    "tresnet_m": 29_374_865,
    "tresnet_l": 53_597_617,
    "tresnet_xl": 75_824_413,
}
REFERENCE_IMAGE_SIZE = 224
TINY_IMAGE_SIZE = 64
# tiny: the same TResNet (S2D stem, BasicBlock/Bottleneck stages, SE, BlurPool) with fewer
# blocks and narrower stages, keeping M < L < XL.
TINY_ARGS = {
    "tresnet_m": dict(layers=[1, 1, 2, 1], width_factor=0.5),
    "tresnet_l": dict(layers=[1, 1, 3, 1], width_factor=0.6),
    "tresnet_xl": dict(layers=[1, 1, 4, 1], width_factor=0.65),
}


def _build(arch: str, size: str, num_classes: int, pretrained: Any, hub_tag: str | None,
           drop_rate: float, drop_path_rate: float, **kwargs: Any) -> nn.Module:
    check_size(size, arch)
    if kwargs:
        logger.debug("%s: ignoring options %s", arch, sorted(kwargs))
    if size == "reference":
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                  drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        tag = f"{arch}.{hub_tag or 'miil_in1k'}"
        apply_pretrained(model, pretrained, tag, arch, ("head.fc.",), convert=checkpoint_filter_fn)
        image_size = REFERENCE_IMAGE_SIZE
    else:
        if pretrained is True:
            raise SewerbenchError(f"{arch}: hub weights exist only for size=reference "
                                  "(a local file of matching shapes loads at any size)")
        model = TResNet(num_classes=num_classes, drop_rate=drop_rate,
                        drop_path_rate=drop_path_rate, **TINY_ARGS[arch])
        apply_pretrained(model, pretrained, "", arch, ("head.fc.",), convert=checkpoint_filter_fn)
        image_size = TINY_IMAGE_SIZE
    return tag_model(model, REFERENCE_NUM_PARAMS[arch], image_size)


def build_tresnet_m(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                    hub_tag: str | None = None, drop_rate: float = 0.0,
                    drop_path_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    """TResNet-M, raw logits (B, num_classes)."""
    return _build("tresnet_m", size, num_classes, pretrained, hub_tag, drop_rate,
                  drop_path_rate, **kwargs)


def build_tresnet_l(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                    hub_tag: str | None = None, drop_rate: float = 0.0,
                    drop_path_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    """TResNet-L, raw logits (B, num_classes). Used by the Sewer-ML benchmark and by ASL."""
    return _build("tresnet_l", size, num_classes, pretrained, hub_tag, drop_rate,
                  drop_path_rate, **kwargs)


def build_tresnet_xl(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                     hub_tag: str | None = None, drop_rate: float = 0.0,
                     drop_path_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    """TResNet-XL, raw logits (B, num_classes)."""
    return _build("tresnet_xl", size, num_classes, pretrained, hub_tag, drop_rate,
                  drop_path_rate, **kwargs)
