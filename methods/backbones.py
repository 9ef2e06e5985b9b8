"""ResNet backbones with frozen batch norm, as used by Query2Label and MA-Q2L.

The reference backbone is torchvision's ResNet-101 built with ``FrozenBatchNorm2d`` in
every norm slot; the stem (``conv1``) and ``layer1`` are frozen, ``layer2``-``layer4`` are
trained, and the output is the ``layer4`` feature map (stride 32). Parameter names follow
torchvision (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so torchvision / timm
``resnet101`` state dicts load directly.

``pretrained``: ``False`` (random init), ``True`` (torchvision's ImageNet weights from the
torch hub cache / download, or timm's ``resnet101.tv_in1k``; offline this fails with a message
saying how to supply the file) or the path of a local torchvision ResNet-101 state_dict
(``.pth`` loaded weights-only, or ``.safetensors``). The tiny size has no hub weights
(``pretrained=True`` is then ignored with a warning); a local file of the tiny trunk's shapes
loads (the synthetic pretraining stand-in of ``sewerbench pretrain``).

``size="tiny"`` keeps the same structure (bottleneck blocks, FrozenBN, frozen stem and
layer1) with fewer channels and one block per stage, for CPU smoke tests; it dilates layer3 and
layer4 instead of striding them (output stride 8), so its 64 px input gives an 8 x 8 map.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from benchmark.errors import SewerbenchError

log = logging.getLogger(__name__)

#: torchvision's ImageNet weights for ResNet-101 (the ones ``pretrained=True`` gave the references).
TORCHVISION_RESNET101_URL = "https://download.pytorch.org/models/resnet101-63fe2227.pth"
#: timm hub name of the same torchvision weights.
TIMM_RESNET101_NAME = "resnet101.tv_in1k"

# (stem width, bottleneck widths per stage, blocks per stage, layer2/3/4 stride replaced by
# dilation as torchvision's ``replace_stride_with_dilation`` / DETR's ``--dilation``).
# The tiny trunk runs at 64 px: with the reference's stride 32 its layer4 map would be 2 x 2,
# leaving attention and mask attention nothing to choose between, so it dilates layer3 and
# layer4 (output stride 8: an 8 x 8 map at 64 px, as the reference's 14 x 14 at 448 px).
_CONFIGS = {
    "reference": (64, (64, 128, 256, 512), (3, 4, 23, 3), (False, False, False)),
    "tiny": (16, (8, 16, 32, 64), (1, 1, 1, 1), (False, True, True)),
}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, eps 1e-5)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # torchvision BatchNorm2d checkpoints carry a counter that frozen BN does not use
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


#: Backbone normalisation: ``frozen`` (the references: FrozenBatchNorm2d holding the ImageNet
#: statistics) or ``batch`` (trainable BatchNorm2d, for training a randomly initialised backbone
#: from scratch, e.g. the tiny models of the CPU smoke profile, where frozen identity statistics
#: leave the residual stream unnormalised and the model does not learn).
BACKBONE_NORMS = ("frozen", "batch")


class ResNetBody(nn.Module):
    """torchvision-layout ResNet trunk (conv1 .. layer4), no pooling head; returns layer4."""

    def __init__(self, stem_width: int, widths: Sequence[int], blocks: Sequence[int],
                 dilate: Sequence[bool] = (False, False, False), norm: str = "frozen"):
        super().__init__()
        if norm not in BACKBONE_NORMS:
            raise ValueError(f"backbone norm must be one of {BACKBONE_NORMS}, not {norm!r}")
        norm = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_width
        dilation = 1
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            previous_dilation = dilation
            if i > 0 and dilate[i - 1]:  # torchvision's replace_stride_with_dilation
                dilation *= stride
                stride = 1
            layers = []
            for j in range(n):
                downsample = None
                if j == 0 and (stride != 1 or inplanes != planes * Bottleneck.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * Bottleneck.expansion, kernel_size=1,
                                  stride=stride, bias=False),
                        norm(planes * Bottleneck.expansion))
                layers.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, downsample,
                                         dilation=previous_dilation if j == 0 else dilation,
                                         norm_layer=norm))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.num_channels = inplanes
        self.output_stride = 32 // 2 ** sum(bool(d) for d in dilate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class ResNetBackbone(nn.Module):
    """Holds the trunk as ``body`` (reference key prefix ``backbone.0.body.*``)."""

    def __init__(self, size: str = "reference", pretrained: bool | str | os.PathLike = False,
                 norm: str = "frozen", freeze_stem: bool = True):
        super().__init__()
        if size not in _CONFIGS:
            raise ValueError(f"unknown backbone size {size!r}; expected one of {sorted(_CONFIGS)}")
        self.body = ResNetBody(*_CONFIGS[size], norm=norm)
        self.num_channels = self.body.num_channels
        self.output_stride = self.body.output_stride
        if pretrained is True and size != "reference":
            log.warning("no hub weights for the %r backbone: random init (a local file of "
                        "matching shapes loads at any size)", size)
        elif pretrained:
            load_resnet101_weights(self.body, pretrained)
        if freeze_stem:
            freeze_stem_and_layer1(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def freeze_stem_and_layer1(body: nn.Module) -> None:
    """As the references: every parameter outside layer2/3/4 stops training."""
    for name, p in body.named_parameters():
        if not name.startswith(("layer2", "layer3", "layer4")):
            p.requires_grad_(False)


def clean_state_dict(state_dict: dict, prefixes: tuple[str, ...] = ("module.", "_orig_mod.")
                     ) -> "OrderedDict[str, torch.Tensor]":
    """Strip wrapper key prefixes (default: DDP's ``module.`` and torch.compile's ``_orig_mod.``)."""
    out = OrderedDict()
    for k, v in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in prefixes:
                if k.startswith(prefix):
                    k, stripped = k[len(prefix):], True
        out[k] = v
    return out


def _fetch_resnet101_state_dict() -> dict:
    """torchvision cache/download, then timm's hub cache, then the timm hub (if the network is up)."""
    import urllib.error
    errors = []
    network_down = False
    try:
        return torch.hub.load_state_dict_from_url(TORCHVISION_RESNET101_URL, map_location="cpu",
                                                  progress=False, weights_only=True)
    except Exception as exc:
        network_down = isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError))
        errors.append(f"torchvision download: {type(exc).__name__}: {exc}")
    try:
        from huggingface_hub import try_to_load_from_cache
        from safetensors.torch import load_file
        cached = try_to_load_from_cache(f"timm/{TIMM_RESNET101_NAME}", "model.safetensors")
        if isinstance(cached, str):
            return load_file(cached)
    except Exception as exc:  # no hub client or a broken cache: fall through
        errors.append(f"timm hub cache: {type(exc).__name__}: {exc}")
    if not network_down:
        try:
            import timm
            return timm.create_model(TIMM_RESNET101_NAME, pretrained=True).state_dict()
        except Exception as exc:
            errors.append(f"timm hub {TIMM_RESNET101_NAME}: {type(exc).__name__}: {exc}")
    raise SewerbenchError(
        "pretrained ResNet-101 weights: could not fetch them (" + "; ".join(errors)[:300] + "). "
        f"Download {TORCHVISION_RESNET101_URL} (or timm's {TIMM_RESNET101_NAME}) on a machine with "
        "network access and pass its local path as pretrained=<file> "
        "(config key `pretrained`), a torchvision ResNet-101 state_dict")


