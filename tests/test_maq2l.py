"""MA-Q2L: parameter counts, ablation cells, equivalence with Q2L, mask tiling."""
from __future__ import annotations

import pytest
import torch

import methods
from methods.maq2l import build_maq2l, set_mask_tiling
from methods.q2l import build_q2l
from methods.transformer import tile_mask

CELLS = [(True, True), (True, False), (False, True), (False, False)]


def _counts(model):
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


@pytest.mark.parametrize("ma,lc,total,trainable", [
    (True, True, 227_157_201, 226_934_801),
    (True, False, 193_578_193, 193_355_793),
    (False, True, 227_122_385, 226_899_985),
    (False, False, 193_543_377, 193_320_977),
])
def test_reference_parameter_counts(ma, lc, total, trainable):
    with torch.device("meta"):
        model = build_maq2l(size="reference", mask_attention=ma, label_correlation=lc, image_size=448)
    assert _counts(model) == (total, trainable)
    assert model.reference_num_params == total
    assert isinstance(model.input_proj, torch.nn.Identity)


def test_reference_state_dict_layout():
    with torch.device("meta"):
        model = build_maq2l(size="reference")
    sd = model.state_dict()
    assert len(sd) == 575 and sum(k.startswith("backbone.0.body.") for k in sd) == 520
    assert sd["backbone.1.pe"].shape == (1, 2048, 14, 14)
    assert sd["transformer.cam_mask.cam.linear.weight"].shape == (17, 2048)
    assert sd["query_embed.weight"].shape == (17, 2048)
    assert sd["fc.W"].shape == (1, 17, 2048) and sd["fc.b"].shape == (1, 17)
    dec = {k.split("layers.0.")[1] for k in sd if k.startswith("transformer.decoder.layers.0.")}
    attn = {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}
    expected = {f"{m}.{p}" for m in ("multihead_attn_sy", "multihead_attn") for p in attn}
    expected |= {f"{m}.{p}" for m in ("linear1", "linear2", "norm2", "norm3", "norm4") for p in ("weight", "bias")}
    assert dec == expected
    enc = {k.split("layers.0.")[1] for k in sd if k.startswith("transformer.encoder.layers.0.")}
    assert enc == {f"self_attn.{p}" for p in attn} | {
        f"{m}.{p}" for m in ("linear1", "linear2", "norm1", "norm2") for p in ("weight", "bias")}
    assert not any(k.startswith("input_proj") for k in sd)


def test_registry_builds_tiny_and_backward():
    torch.manual_seed(0)
    model = methods.build("maq2l", size="tiny")
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 17)
    out.sum().backward()
    assert model.transformer.cam_mask.cam.linear.weight.grad is not None
    assert model.transformer.decoder.layers[0].multihead_attn.in_proj_weight.grad is not None
    assert not model.backbone[0].body.conv1.weight.requires_grad


def test_deterministic_under_seed():
    x = torch.randn(2, 3, 64, 64)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_maq2l(size="tiny").eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


def _shared_models():
    torch.manual_seed(0)
    full = build_maq2l(size="tiny").eval()
    models = {}
    for ma, lc in CELLS:
        m = build_maq2l(size="tiny", mask_attention=ma, label_correlation=lc).eval()
        missing, unexpected = m.load_state_dict(full.state_dict(), strict=False)
        assert not missing
        models[(ma, lc)] = m
    return models


def test_four_cells_build_and_differ():
    models = _shared_models()
    keys = {cell: set(m.state_dict()) for cell, m in models.items()}
    assert any("cam_mask" in k for k in keys[(True, False)])
    assert not any("cam_mask" in k for k in keys[(False, True)])
    assert not any(".multihead_attn." in k or ".norm3." in k for k in keys[(True, False)])
    assert any(".multihead_attn." in k for k in keys[(False, True)])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = {cell: m(x) for cell, m in models.items()}
    cells = list(outs)
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_zero_mask_equals_no_mask_attention():
    models = _shared_models()
    full, no_ma = models[(True, True)], models[(False, True)]
    with torch.no_grad():
        full.transformer.cam_mask.cam.linear.weight.zero_()
        x = torch.randn(2, 3, 64, 64)
        assert torch.equal(full(x), no_ma(x))


