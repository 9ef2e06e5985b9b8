"""Sewer-ML benchmark models and ASL backbones: tiny builds run forward/backward on CPU,
reference builds have the documented parameter counts, KSSNet graph and two-stage hand cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.errors import SewerbenchError
from methods import registry
from methods.kssnet import (KSSNet, LateralFusion, cooccurrence, kssnet_adjacency,
                            kssnet_from_statistics, mlgcn_adjacency, normalize_adjacency)
from methods.two_stage import combine

TORCH_METHODS = ["asl_tresnet_l", "asl_resnet101", "resnet101", "kssnet", "tresnet_m",
                 "tresnet_l", "tresnet_xl", "xie2019", "xie2019_binary", "chen2018_binary",
                 "chen2018", "hassan2019"]


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(name: str, seed: int = 0, **kw):
    spec = registry.get_spec(name)
    torch.manual_seed(seed)
    return registry.build(name, size="tiny", num_classes=1 if spec.binary else 17, **kw)


def _targets(n: int = 40, c: int = 17, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = (rng.random((n, c)) < 0.3).astype(np.int64)
    t[0] = 1  # every class occurs
    return t


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_tiny_forward_backward_deterministic(name):
    spec = registry.get_spec(name)
    kw = {"targets": _targets()} if name == "kssnet" else {}
    model = _tiny(name, **kw)
    assert isinstance(model.reference_num_params, int)
    size = model.input_size
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    model.train()
    out = model(x)
    if name == "chen2018":  # Inception-v3: (logits, aux) in training mode
        logits, aux = out
        assert aux.shape == (2, 17)
        loss = logits.sum() + model.aux_loss_weight * aux.sum()
    else:
        logits = out
        loss = logits.sum()
    assert logits.shape == (2, 1 if spec.binary else 17)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():  # fresh builds (the training step above moved BN statistics)
        a = _tiny(name, **kw).eval()(x)
        b = _tiny(name, **kw).eval()(x)
    assert a.shape == (2, 1 if spec.binary else 17)
    assert torch.equal(a, b)  # same seed, same weights, same logits


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_reference_param_count_matches_constant(name):
    spec = registry.get_spec(name)
    with torch.device("meta"):
        model = registry.build(name, size="reference", num_classes=1 if spec.binary else 17)
    total = sum(p.numel() for p in model.parameters())
    assert total == model.reference_num_params


def test_reference_param_counts_known_values():
    expected = {"resnet101": 42_534_993, "kssnet": 45_287_488, "tresnet_m": 29_374_865,
                "tresnet_l": 53_597_617, "tresnet_xl": 75_824_413, "xie2019": 9_167_889,
                "xie2019_binary": 9_159_681, "chen2018_binary": 735_937,
                "chen2018": 24_391_170, "hassan2019": 57_073_489}
    for name, n in expected.items():
        with torch.device("meta"):
            model = registry.build(name, size="reference")
        assert model.reference_num_params == n, name


def test_xie2019_reference_layout():
    with torch.device("meta"):
        m = registry.build("xie2019")
    convs = [l for l in m.features if isinstance(l, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (64, (11, 11), (1, 1), (5, 5)), (128, (3, 3), (2, 2), (1, 1)),
        (128, (3, 3), (2, 2), (1, 1))]
    fcs = [l for l in m.classifier if isinstance(l, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(8192, 1024), (1024, 512), (512, 17)]
    drops = [l.p for l in m.classifier if isinstance(l, torch.nn.Dropout)]
    assert drops == [0.6, 0.6]


@pytest.mark.parametrize("name", ["xie2019", "xie2019_binary"])
def test_xie2019_init_reference_is_pytorch_default_and_kaiming_is_he_normal(name):
    """``init="reference"`` is PyTorch's default (the same draws as the plain build); ``kaiming``
    gives He-normal weights (sd sqrt(2 / fan_in)) and zero biases, and keeps the signal alive:
    the default's logits hardly vary between images, He's do (the smoke profile's reason)."""
    torch.manual_seed(0)
    plain = registry.build(name, size="tiny")
    torch.manual_seed(0)
    ref = registry.build(name, size="tiny", init="reference")
    for a, b in zip(plain.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    he = registry.build(name, size="tiny", init="kaiming")
    layers = [m for m in he.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 6
    for m in layers:
        fan_in = m.weight[0].numel()
        sd = float(m.weight.detach().std())
        assert abs(sd / (2.0 / fan_in) ** 0.5 - 1) < 0.2, (m, sd)
        assert not m.bias.any()
    x = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        spread_ref = float(ref.eval()(x).std(0).mean())
        spread_he = float(he.eval()(x).std(0).mean())
    assert spread_ref < 0.02 < 0.2 < spread_he


def test_xie2019_init_rejects_unknown():
    with pytest.raises(SewerbenchError, match="xie2019: init must be one of reference, kaiming"):
        registry.build("xie2019", size="tiny", init="xavier")


def test_inception_and_squeezenet_semantics():
    torch.manual_seed(0)
    sq = registry.build("chen2018_binary", size="tiny").eval()
    with torch.no_grad():
        out = sq(torch.randn(3, 3, 64, 64))
    assert (out >= 0).all()  # SqueezeNet ends in ReLU before the pool (as in torchvision)
    with torch.device("meta"):
        inc = registry.build("chen2018")
    assert inc.aux_logits and not inc.transform_input and inc.aux_loss_weight == 0.4


def test_binary_builders_force_one_output():
    with torch.device("meta"):
        m = registry.build("xie2019_binary", num_classes=17)
    assert m.classifier[-1].out_features == 1


def test_pretrained_local_file_and_errors(tmp_path):
    torch.manual_seed(0)
    src = registry.build("resnet101", size="tiny")
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    torch.manual_seed(1)
    dst = registry.build("resnet101", size="tiny", num_classes=5, pretrained=str(path))
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    assert dst.fc.out_features == 5  # head skipped (shape mismatch)
    bad = tmp_path / "bad.pth"
    torch.save({"weights": object()}, bad)
    with pytest.raises(SewerbenchError, match="weights_only"):
        registry.build("resnet101", size="tiny", pretrained=str(bad))
    with pytest.raises(SewerbenchError, match="not found"):
        registry.build("resnet101", size="tiny", pretrained=str(tmp_path / "none.pth"))
    with pytest.raises(SewerbenchError, match="do not fit"):  # tiny weights into the big model
        registry.build("resnet101", size="reference", pretrained=str(path))
    with pytest.raises(SewerbenchError, match="hub weights"):
        registry.build("resnet101", size="tiny", pretrained=True)
    with pytest.raises(SewerbenchError, match="size"):
        registry.build("resnet101", size="huge")


def test_pretrained_hub_failure_says_how_to_supply_a_file(monkeypatch):
    import timm

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    from methods import resnet

    with pytest.raises(SewerbenchError, match="pretrained=<path"):
        resnet.hub_state_dict("resnet101.tv_in1k", "resnet101")


# ----------------------------------------------------------------------------- KSSNet graph

def test_kssnet_adjacency_hand_case():
    t = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]])
    adj, counts = cooccurrence(t)
    np.testing.assert_array_equal(counts, [3, 2, 2])
    np.testing.assert_array_equal(adj, [[0, 2, 1], [2, 0, 1], [1, 1, 0]])
    # P(j|i): [[0, 2/3, 1/3], [1, 0, 1/2], [1/2, 1/2, 0]] -> binary at 0.4
    reweighted, binary = mlgcn_adjacency(adj, counts)
    np.testing.assert_array_equal(binary, [[0, 1, 0], [1, 0, 1], [1, 1, 0]])
    a, b = 0.2 / (2 + 1e-6), 0.2 / (1 + 1e-6)  # column sums of the binary matrix: 2, 2, 1
    A = np.array([[0.8, a, 0.0], [a, 0.8, b], [a, a, 0.8]])
    np.testing.assert_allclose(reweighted, A)
    d = A.sum(1)
    S = A / np.sqrt(np.outer(d, d))
    expected = 0.4 * S + 0.6 * np.eye(3)  # no entry of S is below tau = 0.02
    np.testing.assert_allclose(kssnet_adjacency(t, lam=0.4, tau=0.02, eta=0.4), expected)


