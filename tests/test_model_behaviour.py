"""Behaviour of every tiny model beyond output shapes: in eval mode each sample's logits depend
on that sample only (batch of 3 = three batches of 1, and a permuted batch permutes the
logits), different images give different logits, training gradients reach the trainable
parameters, and Query2Label's head is the group-wise linear map of the decoder output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from methods import registry

METHODS = ["asl_tresnet_l", "asl_resnet101", "resnet101", "kssnet", "tresnet_m", "tresnet_l",
           "tresnet_xl", "xie2019", "xie2019_binary", "chen2018_binary", "chen2018", "hassan2019",
           "q2l", "maq2l"]


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build(name):
    spec = registry.get_spec(name)
    kw = {}
    if name == "kssnet":
        t = (np.random.default_rng(0).random((40, 17)) < 0.3).astype(np.int64)
        t[0] = 1
        kw["targets"] = t
    if name == "maq2l":
        kw["mask_tiling"] = "per_sample"    # the reference tiling mixes samples (documented)
    torch.manual_seed(0)
    return registry.build(name, size="tiny", num_classes=1 if spec.binary else 17, **kw)


def _size(model):
    return getattr(model, "input_size", None) or 64


@pytest.mark.parametrize("name", METHODS)
def test_eval_logits_are_per_sample_and_input_dependent(name):
    model = _build(name).eval()
    size = _size(model)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batch = model(x)
        singles = torch.cat([model(x[i:i + 1]) for i in range(3)])
        perm = model(x[[2, 0, 1]])
    torch.testing.assert_close(batch, singles, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(perm, batch[[2, 0, 1]], rtol=1e-4, atol=1e-5)
    assert torch.isfinite(batch).all()
    # three different images: three different logit vectors (SqueezeNet's ReLU after its
    # final conv gives all-zero logits at this random init, as torchvision's does)
    if name != "chen2018_binary":
        assert not torch.equal(batch[0], batch[1]) and not torch.equal(batch[1], batch[2])


@pytest.mark.parametrize("name", METHODS)
def test_training_gradients_reach_the_trainable_parameters(name):
    model = _build(name).train()
    size = _size(model)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    y = torch.zeros_like(logits)
    y[0, 0] = 1
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    if isinstance(out, tuple):
        loss = loss + 0.4 * torch.nn.functional.binary_cross_entropy_with_logits(out[1], y)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing[:5]
    # the first (stem) and the last (head) trainable tensors learn; TResNet's zero-initialised
    # residual BatchNorm legitimately blocks the branch gradients at init
    assert trainable[0][1].grad.abs().sum() > 0, trainable[0][0]
    assert trainable[-1][1].grad.abs().sum() > 0, trainable[-1][0]


@pytest.mark.parametrize("name", ["q2l", "maq2l"])
def test_q2l_head_is_group_wise_linear_of_the_decoder_output(name):
    model = _build(name).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    seen = {}

    def keep(module, args, output):
        seen["hs"] = output

    h = model.transformer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        h.remove()
    hs = seen["hs"]
    assert hs.shape == (2, 17, model.transformer.d_model)
    w, b = model.fc.W[0], model.fc.b[0]
    want = torch.stack([torch.stack([hs[i, k] @ w[k] + b[k] for k in range(17)]) for i in range(2)])
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-6)