def test_mask_is_cam_of_transformer_input():
    torch.manual_seed(0)
    model = build_maq2l(size="tiny").eval()
    src = torch.randn(2, 64, 2, 3)
    w = model.transformer.cam_mask.cam.linear.weight
    cam = model.transformer.cam_mask(src)
    assert cam.shape == (2, 17, 6)
    expected = torch.einsum("kc,bcn->bkn", w, src.flatten(2))
    assert torch.allclose(cam, expected, atol=1e-6)


def test_ma_off_lc_off_equals_q2l():
    torch.manual_seed(0)
    ma = build_maq2l(size="tiny", mask_attention=False, label_correlation=False).eval()
    q2l = build_q2l(size="tiny").eval()
    state = {}
    for k, v in ma.state_dict().items():
        state[k.replace(".multihead_attn_sy.", ".multihead_attn.").replace(".norm4.", ".norm3.")] = v
    q2l.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(ma(x), q2l(x))
    # same in training mode with the same dropout draws
    ma.train(), q2l.train()
    torch.manual_seed(5)
    a = ma(x)
    torch.manual_seed(5)
    b = q2l(x)
    assert torch.equal(a, b)


def test_tile_mask_layout():
    b, heads = 3, 4
    cam = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, 2, 5)
    ref = tile_mask(cam, heads, "reference")
    per = tile_mask(cam, heads, "per_sample")
    assert ref.shape == per.shape == (b * heads, 2, 5)
    for row in range(b * heads):  # attention rows are batch-major: row = sample*heads + head
        assert ref[row, 0, 0].item() == row % b
        assert per[row, 0, 0].item() == row // heads
    with pytest.raises(ValueError):
        tile_mask(cam, heads, "other")


def test_mask_tiling_batch_one_equal_batch_many_differ():
    torch.manual_seed(0)
    model = build_maq2l(size="tiny").eval()
    with torch.no_grad():  # make the masks large so that tiling matters
        model.transformer.cam_mask.cam.linear.weight.mul_(50)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        set_mask_tiling(model, "reference")
        ref1, ref3 = model(x[:1]), model(x)
        set_mask_tiling(model, "per_sample")
        per1, per3 = model(x[:1]), model(x)
        singles = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.equal(ref1, per1)
    assert not torch.allclose(ref3, per3)
    assert torch.allclose(per3, singles, atol=1e-5)  # per_sample: independent of the batch
    with pytest.raises(ValueError):
        set_mask_tiling(model, "nope")
    with pytest.raises(ValueError):
        build_maq2l(size="tiny", mask_tiling="nope")


def test_backbone_norm_and_stem_freezing_options():
    import torch.nn as nn

    from methods.backbones import FrozenBatchNorm2d
    from methods.maq2l import build_maq2l
    from methods.q2l import build_q2l

    for build in (build_maq2l, build_q2l):
        ref = build(size="tiny")
        assert not any(isinstance(m, nn.BatchNorm2d) for m in ref.modules())
        assert any(isinstance(m, FrozenBatchNorm2d) for m in ref.modules())
        frozen = {n for n, p in ref.named_parameters() if not p.requires_grad}
        assert frozen and all(n.startswith("backbone.0.body.") and ".layer2" not in n
                              and ".layer3" not in n and ".layer4" not in n for n in frozen)
        scratch = build(size="tiny", backbone_norm="batch", freeze_stem=False)
        assert any(isinstance(m, nn.BatchNorm2d) for m in scratch.modules())
        assert all(p.requires_grad for p in scratch.parameters())
        # same parameter tensors otherwise (BatchNorm adds affine weights the frozen BN holds as buffers)
        assert set(dict(ref.named_parameters())) < set(dict(scratch.named_parameters()))
    with pytest.raises(ValueError, match="backbone norm"):
        build_maq2l(size="tiny", backbone_norm="group")
