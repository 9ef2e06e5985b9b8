"""Losses against hand-computed values; the no-gradient focusing weight keeps the grad mode."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.classes import CLASS_INDEX
from methods.losses import (AsymmetricLoss, BCEWithLogitsPosWeight, Q2LAsymmetricLoss, bce_pos_weight,
                            bottleneck_class_weights, build_loss, dynamic_class_weights)


def test_asl_defaults_single_values():
    loss = AsymmetricLoss()
    # x = 0, y = 1: p = 0.5, weight (1 - 0.5)^1  ->  0.5 * ln 2
    assert loss(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx(0.5 * math.log(2), rel=1e-6)
    # x = 0, y = 0: 1 - p_m = min(0.5 + 0.05, 1) = 0.55, weight 0.45^4
    expected = -(0.45 ** 4) * math.log(0.55)
    assert loss(torch.zeros(1, 1), torch.zeros(1, 1)).item() == pytest.approx(expected, rel=1e-6)


def test_asl_sum_matches_formula():
    x = torch.tensor([[0.3, -2.0, 4.0], [1.5, 0.0, -0.7]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    got = AsymmetricLoss(gamma_neg=4, gamma_pos=1, clip=0.05)(x, y).item()
    total = 0.0
    for xv, yv in zip(x.flatten().tolist(), y.flatten().tolist()):
        p = 1 / (1 + math.exp(-xv))
        if yv == 1:
            total += (1 - p) ** 1 * math.log(max(p, 1e-8))
        else:
            pm = max(p - 0.05, 0.0)
            total += pm ** 4 * math.log(max(1 - pm, 1e-8))
    assert got == pytest.approx(-total, rel=1e-5)


def test_q2l_asl_hand_value_with_bottleneck_weights():
    # B = 1, K = 17, all logits 0, only RB positive: positives weigh (1-p)^0 = 1, negatives p^2 = 1/4
    x = torch.zeros(1, 17)
    y = torch.zeros(1, 17)
    y[0, CLASS_INDEX["RB"]] = 1
    got = Q2LAsymmetricLoss()(x, y).item()
    ln_half = math.log(0.5)
    pos = 2 * ln_half                            # RB is a bottleneck class: x2
    neg = 0.25 * ln_half * (3 * 2 + 13 * 1)      # IS, FO, OS x2; 13 other negatives
    assert got == pytest.approx(-(pos + neg) * 1000 / 17, rel=1e-6)
    assert got == pytest.approx(275.2204, rel=1e-5)


def test_q2l_asl_reduction_and_no_class_weights():
    torch.manual_seed(0)
    x = torch.randn(4, 17) * 3
    y = (torch.rand(4, 17) > 0.7).float()
    got = build_loss("q2l_asl")(x, y).item()
    p = torch.sigmoid(x).double()
    yd = y.double()
    el = yd * torch.log(p.clamp(min=1e-5)) + (1 - yd) * p ** 2 * torch.log((1 - p).clamp(min=1e-5))
    assert got == pytest.approx(-(el.sum() / (4 * 17) * 1000).item(), rel=1e-5)
    weighted = build_loss("maq2l_asl")(x, y).item()
    c = bottleneck_class_weights().double()
    assert weighted == pytest.approx(-((el * c).sum() / (4 * 17) * 1000).item(), rel=1e-5)


def test_bottleneck_weights():
    w = bottleneck_class_weights()
    assert [i for i, v in enumerate(w.tolist()) if v == 2] == [0, 5, 10, 14]
    assert w.sum().item() == 17 + 4


def test_focusing_weight_has_no_gradient():
    x = torch.tensor([[0.4]], requires_grad=True)
    y = torch.zeros(1, 1)
    loss = Q2LAsymmetricLoss(class_weights=None, num_classes=1)(x, y)
    loss.backward()
    p = 1 / (1 + math.exp(-0.4))
    # L = -1000 * w * ln(1 - p) with w = p^2 held constant: dL/dx = 1000 * p^2 * p
    assert x.grad.item() == pytest.approx(1000 * p ** 3, rel=1e-5)
    x2 = torch.tensor([[0.4]], requires_grad=True)
    Q2LAsymmetricLoss(class_weights=None, num_classes=1, disable_torch_grad_focal_loss=False)(x2, y).backward()
    full = 1000 * (p ** 3 - 2 * p ** 2 * (1 - p) * math.log(1 - p))
    assert x2.grad.item() == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("loss", [Q2LAsymmetricLoss(), AsymmetricLoss(disable_torch_grad_focal_loss=True)])
def test_grad_mode_is_preserved(loss):
    x = torch.randn(2, 17, requires_grad=True)
    y = (torch.rand(2, 17) > 0.5).float()
    assert torch.is_grad_enabled()
    out = loss(x, y)
    assert torch.is_grad_enabled() and out.requires_grad
    with torch.no_grad():
        out = loss(x, y)
        assert not torch.is_grad_enabled()
    assert not out.requires_grad
    assert torch.is_grad_enabled()


def test_dynamic_class_weights_by_hand():
    ap = [0.50, 0.80, 0.20, 0.90, 0.60]        # mean 0.6 -> 60 %
    w = dynamic_class_weights(ap, top=2)
    # (60 - AP%) / 10 = [1, -2, 4, -3, 0] -> negatives set to 1 -> [1, 1, 4, 1, 0]
    # ranked: 4 (idx 2), then the 1s in index order (0, 1, 3), then 0; top 2 kept: idx 2 and 0
    assert w.tolist() == [1.0, 1.0, 4.0, 1.0, 1.0]
    w3 = dynamic_class_weights([0.5, 0.55, 0.9, 0.95], top=1)   # mean 72.5 -> [2.25, 1.75, 1, 1]
    assert w3.tolist() == pytest.approx([2.25, 1.0, 1.0, 1.0])


def test_dynamic_weights_replace_class_weights():
    x = torch.zeros(1, 17)
    y = torch.zeros(1, 17)
    dyn = np.ones(17)
    dyn[3] = 3.0
    got = Q2LAsymmetricLoss()(x, y, weight_list=dyn).item()
    assert got == pytest.approx(-(0.25 * math.log(0.5) * (16 + 3)) * 1000 / 17, rel=1e-6)


def test_bce_pos_weight_and_loss():
    labels = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [1, 0, 0]])
    w = bce_pos_weight(labels)
    assert w.tolist() == pytest.approx([1 / 3, 0.0, 1.0])     # (4 - 3)/3, no positives -> 0, (4 - 2)/2
    assert bce_pos_weight(np.array([1, 0, 0, 0])).tolist() == pytest.approx([3.0])
    loss = build_loss("bce", labels=labels)
    x = torch.tensor([[0.0, 1.0, -1.0]])
    y = torch.tensor([[1, 0, 1]])
    sp = lambda v: math.log1p(math.exp(-v))  # noqa: E731  -log sigmoid(v)
    expected = ((1 / 3) * sp(0.0) + sp(-1.0) + 1.0 * sp(-1.0)) / 3
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    assert isinstance(loss, BCEWithLogitsPosWeight)


def test_build_loss_unknown():
    from benchmark.errors import SewerbenchError
    with pytest.raises(SewerbenchError):
        build_loss("nope")
    assert isinstance(build_loss("asl"), AsymmetricLoss)