def test_kssnet_threshold_and_normalisation():
    stat = np.array([[1.0, 0.01], [0.01, 1.0]])
    out = kssnet_from_statistics(stat, None, lam=0.4, tau=0.02, eta=0.4)
    # row sums 1.01: S = stat / 1.01; off-diagonal 0.0099 < 0.02 -> 0
    np.testing.assert_allclose(out, np.diag([0.4 / 1.01 + 0.6] * 2))
    n = normalize_adjacency(np.array([[1.0, 1.0], [0.0, 4.0]]))
    np.testing.assert_allclose(n, [[1 / 2, 1 / np.sqrt(2 * 4)], [0.0, 4 / 4]])  # row sums 2, 4
    # a label that never occurs gives a zero row instead of NaN
    r, _ = mlgcn_adjacency(np.zeros((2, 2)), np.array([0, 3]))
    assert np.isfinite(r).all()


def test_lateral_fusion_matches_reference_transposes():
    torch.manual_seed(0)
    fuse = LateralFusion(num_classes=5, channels=8)
    x = torch.randn(2, 8, 3, 4)
    g = torch.randn(5, 8)
    # the Sewer-ML ConvGraphCombination, step by step
    f = x.transpose(1, 2).transpose(2, 3).contiguous().view(-1, 8)
    f = f @ torch.tanh(g.transpose(0, 1))
    f = f.view(2, 3, 4, -1).transpose(2, 3).transpose(1, 2)
    ref = fuse.merge_conv(f) + x
    torch.testing.assert_close(fuse(x, g), ref)


