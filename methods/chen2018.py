"""Chen et al. 2018, as in the Sewer-ML benchmark code.

Stage 1 (binary defect / normal): ``torchvision.models.squeezenet1_0(num_classes=1)``.
Note: SqueezeNet's classifier ends in conv 1x1 -> ReLU -> global average pool, so its "logits"
are never negative (sigmoid >= 0.5); the Sewer-ML code keeps this, and so do we.

Stage 2 (multi-label): ``torchvision.models.inception_v3(num_classes=17)`` (aux classifier on,
``transform_input`` off, torchvision's truncated-normal init), 299 px input. In training mode
the model returns ``(logits, aux_logits)`` and the Sewer-ML loss is
``loss(logits) + 0.4 * loss(aux_logits)`` (``model.aux_loss_weight``); in eval mode it returns
the logits.

``size="tiny"``: the same torchvision classes and wiring with every conv width divided by 4
(SqueezeNet, 64 px input) or 8 (Inception-v3). Inception-v3's aux branch needs a 17x17 map at
Mixed_6e, so the tiny Inception still takes 299 px input.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from torch import nn
from torchvision.models import Inception3, SqueezeNet
from torchvision.models.inception import (BasicConv2d, InceptionA, InceptionAux, InceptionB,
                                          InceptionC, InceptionD, InceptionE)
from torchvision.models.squeezenet import Fire

from benchmark.errors import SewerbenchError
from methods.resnet import check_size, tag_model

logger = logging.getLogger(__name__)

REFERENCE_NUM_PARAMS = {"binary": 735_937, "multilabel": 24_391_170}  # C=1 / C=17
IMAGE_SIZE = {"binary": (224, 64), "multilabel": (299, 299)}  # (reference, tiny)
AUX_LOSS_WEIGHT = 0.4


def _squeezenet(size: str, num_classes: int, dropout: float) -> SqueezeNet:
    if size == "reference":
        return SqueezeNet("1_0", num_classes=num_classes, dropout=dropout)
    # tiny: SqueezeNet 1.0 layout with a quarter of the channels
    model = SqueezeNet.__new__(SqueezeNet)
    nn.Module.__init__(model)
    model.num_classes = num_classes
    model.features = nn.Sequential(
        nn.Conv2d(3, 24, kernel_size=7, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(24, 4, 16, 16),
        Fire(32, 4, 16, 16),
        Fire(32, 8, 32, 32),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(64, 8, 32, 32),
        Fire(64, 12, 48, 48),
        Fire(96, 12, 48, 48),
        Fire(96, 16, 64, 64),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(128, 16, 64, 64),
    )
    final_conv = nn.Conv2d(128, num_classes, kernel_size=1)
    model.classifier = nn.Sequential(
        nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
    for m in model.modules():  # torchvision's SqueezeNet init
        if isinstance(m, nn.Conv2d):
            if m is final_conv:
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
            else:
                nn.init.kaiming_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
    return model


def _scaled_conv(in_channels: int, out_channels: int, divisor: int = 8,
                 **kwargs: Any) -> BasicConv2d:
    return BasicConv2d(in_channels if in_channels == 3 else in_channels // divisor,
                       out_channels // divisor, **kwargs)


def _trunc_normal_linear(in_features: int, out_features: int, std: float) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    layer.stddev = std
    nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-2, b=2)
    return layer


def _inception(size: str, num_classes: int, dropout: float) -> Inception3:
    if size == "reference":
        return Inception3(num_classes=num_classes, aux_logits=True, transform_input=False,
                          init_weights=True, dropout=dropout)
    d = 8
    conv = functools.partial(_scaled_conv, divisor=d)
    blocks = [conv] + [functools.partial(b, conv_block=conv) for b in
                       (InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionAux)]
    model = Inception3(num_classes=num_classes, aux_logits=True, transform_input=False,
                       inception_blocks=blocks, init_weights=True, dropout=dropout)
    # the two classifiers take the narrowed features (torchvision's init: std 0.1 / 0.001)
    model.fc = _trunc_normal_linear(2048 // d, num_classes, 0.1)
    model.AuxLogits.fc = _trunc_normal_linear(768 // d, num_classes, 0.001)
    return model


def build_chen2018_binary(size: str = "reference", num_classes: int = 1, pretrained: Any = False,
                          dropout: float = 0.5, **kwargs: Any) -> nn.Module:
    """Stage 1: SqueezeNet 1.0, raw logits (B, 1)."""
    check_size(size, "chen2018_binary")
    if pretrained:
        raise SewerbenchError("chen2018_binary: trained from scratch; no pretrained weights")
    if num_classes != 1:
        logger.debug("chen2018_binary: num_classes=%s ignored, the binary model has 1 output",
                     num_classes)
    if kwargs:
        logger.debug("chen2018_binary: ignoring options %s", sorted(kwargs))
    model = _squeezenet(size, 1, dropout)
    return tag_model(model, REFERENCE_NUM_PARAMS["binary"],
                     IMAGE_SIZE["binary"][size != "reference"])


def build_chen2018(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                   dropout: float = 0.5, **kwargs: Any) -> nn.Module:
    """Stage 2: Inception-v3, logits (B, C); ``(logits, aux_logits)`` in training mode."""
    check_size(size, "chen2018")
    if pretrained:
        raise SewerbenchError("chen2018: trained from scratch; no pretrained weights")
    if kwargs:
        logger.debug("chen2018: ignoring options %s", sorted(kwargs))
    model = _inception(size, num_classes, dropout)
    model.aux_loss_weight = AUX_LOSS_WEIGHT
    return tag_model(model, REFERENCE_NUM_PARAMS["multilabel"],
                     IMAGE_SIZE["multilabel"][size != "reference"])
