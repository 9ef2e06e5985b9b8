"""Xie et al. 2019 sewer-defect CNN, as defined in the Sewer-ML benchmark code.

features: conv 11x11 (3->64, stride 1, pad 5), ReLU, maxpool 2; conv 3x3 (64->128, stride 2,
pad 1), ReLU, maxpool 2; conv 3x3 (128->128, stride 2, pad 1), ReLU, maxpool 2;
adaptive average pool 8x8; classifier: FC 8192->1024, ReLU, dropout 0.6, FC 1024->512, ReLU,
dropout 0.6, FC 512->C. Binary (defect / normal, C=1) and multi-label (C=17) variants share
the architecture. ``init="reference"`` keeps PyTorch's default initialisation, as the reference;
``init="kaiming"`` (the smoke profile's: README "The default profile") draws every conv and FC
weight from He's normal (fan-in, ReLU gain) with zero biases. Under the default, the signal
shrinks by about 1/6 in variance per layer, so at 64 px the tiny model's logits hardly vary
between images (sd across images ~0.004) and a few epochs leave it a constant predictor.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from benchmark.errors import SewerbenchError
from methods.resnet import check_size, tag_model

logger = logging.getLogger(__name__)

REFERENCE_NUM_PARAMS = {"multilabel": 9_167_889, "binary": 9_159_681}  # C=17 / C=1
REFERENCE_IMAGE_SIZE = 224
TINY_IMAGE_SIZE = 64
INITS = ("reference", "kaiming")
# (conv1, conv2, conv3 channels, pooled grid, fc1, fc2)
_WIDTHS = {"reference": (64, 128, 128, 8, 1024, 512), "tiny": (16, 32, 32, 4, 128, 64)}


class Xie2019(nn.Module):
    def __init__(self, num_classes: int, dropout_rate: float = 0.6, size: str = "reference",
                 init: str = "reference"):
        super().__init__()
        if init not in INITS:
            raise SewerbenchError(f"xie2019: init must be one of {', '.join(INITS)}, got {init!r}")
        c1, c2, c3, grid, f1, f2 = _WIDTHS[size]
        self.dropout_rate = dropout_rate
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=1, padding=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        self.classifier = nn.Sequential(
            nn.Linear(c3 * grid * grid, f1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout_rate),
            nn.Linear(f1, f2),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout_rate),
            nn.Linear(f2, num_classes),
        )
        if init == "kaiming":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _build(size: str, num_classes: int, pretrained: Any, dropout_rate: float, init: str,
           variant: str, kwargs: dict) -> nn.Module:
    name = "xie2019" if variant == "multilabel" else "xie2019_binary"
    check_size(size, name)
    if pretrained:
        raise SewerbenchError(f"{name}: no pretrained weights exist (trained from scratch)")
    if kwargs:
        logger.debug("%s: ignoring options %s", name, sorted(kwargs))
    model = Xie2019(num_classes, dropout_rate, size, init)
    return tag_model(model, REFERENCE_NUM_PARAMS[variant],
                     REFERENCE_IMAGE_SIZE if size == "reference" else TINY_IMAGE_SIZE)


def build_xie2019(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                  dropout_rate: float = 0.6, init: str = "reference", **kwargs: Any) -> nn.Module:
    """Multi-label Xie2019, raw logits (B, num_classes)."""
    if num_classes < 2:
        raise SewerbenchError("xie2019: the multi-label variant needs num_classes > 1")
    return _build(size, num_classes, pretrained, dropout_rate, init, "multilabel", kwargs)


def build_xie2019_binary(size: str = "reference", num_classes: int = 1, pretrained: Any = False,
                         dropout_rate: float = 0.6, init: str = "reference", **kwargs: Any) -> nn.Module:
    """Binary (defect vs normal) Xie2019, raw logits (B, 1). ``num_classes`` must be 1 (a
    caller passing the multi-label default 17 gets 1 with a debug note)."""
    if num_classes != 1:
        logger.debug("xie2019_binary: num_classes=%s ignored, the binary model has 1 output",
                     num_classes)
    return _build(size, 1, pretrained, dropout_rate, init, "binary", kwargs)