def load_resnet101_weights(body: nn.Module, source: bool | str | os.PathLike) -> None:
    """Load ImageNet ResNet-101 weights into ``body`` (hub when ``True``, else a local file)."""
    if source is True:
        state = _fetch_resnet101_state_dict()
        origin = "hub"
    else:
        path = Path(source)
        if not path.is_file():
            raise SewerbenchError(f"{path}: pretrained weights file not found")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SewerbenchError(f"{path}: cannot load as a weights-only torch or safetensors file "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
        if not isinstance(state, dict):
            raise SewerbenchError(f"{path}: expected a ResNet-101 state_dict")
        origin = str(path)
    state = {k: v for k, v in clean_state_dict(state).items() if not k.startswith("fc.")}
    try:
        result = body.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: e.g. reference-size weights into the tiny trunk
        detail = " ".join(str(exc).split())[:200]
        raise SewerbenchError(f"{origin}: the weights do not fit this ResNet trunk ({detail})") from None
    missing = [k for k in result.missing_keys]
    if missing or result.unexpected_keys:
        raise SewerbenchError(
            f"{origin}: not a torchvision ResNet-101 state_dict: missing {missing[:5]} "
            f"({len(missing)}), unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})")
    log.info("loaded ImageNet ResNet-101 weights from %s", origin)
