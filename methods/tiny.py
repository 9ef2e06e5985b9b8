"""A two-layer CNN: the model of the engine self-check (``sewerbench check``) and of the
engine tests; registered as ``tiny_cnn``. Not a published method."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

NUM_CLASSES = 17


class TinyNet(nn.Module):
    """conv(3->c, s2) - ReLU - conv(c->c, s2) - ReLU - global average pool - linear.

    ``batchnorm`` adds BatchNorm2d after the first conv; ``dropout`` before the head;
    ``aux`` returns ``(logits, aux_logits)`` in training mode like Inception-v3.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8, batchnorm: bool = False,
                 dropout: float = 0.0, aux: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.aux_head = nn.Linear(width, num_classes) if aux else None
        self.reference_num_params = None

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        f = self.drop(h.mean(dim=(2, 3)))
        out = self.head(f)
        if self.aux_head is not None and self.training:
            return out, self.aux_head(f)
        return out


def build_tiny(size: str = "tiny", num_classes: int = NUM_CLASSES, pretrained: Any = False,
               **kwargs: Any) -> TinyNet:
    return TinyNet(num_classes=num_classes, **kwargs)
