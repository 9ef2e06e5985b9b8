"""MA-Q2L (Zuo et al. 2025): Query2Label with mask attention and label correlation.

REFERENCE.md section 3. Mask attention (MA): a bias-free Linear(hidden -> K) applied at every
position of the transformer input (the feature map after ``input_proj``, which is Identity at
the reference) gives raw class activation maps M (B, K, HW); M is added to the pre-softmax
logits of the cross-attention of every decoder layer (same M in all layers and heads).
Label correlation (LC): a self-attention among the K label queries after the cross-attention
in every decoder layer. The two switches are independent, so the four ablation cells are one
config each; with both off the computation is exactly Query2Label's (decoder keys then read
``multihead_attn_sy``/``norm4`` where Q2L has ``multihead_attn``/``norm3``).

``mask_tiling`` decides how M is tiled over the attention heads (nn.MultiheadAttention's
additive mask has one (K, HW) slice per row ``b*heads + h``):

* ``"reference"`` (default, reproduces the published numbers): the reference code's
  ``repeat(heads, 1, 1)``, head-major, so row ``b*heads + h`` gets the maps of sample
  ``(b*heads + h) mod B``. With batch > 1 a sample's heads are masked with other samples'
  maps (the authors trained at batch 16 and evaluated at batch 1). Predictions at batch > 1
  therefore depend on the batch composition.
* ``"per_sample"``: ``repeat_interleave``, every head of sample b gets sample b's maps.

Both give identical outputs at batch 1. The attribute ``model.transformer.mask_tiling`` may be
changed after building (see :func:`set_mask_tiling`).
"""
from __future__ import annotations

import os

from methods.backbones import ResNetBackbone
from methods.q2l import Query2LabelModel, _check_image_size, _config, reference_param_count
from methods.transformer import MASK_TILINGS, MAQ2LTransformer


def build_maq2l(size: str = "reference", num_classes: int = 17,
                pretrained: bool | str | os.PathLike = False, mask_attention: bool = True,
                label_correlation: bool = True, mask_tiling: str = "reference",
                image_size: int | None = None, dropout: float = 0.1,
                backbone_norm: str = "frozen", freeze_stem: bool = True, **overrides) -> Query2LabelModel:
    """Build MA-Q2L (or one of its ablation cells). ``overrides`` may set hidden_dim, nheads,
    dim_feedforward, enc_layers, dec_layers; ``pretrained``: False | True | path of ResNet-101
    weights (see methods.backbones); ``image_size`` sizes the stored ``pe`` buffer (any multiple
    of 32 runs). ``backbone_norm`` (frozen | batch) and ``freeze_stem`` keep the reference
    (FrozenBatchNorm, stem + layer1 frozen) by default; ``batch``/False train a randomly
    initialised backbone from scratch (the smoke profile)."""
    cfg = _config(size, overrides)
    image_size = image_size or cfg["image_size"]
    _check_image_size(image_size)
    backbone = ResNetBackbone(size, pretrained=pretrained, norm=backbone_norm,
                              freeze_stem=freeze_stem)
    transformer = MAQ2LTransformer(cfg["hidden_dim"], cfg["nheads"], cfg["enc_layers"], cfg["dec_layers"],
                                   cfg["dim_feedforward"], dropout, num_classes=num_classes,
                                   mask_attention=mask_attention, label_correlation=label_correlation,
                                   mask_tiling=mask_tiling)
    model = Query2LabelModel(backbone, transformer, num_classes, image_size)
    model.reference_num_params = reference_param_count(num_classes, mask_attention, label_correlation)
    return model


def set_mask_tiling(model, mask_tiling: str) -> None:
    """Switch an MA-Q2L model between ``reference`` and ``per_sample`` mask tiling."""
    if mask_tiling not in MASK_TILINGS:
        raise ValueError(f"mask_tiling must be one of {MASK_TILINGS}, not {mask_tiling!r}")
    model.transformer.mask_tiling = mask_tiling
