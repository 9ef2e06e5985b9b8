"""The registry: every method of the benchmark, named in one place.

Each entry says where the builder lives (imported lazily, so listing methods is cheap),
its family (which decides the input transform and default recipe), its kind (a torch
``nn.Module`` trained by the engine, or a scikit-learn pipeline), and its reference
input size. Builders take ``size="reference" | "tiny"``, ``num_classes``, ``pretrained``
and method-specific keyword arguments, and return a model whose forward returns raw
logits of shape (B, num_classes) (Inception-style models may return
``(logits, aux_logits)`` in training mode).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class MethodSpec:
    name: str
    target: str                    # "module:function" of the builder
    family: str                    # q2l | asl | sewerml | sklearn
    transform: str                 # imagenet | sewerml | none  (input normalisation)
    image_size: int                # reference input resolution
    description: str
    kind: str = "torch"            # torch | sklearn
    binary: bool = False           # a defect/normal stage-1 classifier (1 output)
    defaults: dict[str, Any] = field(default_factory=dict)
    needs_train_targets: bool = False  # the builder takes the training labels (KSSNet's label graph)
    takes_seed: bool = False           # the builder takes the run seed (scikit-learn forests)
    takes_image_size: bool = False     # the builder takes the input size (Q2L / MA-Q2L positional encoding)
    feature_stage: bool = False        # scikit-learn model with a feature extractor (features / fit_features)
    takes_protocol: bool = False       # the builder takes the run's protocol (published | corrected)
    full_resolution: bool = False      # the features read each image at its original size (no cache, no resize)
    standin_backbone: str | None = None  # the synthetic pretraining stand-in it loads (benchmark.pretrain) for
                                         # `pretrained: true` at size tiny

    def builder_default(self, name: str) -> Any:
        """The builder's default for keyword ``name`` (the spec's defaults first)."""
        import inspect

        if name in self.defaults:
            return self.defaults[name]
        param = inspect.signature(self.builder()).parameters.get(name)
        return None if param is None or param.default is inspect.Parameter.empty else param.default

    def builder(self) -> Callable[..., Any]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


_SPECS = [
    # --- MA-Q2L and Query2Label (REFERENCE.md sections 3 and 4) ---
    MethodSpec("maq2l", "methods.maq2l:build_maq2l", "q2l", "imagenet", 448,
               "MA-Q2L: ResNet-101 + transformer with mask attention and label correlation",
               defaults={"mask_attention": True, "label_correlation": True}, takes_image_size=True,
               standin_backbone="resnet101_trunk"),
    MethodSpec("q2l", "methods.q2l:build_q2l", "q2l", "imagenet", 448,
               "Query2Label (the paper's Baseline): ResNet-101 + transformer decoder", takes_image_size=True,
               standin_backbone="resnet101_trunk"),
    # --- ASL (REFERENCE.md section 5) ---
    MethodSpec("asl_tresnet_l", "methods.tresnet:build_tresnet_l", "asl", "none", 448,
               "ASL: TResNet-L trained with the asymmetric loss",
               defaults={"hub_tag": "miil_in1k_448"},    # ASL's 448 px ImageNet weights
               standin_backbone="tresnet_l"),
    MethodSpec("asl_resnet101", "methods.resnet:build_resnet101", "asl", "imagenet", 448,
               "ResNet-101 trained with the asymmetric loss"),
    # --- Sewer-ML benchmark models (REFERENCE.md section 6) ---
    MethodSpec("resnet101", "methods.resnet:build_resnet101", "sewerml", "sewerml", 224,
               "ResNet-101 (Sewer-ML benchmark, from scratch, BCE)"),
    MethodSpec("kssnet", "methods.kssnet:build_kssnet", "sewerml", "sewerml", 224,
               "KSSNet: ResNet-101 + GCN lateral fusion over label co-occurrence", needs_train_targets=True),
    MethodSpec("tresnet_m", "methods.tresnet:build_tresnet_m", "sewerml", "sewerml", 224,
               "TResNet-M (Sewer-ML benchmark)"),
    MethodSpec("tresnet_l", "methods.tresnet:build_tresnet_l", "sewerml", "sewerml", 224,
               "TResNet-L (Sewer-ML benchmark; stage 2 of the 'Benchmark')"),
    MethodSpec("tresnet_xl", "methods.tresnet:build_tresnet_xl", "sewerml", "sewerml", 224,
               "TResNet-XL (Sewer-ML benchmark)"),
    MethodSpec("xie2019", "methods.xie2019:build_xie2019", "sewerml", "sewerml", 224,
               "Xie et al. 2019 CNN, multi-label"),
    MethodSpec("xie2019_binary", "methods.xie2019:build_xie2019_binary", "sewerml", "sewerml", 224,
               "Xie et al. 2019 CNN, binary defect/normal (stage 1 of the 'Benchmark')",
               binary=True),
    MethodSpec("chen2018_binary", "methods.chen2018:build_chen2018_binary", "sewerml", "sewerml",
               224, "Chen et al. 2018 stage 1: SqueezeNet 1.0 binary", binary=True),
    MethodSpec("chen2018", "methods.chen2018:build_chen2018", "sewerml", "sewerml", 299,
               "Chen et al. 2018 stage 2: Inception-v3 multi-label with aux loss"),
    MethodSpec("hassan2019", "methods.hassan2019:build_hassan2019", "sewerml", "sewerml", 224,
               "Hassan et al. 2019: AlexNet"),
    MethodSpec("myrans2018_binary", "methods.myrans2018:build_myrans2018_binary", "sklearn",
               "none", 128, "Myrans et al. 2018: GIST + Extra Trees, binary", kind="sklearn",
               binary=True, takes_seed=True, feature_stage=True, takes_protocol=True,
               takes_image_size=True, full_resolution=True),
    MethodSpec("myrans2018", "methods.myrans2018:build_myrans2018", "sklearn", "none", 128,
               "Myrans et al. 2018: GIST + Extra Trees, multi-label", kind="sklearn",
               takes_seed=True, feature_stage=True, takes_protocol=True, takes_image_size=True,
               full_resolution=True),
    # --- the tiny CNN that `sewerbench check` trains in seconds (not a published method) ---
    MethodSpec("tiny_cnn", "methods.tiny:build_tiny", "tiny", "imagenet", 16,
               "Two-layer CNN of the engine self-check (`sewerbench check`); not a published method"),
]

REGISTRY: dict[str, MethodSpec] = {s.name: s for s in _SPECS}


def available() -> list[str]:
    return list(REGISTRY)


def get_spec(name: str) -> MethodSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}") from None


def build(name: str, **cfg: Any):
    """Build method ``name``; ``cfg`` overrides the spec's defaults."""
    spec = get_spec(name)
    kwargs = {**spec.defaults, **cfg}
    return spec.builder()(**kwargs)
