"""KSSNet (Wang et al. 2020) as implemented in the Sewer-ML benchmark code.

Network (Sewer-ML ``ResNet_KSSNET``): a torchvision ResNet-101 and a 4-layer GCN over the
label graph. GCN layer l maps the label embeddings to the width of ResNet stage l
(C -> 256 -> 512 -> 1024 -> 2048, no bias). After stages 1-3 a lateral connection fuses the
GCN output into the feature map: features (B, Ch, H, W) are projected onto tanh(GCN output)
(-> B x C x H x W), mapped back by a bias-free 1x1 conv (C -> Ch) and added to the features.
LeakyReLU(0.2) follows each GCN layer (after its use in the fusion). The logits are the
average-pooled layer4 features times the final GCN output (B x 2048 @ 2048 x C); there is no
fc layer.

Label embeddings: the Sewer-ML code uses one-hot vectors (``word_embeddings/one_hot.npy``,
its GloVe option is unimplemented), so the first GCN layer is C -> 256. Other fixed embeddings
(C x D) can be passed as ``word_embeddings``.

Adjacency (Sewer-ML ``create_adjacency_matrix.py`` + ``ml_models.resnet_kssnet``):
1. co-occurrence counts M_ij (i != j, zero diagonal) and label counts N_i on the training set;
2. ML-GCN step: P = M / N_i (row i), binarised at tau_mlgcn = 0.4, re-weighted
   A = p * B / (column sums of B + 1e-6) + (1 - p) * I with p = 0.2;
3. KSSNet step on A (no knowledge graph is given, so lambda has no effect):
   S = D^-1/2 A D^-1/2 (D = row sums), S[S < tau] = 0 with tau = 0.02,
   A_KS = eta * S + (1 - eta) * I with eta = 0.4 (this is ``adj_ks.npy``);
4. the model normalises A_KS once more (D^-1/2 A_KS D^-1/2) and keeps it as a fixed buffer.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import SewerbenchError
from methods.resnet import _torchvision_resnet, apply_pretrained, check_size, tag_model, TIMM_TAG

logger = logging.getLogger(__name__)

REFERENCE_NUM_PARAMS = 45_287_488  # num_classes=17, one-hot label embeddings
REFERENCE_IMAGE_SIZE = 224
TINY_IMAGE_SIZE = 64
STAGE_CHANNELS = (256, 512, 1024, 2048)


# ----------------------------------------------------------------------------- adjacency

def cooccurrence(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label co-occurrence counts (C, C) with zero diagonal and label counts (C,)."""
    t = np.asarray(targets)
    if t.ndim != 2:
        raise SewerbenchError(f"kssnet: targets must be (N, C), got shape {t.shape}")
    t = (t > 0).astype(np.float64)
    adj = t.T @ t
    counts = np.diag(adj).copy()
    np.fill_diagonal(adj, 0.0)
    return adj, counts


def normalize_adjacency(adj: np.ndarray) -> np.ndarray:
    """Symmetric normalisation D^-1/2 A D^-1/2 with D the row sums (Sewer-ML's helper)."""
    d = np.asarray(adj, dtype=np.float64).sum(1)
    with np.errstate(divide="ignore"):
        d_inv_sqrt = np.where(d > 0, d ** -0.5, 0.0)
    return d_inv_sqrt[:, None] * adj * d_inv_sqrt[None, :]


