"""Query2Label: parameter counts, tiny forward/backward, determinism, position embedding."""
from __future__ import annotations

import math

import pytest
import torch

import methods
from methods.backbones import FrozenBatchNorm2d, ResNetBackbone
from methods.q2l import build_q2l, reference_param_count
from methods.transformer import PositionEmbeddingSine, sine_position_embedding


def _counts(model):
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def test_reference_parameter_count():
    with torch.device("meta"):
        model = build_q2l(size="reference")
    assert _counts(model) == (193_543_377, 193_320_977)
    assert model.reference_num_params == 193_543_377
    assert isinstance(model.input_proj, torch.nn.Identity)
    assert model.backbone[1].pe.shape == (1, 2048, 14, 14)
    # the decoder keeps no self-attention by default
    keys = {k.split("layers.0.")[1].split(".")[0] for k in model.state_dict()
            if k.startswith("transformer.decoder.layers.0.")}
    assert keys == {"multihead_attn", "linear1", "linear2", "norm2", "norm3"}


def test_reference_count_with_decoder_self_attn():
    with torch.device("meta"):
        model = build_q2l(size="reference", decoder_self_attn=True)
    assert _counts(model)[0] == model.reference_num_params == reference_param_count(q2l_decoder_self_attn=True)


def test_tiny_forward_backward_and_frozen_parts():
    torch.manual_seed(0)
    model = methods.build("q2l", size="tiny")
    model.train()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 17)
    logits.sum().backward()
    body = model.backbone[0].body
    assert not body.conv1.weight.requires_grad
    assert all(not p.requires_grad for p in body.layer1.parameters())
    for name in ("layer2", "layer3", "layer4"):
        params = list(getattr(body, name).parameters())
        assert params and all(p.requires_grad and p.grad is not None for p in params)
    # every norm of the backbone is frozen (buffers only)
    bns = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert bns and all(not list(m.parameters()) for m in bns)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert isinstance(model.input_proj, torch.nn.Conv2d)  # hidden 64 != 256 channels
    assert model.fc.W.grad is not None and model.query_embed.weight.grad is not None


def test_deterministic_under_seed():
    x = torch.randn(2, 3, 64, 64)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_q2l(size="tiny").eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("hw", [(64, 64), (64, 96), (96, 64), (128, 32), (32, 32)])
def test_any_input_size_divisible_by_32(hw):
    torch.manual_seed(0)
    model = build_q2l(size="tiny").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *hw)).shape == (1, 17)


def test_position_embedding_values():
    pe = sine_position_embedding(2, 3, num_pos_feats=4)
    assert pe.shape == (1, 8, 2, 3)
    scale = 2 * math.pi
    # y features first: channel 0 = sin(y_norm / 10000^0), channel 1 = cos(y_norm / 10000^0),
    # channel 2 = sin(y_norm / 10000^(2/4)); then x features in channels 4..7
    y1 = 1 / (2 + 1e-6) * scale
    x2 = 2 / (3 + 1e-6) * scale
    assert pe[0, 0, 0, 1].item() == pytest.approx(math.sin(y1), abs=1e-6)
    assert pe[0, 1, 0, 0].item() == pytest.approx(math.cos(y1), abs=1e-6)
    assert pe[0, 2, 1, 0].item() == pytest.approx(math.sin(scale * 2 / (2 + 1e-6) / 100.0), abs=1e-6)
    assert pe[0, 4, 0, 1].item() == pytest.approx(math.sin(x2), abs=1e-6)
    assert pe[0, 7, 1, 2].item() == pytest.approx(math.cos(scale * 3 / (3 + 1e-6) / 100.0), abs=1e-6)


def test_position_embedding_buffer_and_other_sizes():
    module = PositionEmbeddingSine(8, (2, 2))
    assert module.pe.shape == (1, 16, 2, 2)
    feat = torch.zeros(3, 5, 2, 2)
    assert torch.equal(module(feat), module.pe.expand(3, -1, -1, -1))
    other = module(torch.zeros(2, 5, 3, 4))
    assert other.shape == (2, 16, 3, 4)
    assert torch.equal(other[0:1], sine_position_embedding(3, 4, 8))
    assert module(torch.zeros(1, 5, 2, 2, dtype=torch.float16)).dtype == torch.float16


def test_bad_image_size_and_options():
    with pytest.raises(ValueError):
        build_q2l(size="tiny", image_size=100)
    with pytest.raises(TypeError):
        build_q2l(size="tiny", not_an_option=1)
    with pytest.raises(ValueError):
        build_q2l(size="huge")


def test_backbone_reference_layout_matches_torchvision():
    import torchvision
    with torch.device("meta"):
        ours = ResNetBackbone("reference").body
        tv = torchvision.models.resnet101(weights=None)
    tv_shapes = {k: v.shape for k, v in tv.state_dict().items()
                 if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == tv_shapes


def test_backbone_output_stride_reference_32_tiny_8():
    """The reference trunk strides every stage (14 x 14 at 448 px); the tiny one dilates layer3 and
    layer4 as torchvision's replace_stride_with_dilation, so 64 px gives 8 x 8, not 2 x 2."""
    import torchvision
    with torch.device("meta"):
        ref = ResNetBackbone("reference")
        tv = torchvision.models.resnet101(weights=None)
    assert ref.output_stride == 32
    for name in ("layer2", "layer3", "layer4"):
        ours, theirs = getattr(ref.body, name), getattr(tv, name)
        for a, b in zip(ours, theirs):
            assert (a.conv2.stride, a.conv2.dilation, a.conv2.padding) == \
                (b.conv2.stride, b.conv2.dilation, b.conv2.padding)
    tiny = ResNetBackbone("tiny", norm="batch", freeze_stem=False)
    assert tiny.output_stride == 8
    assert tiny.body.layer2[0].conv2.stride == (2, 2) and tiny.body.layer2[0].conv2.dilation == (1, 1)
    assert tiny.body.layer3[0].conv2.stride == (1, 1) and tiny.body.layer3[0].conv2.dilation == (1, 1)
    assert tiny.body.layer4[0].conv2.stride == (1, 1) and tiny.body.layer4[0].conv2.dilation == (2, 2)
    assert tiny.body.layer4[0].downsample[0].stride == (1, 1)
    with torch.no_grad():
        assert tiny(torch.rand(1, 3, 64, 64)).shape[-2:] == (8, 8)
        assert tiny(torch.rand(1, 3, 96, 96)).shape[-2:] == (12, 12)
    q = build_q2l(size="tiny", image_size=64)
    assert q.backbone[1].pe.shape[-2:] == (8, 8)     # the stored pe matches the 8 x 8 map


def test_pretrained_local_file(tmp_path):
    torch.manual_seed(0)
    src = ResNetBackbone("reference")
    state = {f"module.{k}": v for k, v in src.body.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["bn1.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "r101.pth"
    torch.save(state, path)
    loaded = ResNetBackbone("reference", pretrained=str(path))
    assert torch.equal(loaded.body.layer4[2].conv3.weight, src.body.layer4[2].conv3.weight)
    assert not loaded.body.conv1.weight.requires_grad


def test_pretrained_missing_file_is_a_clear_error(tmp_path):
    from benchmark.errors import SewerbenchError
    with pytest.raises(SewerbenchError, match="not found"):
        ResNetBackbone("reference", pretrained=str(tmp_path / "nope.pth"))
