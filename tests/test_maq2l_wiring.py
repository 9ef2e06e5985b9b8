"""MA-Q2L wiring, checked against an independent forward pass and attention-mask hooks.

REFERENCE.md section 3: the class activation maps M = W f (bias-free, raw, at every position
of the transformer input) are added to the pre-softmax logits of *every* decoder
cross-attention (same M in both layers and all heads; reference tiling head-major), the
label self-attention follows the cross-attention in each layer (q = k = tgt + query_pos,
v = tgt), post-norm order norm2 -> norm3 -> norm4, a final decoder LayerNorm and the
group-wise linear head. The forward below is written from those facts with plain tensor
algebra (only the CNN backbone and the position embedding are taken from the model).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.maq2l import build_maq2l


def _ln(x, mod):
    return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, mod.eps)


def _mha(mod, q, k, v, mask=None):
    """nn.MultiheadAttention by hand. q: (L, B, C), k/v: (S, B, C); mask(b, h) -> (L, S) or None."""
    c = q.shape[-1]
    h = mod.num_heads
    d = c // h
    wq, wk, wv = mod.in_proj_weight.split(c)
    bq, bk, bv = mod.in_proj_bias.split(c)
    out = torch.empty_like(q)
    for b in range(q.shape[1]):
        qb, kb, vb = q[:, b] @ wq.T + bq, k[:, b] @ wk.T + bk, v[:, b] @ wv.T + bv
        heads = []
        for i in range(h):
            sl = slice(i * d, (i + 1) * d)
            logits = (qb[:, sl] / math.sqrt(d)) @ kb[:, sl].T
            if mask is not None:
                logits = logits + mask(b, i)
            heads.append(torch.softmax(logits, dim=-1) @ vb[:, sl])
        out[:, b] = torch.cat(heads, dim=-1) @ mod.out_proj.weight.T + mod.out_proj.bias
    return out


def _ffn(layer, x):
    return F.linear(F.relu(F.linear(x, layer.linear1.weight, layer.linear1.bias)),
                    layer.linear2.weight, layer.linear2.bias)


def hand_forward(model, x, tiling="reference"):
    src, pos = model.backbone(x)
    src = model.input_proj(src)
    b, c, hh, ww = src.shape
    t = model.transformer
    heads = t.nhead
    seq = src.flatten(2).permute(2, 0, 1)             # (HW, B, C)
    pseq = pos.flatten(2).permute(2, 0, 1)
    for layer in t.encoder.layers:
        qk = seq + pseq
        seq = _ln(seq + _mha(layer.self_attn, qk, qk, seq), layer.norm1)
        seq = _ln(seq + _ffn(layer, seq), layer.norm2)
    memory = seq
    mask = None
    if t.mask_attention:
        w = t.cam_mask.cam.linear.weight                # (K, C)
        cam = torch.einsum("kc,bcn->bkn", w, src.flatten(2))   # raw maps (B, K, HW)
        if tiling == "reference":   # attention row b*heads + i gets sample (b*heads + i) mod B
            mask = lambda bb, i: cam[(bb * heads + i) % b]          # noqa: E731
        else:
            mask = lambda bb, i: cam[bb]                              # noqa: E731
    qpos = model.query_embed.weight.unsqueeze(1).expand(-1, b, -1)
    tgt = torch.zeros_like(qpos)
    for layer in t.decoder.layers:
        tgt = _ln(tgt + _mha(layer.multihead_attn_sy, tgt + qpos, memory + pseq, memory, mask),
                  layer.norm2)
        if t.label_correlation:
            qk = tgt + qpos
            tgt = _ln(tgt + _mha(layer.multihead_attn, qk, qk, tgt), layer.norm3)
        tgt = _ln(tgt + _ffn(layer, tgt), layer.norm4)
    hs = _ln(tgt, t.decoder.norm).transpose(0, 1)     # (B, K, C)
    return (model.fc.W * hs).sum(-1) + model.fc.b


def _model(ma=True, lc=True, seed=0):
    torch.manual_seed(seed)
    model = build_maq2l(size="tiny", mask_attention=ma, label_correlation=lc).double().eval()
    if ma:
        with torch.no_grad():  # strong maps, so the mask dominates the attention logits
            model.transformer.cam_mask.cam.linear.weight.mul_(4.0)
    return model


@pytest.mark.parametrize("ma,lc,tiling", [(True, True, "reference"), (True, True, "per_sample"),
                                           (True, False, "reference"), (False, True, "reference"),
                                           (False, False, "reference")])
def test_forward_equals_hand_built_two_layer_forward(ma, lc, tiling):
    model = _model(ma, lc)
    model.transformer.mask_tiling = tiling
    assert len(model.transformer.decoder.layers) == 2
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        want = hand_forward(model, x, tiling)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_mask_changes_every_layer_not_only_the_first():
    """The mask must matter in layer 2 too: a forward with the mask only in layer 1 differs."""
    model = _model()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layers = model.transformer.decoder.layers
    with torch.no_grad():
        full = model(x)
        orig = layers[1].forward
        layers[1].forward = lambda *a, **kw: orig(*a, **{**kw, "mask": None})
        try:
            first_only = model(x)
        finally:
            del layers[1].forward
        assert torch.equal(model(x), full)
    assert (full - first_only).abs().max() > 1e-3


def _capture_masks(model):
    """Forward pre-hooks recording the attn_mask each attention receives."""
    seen: dict[str, list] = {}
    handles = []
    for name, mod in model.transformer.named_modules():
        if isinstance(mod, torch.nn.MultiheadAttention):
            def hook(m, args, kwargs, name=name):
                seen.setdefault(name, []).append(kwargs.get("attn_mask"))
            handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


@pytest.mark.parametrize("tiling", ["reference", "per_sample"])
def test_every_decoder_cross_attention_gets_the_same_raw_cam_mask(tiling):
    model = _model()
    model.transformer.mask_tiling = tiling
    heads = model.transformer.nhead
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    seen, handles = _capture_masks(model)
    src = {}

    def keep_input(module, args):
        src["x"] = args[0]

    h2 = model.transformer.register_forward_pre_hook(keep_input)
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles + [h2]:
            h.remove()
    w = model.transformer.cam_mask.cam.linear.weight
    cam = torch.einsum("kc,bcn->bkn", w, src["x"].flatten(2))        # (B, K, HW), no sigmoid
    b = cam.shape[0]
    rows = [(r % b) if tiling == "reference" else (r // heads) for r in range(b * heads)]
    expected = torch.stack([cam[i] for i in rows])
    cross = [f"decoder.layers.{i}.multihead_attn_sy" for i in range(2)]
    for name in cross:
        assert len(seen[name]) == 1 and seen[name][0] is not None, name
        torch.testing.assert_close(seen[name][0].to(expected.dtype), expected, rtol=0, atol=1e-12)
    # no other attention is masked (encoder self-attention, label self-attention)
    others = [n for n in seen if n not in cross]
    assert sorted(others) == ["decoder.layers.0.multihead_attn", "decoder.layers.1.multihead_attn",
                              "encoder.layers.0.self_attn"]
    assert all(m is None for n in others for m in seen[n])