def mlgcn_adjacency(adj: np.ndarray, counts: np.ndarray, tau: float = 0.4,
                    p: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """ML-GCN conditional-probability adjacency: (re-weighted, binary).

    A label that never occurs has an all-zero row (the reference divides by zero there).
    """
    adj = np.asarray(adj, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(counts[:, None] > 0, adj / counts[:, None], 0.0)
    binary = (cond >= tau).astype(np.float64)
    reweighted = binary * p / (binary.sum(0, keepdims=True) + 1e-6)
    reweighted = reweighted + np.eye(len(counts)) * (1.0 - p)
    return reweighted, binary


def kssnet_from_statistics(stat_adj: np.ndarray, knowledge_adj: np.ndarray | None = None,
                           lam: float = 0.4, tau: float = 0.02, eta: float = 0.4) -> np.ndarray:
    """KSSNet equations 2-4: mix (lambda), threshold (tau), re-weight with identity (eta)."""
    if knowledge_adj is None or lam == 1.0:
        adj = normalize_adjacency(stat_adj)
    elif stat_adj is None or lam == 0.0:
        adj = normalize_adjacency(knowledge_adj)
    else:
        adj = lam * normalize_adjacency(stat_adj) + (1 - lam) * normalize_adjacency(knowledge_adj)
    adj = np.where(adj < tau, 0.0, adj)
    return eta * adj + np.eye(adj.shape[0]) * (1 - eta)


def kssnet_adjacency(targets: np.ndarray, lam: float = 0.4, tau: float = 0.02, eta: float = 0.4,
                     mlgcn_tau: float = 0.4, mlgcn_p: float = 0.2) -> np.ndarray:
    """The Sewer-ML ``adj_ks`` matrix from training labels (N, C) (before the model's final
    normalisation)."""
    adj, counts = cooccurrence(targets)
    reweighted, _ = mlgcn_adjacency(adj, counts, mlgcn_tau, mlgcn_p)
    return kssnet_from_statistics(reweighted, None, lam, tau, eta)


# ----------------------------------------------------------------------------- model

class GraphConvolution(nn.Module):
    """Kipf & Welling GCN layer without bias: adj @ (x @ W)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return adj @ (x @ self.weight)


class LateralFusion(nn.Module):
    """Project CNN features onto tanh(label features), 1x1 conv back, add (residual)."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.merge_conv = nn.Conv2d(num_classes, channels, kernel_size=1, bias=False)

    def forward(self, feat: torch.Tensor, label_feat: torch.Tensor) -> torch.Tensor:
        weights = torch.tanh(label_feat)                            # (C, Ch)
        proj = torch.einsum("bchw,kc->bkhw", feat, weights)          # (B, C, H, W)
        return self.merge_conv(proj) + feat


class KSSNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, adjacency: np.ndarray,
                 word_embeddings: np.ndarray, lrelu_slope: float = 0.2):
        super().__init__()
        adjacency = np.asarray(adjacency, dtype=np.float64)
        word_embeddings = np.asarray(word_embeddings, dtype=np.float64)
        if adjacency.shape != (num_classes, num_classes):
            raise SewerbenchError(f"kssnet: adjacency must be ({num_classes}, {num_classes}), "
                                  f"got {adjacency.shape}")
        if word_embeddings.ndim != 2 or word_embeddings.shape[0] != num_classes:
            raise SewerbenchError(f"kssnet: word_embeddings must be ({num_classes}, D), "
                                  f"got {word_embeddings.shape}")
        self.backbone = backbone
        self.backbone.fc = nn.Identity()
        self.lrelu_slope = lrelu_slope
        widths = (word_embeddings.shape[1],) + STAGE_CHANNELS
        # attribute names follow the Sewer-ML code, so its checkpoints load as they are
        for i in range(4):
            setattr(self, f"gc{i + 1}", GraphConvolution(widths[i], widths[i + 1]))
        for i, c in enumerate(STAGE_CHANNELS[:3]):
            setattr(self, f"convgcn{i + 1}", LateralFusion(num_classes, c))
        self.register_buffer("adj", torch.from_numpy(normalize_adjacency(adjacency)).float())
        self.register_buffer("word_embeddings", torch.from_numpy(word_embeddings).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        g = self.word_embeddings
        stages = (b.layer1, b.layer2, b.layer3, b.layer4)
        for i, stage in enumerate(stages):
            x = stage(x)
            g = getattr(self, f"gc{i + 1}")(g, self.adj)
            if i < 3:
                x = getattr(self, f"convgcn{i + 1}")(x, g)
            g = F.leaky_relu(g, self.lrelu_slope)
        x = torch.flatten(b.avgpool(x), 1)
        return x @ g.t()


def build_kssnet(size: str = "reference", num_classes: int = 17, pretrained: Any = False,
                 adjacency: np.ndarray | None = None, targets: np.ndarray | None = None,
                 cooccurrence_counts: np.ndarray | None = None,
                 label_counts: np.ndarray | None = None, word_embeddings: np.ndarray | None = None,
                 lam: float = 0.4, tau: float = 0.02, eta: float = 0.4,
                 **kwargs: Any) -> nn.Module:
    """KSSNet on ResNet-101, raw logits (B, num_classes).

    The label graph comes from, in order: ``adjacency`` (an ``adj_ks`` matrix),
    ``targets`` (training labels (N, C)), or ``cooccurrence_counts`` + ``label_counts``.
    With none of them the graph is the identity (fine for counting parameters; train with
    the training labels). It is stored as a buffer, so checkpoints carry it.
    """
    check_size(size, "kssnet")
    if kwargs:
        logger.debug("kssnet: ignoring options %s", sorted(kwargs))
    if adjacency is not None:
        adj_ks, source = np.asarray(adjacency, dtype=np.float64), "given adjacency"
    elif targets is not None:
        adj_ks, source = kssnet_adjacency(targets, lam, tau, eta), "training labels"
    elif cooccurrence_counts is not None and label_counts is not None:
        counts = np.asarray(cooccurrence_counts, dtype=np.float64).copy()
        np.fill_diagonal(counts, 0.0)
        reweighted, _ = mlgcn_adjacency(counts, label_counts)
        adj_ks, source = kssnet_from_statistics(reweighted, None, lam, tau, eta), "label counts"
    else:
        adj_ks, source = np.eye(num_classes), "identity (no training labels given)"
        logger.debug("kssnet: no label statistics given; using the identity graph")
    if word_embeddings is None:
        word_embeddings = np.eye(num_classes)
    backbone = _torchvision_resnet(size, 1)
    if size != "reference" and pretrained is True:
        raise SewerbenchError("kssnet: hub weights exist only for size=reference "
                              "(a local file of matching shapes loads at any size)")
    apply_pretrained(backbone, pretrained, TIMM_TAG, "kssnet", ("fc.",))
    model = KSSNet(backbone, num_classes, adj_ks, word_embeddings)
    model.adjacency_source = source
    return tag_model(model, REFERENCE_NUM_PARAMS,
                     REFERENCE_IMAGE_SIZE if size == "reference" else TINY_IMAGE_SIZE)
