"""Hassan et al. 2019: AlexNet trained end to end (Sewer-ML: ``torchvision.models.alexnet``).

torchvision's AlexNet: features conv11/4 (64) - pool - conv5 (192) - pool - conv3 (384) -
conv3 (256) - conv3 (256) - pool; adaptive average pool 6x6; classifier dropout 0.5,
FC 9216-4096, ReLU, dropout 0.5, FC 4096-4096, ReLU, FC 4096-C.
``size="tiny"`` keeps this layout with a quarter of the channels and 256-wide FC layers.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import nn
from torchvision.models import AlexNet

from benchmark.errors import SewerbenchError
from methods.resnet import check_size, tag_model

logger = logging.getLogger(__name__)

REFERENCE_NUM_PARAMS = 57_073_489  # num_classes=17
REFERENCE_IMAGE_SIZE = 224
TINY_IMAGE_SIZE = 64


def _tiny_alexnet(num_classes: int, dropout: float) -> AlexNet:
    model = AlexNet.__new__(AlexNet)  # same class and forward, without the full-size layers
    nn.Module.__init__(model)
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    c = (16, 48, 96, 64, 64)
    model.features = nn.Sequential(
        nn.Conv2d(3, c[0], kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[0], c[1], kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[1], c[2], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.classifier = nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(c[4] * 6 * 6, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(256, 256),
        nn.ReLU(inplace=True),
        nn.Linear(256, num_classes),
    )
    return model


def build_hassan2019(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                     dropout: float = 0.5, **kwargs: Any) -> nn.Module:
    """AlexNet (torchvision), raw logits (B, num_classes), from scratch."""
    check_size(size, "hassan2019")
    if pretrained:
        raise SewerbenchError("hassan2019: trained from scratch in the Sewer-ML benchmark; "
                              "no pretrained weights are wired")
    if kwargs:
        logger.debug("hassan2019: ignoring options %s", sorted(kwargs))
    if size == "reference":
        model = AlexNet(num_classes=num_classes, dropout=dropout)
    else:
        model = _tiny_alexnet(num_classes, dropout)
    return tag_model(model, REFERENCE_NUM_PARAMS,
                     REFERENCE_IMAGE_SIZE if size == "reference" else TINY_IMAGE_SIZE)
