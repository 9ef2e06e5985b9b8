"""Query2Label (Liu et al. 2021), the MA-Q2L paper's "Baseline" (REFERENCE.md section 4).

ResNet-101 (FrozenBN, stem + layer1 frozen) -> input_proj (Identity at the reference, where
hidden = 2048 = backbone channels; a 1x1 conv otherwise) -> 1 post-norm encoder layer ->
2 decoder layers (cross-attention + FFN, decoder self-attention removed) with learnable label
queries as query_pos -> final LayerNorm -> GroupWiseLinear. Module names equal the reference
state-dict keys (``backbone.0.body.*``, ``backbone.1.pe``, ``transformer.*``, ``query_embed``,
``fc.W``, ``fc.b``).
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from methods.backbones import ResNetBackbone
from methods.transformer import PositionEmbeddingSine, Q2LTransformer

#: Architecture per size: hidden dim, heads, FFN dim, encoder layers, decoder layers, image size.
SIZES = {
    "reference": dict(hidden_dim=2048, nheads=4, dim_feedforward=8192, enc_layers=1, dec_layers=2,
                      image_size=448),
    "tiny": dict(hidden_dim=64, nheads=4, dim_feedforward=256, enc_layers=1, dec_layers=2,
                 image_size=64),
}

# parameter counts of the reference parts (ResNet-101 conv weights; one layer of each kind)
_R101_PARAMS = 42_394_816
_MHA = 4 * 2048 * 2048 + 4 * 2048
_FFN = 2048 * 8192 + 8192 + 8192 * 2048 + 2048
_LN = 2 * 2048


def reference_param_count(num_classes: int = 17, mask_attention: bool = False,
                          label_correlation: bool = False, q2l_decoder_self_attn: bool = False) -> int:
    """Parameter count at the reference config (ResNet-101, hidden 2048, 1 enc + 2 dec layers)."""
    enc = _MHA + _FFN + 2 * _LN
    dec = _MHA + _FFN + 2 * _LN
    if label_correlation or q2l_decoder_self_attn:
        dec += _MHA + _LN
    head = num_classes * 2048 * 2 + num_classes  # query_embed + fc.W + fc.b
    cam = num_classes * 2048 if mask_attention else 0
    return _R101_PARAMS + enc + 2 * dec + _LN + head + cam


class Joiner(nn.Sequential):
    """backbone.0 = ResNet trunk, backbone.1 = position embedding; returns (features, pos)."""

    def forward(self, x: torch.Tensor):
        feat = self[0](x)
        return feat, self[1](feat)


class GroupWiseLinear(nn.Module):
    """One linear unit per class: logit_k = sum_d W[0,k,d] h[k,d] + b[0,k]."""

    def __init__(self, num_classes: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.W = nn.Parameter(torch.empty(1, num_classes, hidden_dim))
        self.b = nn.Parameter(torch.empty(1, num_classes)) if bias else None
        stdv = 1.0 / math.sqrt(hidden_dim)
        nn.init.uniform_(self.W, -stdv, stdv)
        if self.b is not None:
            nn.init.uniform_(self.b, -stdv, stdv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (self.W * x).sum(-1)
        return x + self.b if self.b is not None else x


class Query2LabelModel(nn.Module):
    """Backbone + transformer + GroupWiseLinear head; forward returns logits (B, K)."""

    def __init__(self, backbone: nn.Module, transformer: Q2LTransformer, num_classes: int,
                 image_size: int):
        super().__init__()
        hidden = transformer.d_model
        stride = getattr(backbone, "output_stride", 32)
        self.backbone = Joiner(
            backbone, PositionEmbeddingSine(hidden // 2, (image_size // stride, image_size // stride)))
        self.transformer = transformer
        self.num_classes = num_classes
        # the references create the conv and swap in Identity unless --keep_input_proj
        self.input_proj = (nn.Identity() if backbone.num_channels == hidden
                           else nn.Conv2d(backbone.num_channels, hidden, kernel_size=1))
        self.query_embed = nn.Embedding(num_classes, hidden)
        self.fc = GroupWiseLinear(num_classes, hidden, bias=True)
        self.reference_num_params: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src, pos = self.backbone(x)
        hs = self.transformer(self.input_proj(src), self.query_embed.weight, pos)
        return self.fc(hs)


def _config(size: str, overrides: dict) -> dict:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    unknown = set(overrides) - set(SIZES[size])
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}")
    return {**SIZES[size], **overrides}


def _check_image_size(image_size: int) -> None:
    if image_size <= 0 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, not {image_size}")


def build_q2l(size: str = "reference", num_classes: int = 17,
              pretrained: bool | str | os.PathLike = False, image_size: int | None = None,
              dropout: float = 0.1, decoder_self_attn: bool = False,
              backbone_norm: str = "frozen", freeze_stem: bool = True, **overrides) -> Query2LabelModel:
    """Build Query2Label. ``overrides`` may set hidden_dim, nheads, dim_feedforward,
    enc_layers, dec_layers. ``pretrained``: False | True | path of ResNet-101 weights (see
    methods.backbones). ``image_size`` only sizes the stored ``pe`` buffer; any multiple
    of 32 works at run time. ``backbone_norm`` (frozen | batch) and ``freeze_stem`` keep the
    reference (FrozenBatchNorm, stem + layer1 frozen) by default; ``batch``/False train a
    randomly initialised backbone from scratch (the smoke profile)."""
    cfg = _config(size, overrides)
    image_size = image_size or cfg["image_size"]
    _check_image_size(image_size)
    backbone = ResNetBackbone(size, pretrained=pretrained, norm=backbone_norm,
                              freeze_stem=freeze_stem)
    transformer = Q2LTransformer(cfg["hidden_dim"], cfg["nheads"], cfg["enc_layers"], cfg["dec_layers"],
                                 cfg["dim_feedforward"], dropout, decoder_self_attn=decoder_self_attn)
    model = Query2LabelModel(backbone, transformer, num_classes, image_size)
    model.reference_num_params = reference_param_count(num_classes,
                                                        q2l_decoder_self_attn=decoder_self_attn)
    return model