def test_kssnet_graph_buffer_and_sources():
    t = _targets(c=17)
    torch.manual_seed(0)
    m = registry.build("kssnet", size="tiny", targets=t)
    expected = normalize_adjacency(kssnet_adjacency(t))
    np.testing.assert_allclose(m.adj.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert "adj" in m.state_dict() and m.adjacency_source == "training labels"
    adj, counts = cooccurrence(t)
    m2 = registry.build("kssnet", size="tiny", cooccurrence_counts=adj, label_counts=counts)
    torch.testing.assert_close(m2.adj, m.adj)
    m3 = registry.build("kssnet", size="tiny", adjacency=kssnet_adjacency(t))
    torch.testing.assert_close(m3.adj, m.adj)
    assert registry.build("kssnet", size="tiny").adjacency_source.startswith("identity")
    with pytest.raises(SewerbenchError):
        KSSNet(torch.nn.Identity(), 3, np.eye(4), np.eye(3))


# ----------------------------------------------------------------------------- two-stage

def test_two_stage_replace_hand_case():
    p = np.array([0.2, 0.5, 0.9, 0.49])
    q = np.array([[0.1, 0.8], [0.3, 0.4], [0.6, 0.05], [0.7, 0.7]])
    out = combine(p, q, "replace")
    np.testing.assert_array_equal(out, [[0.2, 0.2], [0.3, 0.4], [0.6, 0.05], [0.49, 0.49]])
    np.testing.assert_array_equal(combine(p[:, None], q), out)  # (N, 1) accepted, replace default


def test_two_stage_multiply_and_errors():
    p = np.array([0.5, 0.1])
    q = np.array([[0.2, 1.0], [0.5, 0.0]])
    np.testing.assert_allclose(combine(p, q, "multiply"), [[0.1, 0.5], [0.05, 0.0]])
    with pytest.raises(SewerbenchError, match="mode"):
        combine(p, q, "max")
    with pytest.raises(SewerbenchError, match="stage-2"):
        combine(p, q[:1])
    with pytest.raises(SewerbenchError, match="stage-1"):
        combine(np.ones((2, 2)), q)


def test_kssnet_state_dict_uses_reference_names():
    with torch.device("meta"):
        keys = set(registry.build("kssnet").state_dict())
    for k in ("gc1.weight", "gc4.weight", "convgcn1.merge_conv.weight",
              "convgcn3.merge_conv.weight", "adj", "word_embeddings",
              "backbone.layer4.2.conv3.weight"):
        assert k in keys
    assert not any(k.startswith(("backbone.fc", "convgcn4")) for k in keys)


def test_tresnet_local_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    src = registry.build("tresnet_m", size="tiny")
    torch.save(src.state_dict(), tmp_path / "t.pth")
    dst = registry.build("tresnet_m", size="tiny", num_classes=3,
                         pretrained=str(tmp_path / "t.pth"))
    torch.testing.assert_close(dst.body.conv1.conv.weight, src.body.conv1.conv.weight)
    assert dst.head.fc.out_features == 3
