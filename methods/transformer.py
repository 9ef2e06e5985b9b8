"""Transformer parts shared by Query2Label and MA-Q2L (DETR style, post-norm).

Module and attribute names follow the reference implementations (SlongLiu/query2labels and
shengyu27/MA-Q2L) so their released state dicts load without renaming:
``encoder.layers.N.{self_attn,linear1,linear2,norm1,norm2}``, Q2L decoder layers
``{multihead_attn,linear1,linear2,norm2,norm3}``, MA-Q2L decoder layers
``{multihead_attn_sy,multihead_attn,linear1,linear2,norm2,norm3,norm4}``, ``decoder.norm``
and ``cam_mask.cam.linear``. Every attention is ``nn.MultiheadAttention`` (sequence-first),
called on its explicit-softmax path (``need_weights=True``) as the references are.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_TILINGS = ("reference", "per_sample")


# --------------------------------------------------------------------------- position

def sine_position_embedding(height: int, width: int, num_pos_feats: int, temperature: float = 10000.0,
                            scale: float = 2 * math.pi, device=None) -> torch.Tensor:
    """DETR sine embedding, normalised to (0, scale], y features then x: (1, 2*npf, H, W) float32."""
    ones = torch.ones((1, height, width), dtype=torch.float32, device=device)
    y = ones.cumsum(1, dtype=torch.float32)
    x = ones.cumsum(2, dtype=torch.float32)
    eps = 1e-6  # as the references
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    px = x[:, :, :, None] / dim_t
    py = y[:, :, :, None] / dim_t
    px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingSine(nn.Module):
    """Sine position embedding for any feature-map size.

    Keeps the reference's ``pe`` buffer (shape (1, 2*npf, h, w) for the configured image
    size, state-dict key ``backbone.1.pe``) and uses it when the feature map has that size;
    other sizes are computed on the fly and cached. A checkpoint's ``pe`` of any size is
    accepted on load (it replaces the buffer).
    """

    def __init__(self, num_pos_feats: int, feature_size: tuple[int, int], temperature: float = 10000.0,
                 scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale
        self.register_buffer("pe", sine_position_embedding(*feature_size, num_pos_feats, temperature, scale))
        self._cache: dict = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        key = prefix + "pe"
        if key in state_dict and state_dict[key].shape != self.pe.shape:
            other = state_dict[key]
            if other.dim() == 4 and other.shape[:2] == self.pe.shape[:2]:
                self.pe = torch.empty_like(other, device=self.pe.device, dtype=self.pe.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.pe.shape[-2:] == (h, w):
            pe = self.pe
        else:
            key = (h, w, x.device)
            pe = self._cache.get(key)
            if pe is None:
                pe = sine_position_embedding(h, w, self.num_pos_feats, self.temperature, self.scale,
                                             device=x.device)
                self._cache = {key: pe}  # one size at a time is enough
        return pe.to(x.dtype).expand(x.shape[0], -1, -1, -1)


# --------------------------------------------------------------------------- layers

def _with_pos(t: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return t if pos is None else t + pos


def _attn(module: nn.MultiheadAttention, q, k, v, mask=None) -> torch.Tensor:
    if mask is not None:
        mask = mask.to(q.dtype)
    return module(q, k, v, attn_mask=mask, need_weights=True)[0]


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: self-attention with pos added to q and k, then ReLU FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src, pos=None):
        q = k = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(_attn(self.self_attn, q, k, src)))
        src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class Q2LDecoderLayer(nn.Module):
    """Query2Label decoder layer: [self-attn (removed by default)], cross-attn, FFN; post-norm."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1,
                 self_attn: bool = False):
        super().__init__()
        if self_attn:
            self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
            self.norm1 = nn.LayerNorm(d_model)
            self.dropout1 = nn.Dropout(dropout)
        self.has_self_attn = self_attn
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, memory, pos=None, query_pos=None, mask=None):
        if self.has_self_attn:
            q = k = _with_pos(tgt, query_pos)
            tgt = self.norm1(tgt + self.dropout1(_attn(self.self_attn, q, k, tgt)))
        tgt2 = _attn(self.multihead_attn, _with_pos(tgt, query_pos), _with_pos(memory, pos), memory, mask)
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class MADecoderLayer(nn.Module):
    """MA-Q2L decoder layer.

    tgt = norm2(tgt + drop(cross-attn with the additive class-activation mask));
    tgt = norm3(tgt + drop(label self-attn, q = k = tgt + query_pos, v = tgt))   [label correlation];
    tgt = norm4(tgt + drop(FFN)).
    Without a mask the cross-attention is plain; without label correlation its modules do not exist.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1,
                 label_correlation: bool = True):
        super().__init__()
        self.multihead_attn_sy = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.label_correlation = label_correlation
        if label_correlation:
            self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
            self.norm3 = nn.LayerNorm(d_model)
            self.dropout3 = nn.Dropout(dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout4 = nn.Dropout(dropout)

    def forward(self, tgt, memory, pos=None, query_pos=None, mask=None):
        tgt2 = _attn(self.multihead_attn_sy, _with_pos(tgt, query_pos), _with_pos(memory, pos), memory, mask)
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        if self.label_correlation:
            q = k = _with_pos(tgt, query_pos)
            tgt = self.norm3(tgt + self.dropout3(_attn(self.multihead_attn, q, k, tgt)))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm4(tgt + self.dropout4(tgt2))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])

    def forward(self, src, pos=None):
        for layer in self.layers:
            src = layer(src, pos=pos)
        return src


class TransformerDecoder(nn.Module):
    """Stack of decoder layers and a final LayerNorm; the same mask goes to every layer."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos=None, query_pos=None, mask=None):
        for layer in self.layers:
            tgt = layer(tgt, memory, pos=pos, query_pos=query_pos, mask=mask)
        return self.norm(tgt)


# --------------------------------------------------------------------------- mask attention

class CAM(nn.Module):
    """Holds the bias-free class-activation projection (key ``cam_mask.cam.linear.weight``)."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, num_classes, bias=False)


class CAMMask(nn.Module):
    """Class activation maps M = W f at every position: (B, C, H, W) -> (B, K, HW), raw."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.cam = CAM(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        feature = x.reshape(b, c, h * w).permute(0, 2, 1)             # (B, HW, C)
        return torch.matmul(feature, self.cam.linear.weight.t()).permute(0, 2, 1)


def tile_mask(cam: torch.Tensor, num_heads: int, tiling: str) -> torch.Tensor:
    """Tile (B, K, HW) maps to the (B*heads, K, HW) additive mask of nn.MultiheadAttention.

    Attention rows are batch-major (row ``b*heads + h``). ``reference`` repeats the maps
    head-major (``repeat(heads, 1, 1)``) as the MA-Q2L code does, so row ``b*heads + h``
    receives sample ``(b*heads + h) mod B``'s maps: with B > 1 a sample's heads see other
    samples' maps. ``per_sample`` repeats each sample's maps for its own heads. Both agree at B = 1.
    """
    if tiling == "reference":
        return cam.repeat(num_heads, 1, 1)
    if tiling == "per_sample":
        return cam.repeat_interleave(num_heads, dim=0)
    raise ValueError(f"mask_tiling must be one of {MASK_TILINGS}, not {tiling!r}")


# --------------------------------------------------------------------------- transformers

class Q2LTransformer(nn.Module):
    """Encoder + decoder of Query2Label; tgt starts at zero, label queries are query_pos."""

    def __init__(self, d_model: int = 2048, nhead: int = 4, num_encoder_layers: int = 1,
                 num_decoder_layers: int = 2, dim_feedforward: int = 8192, dropout: float = 0.1,
                 decoder_self_attn: bool = False):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers)
        self.decoder = TransformerDecoder(
            self._decoder_layer(d_model, nhead, dim_feedforward, dropout, decoder_self_attn),
            num_decoder_layers, d_model)
        self._reset_parameters()

    def _decoder_layer(self, d_model, nhead, dim_feedforward, dropout, extra):
        return Q2LDecoderLayer(d_model, nhead, dim_feedforward, dropout, self_attn=extra)

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def cross_attention_mask(self, src: torch.Tensor) -> torch.Tensor | None:
        return None

    def forward(self, src: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """src, pos: (B, C, H, W); query_embed: (K, C). Returns decoder output (B, K, C)."""
        mask = self.cross_attention_mask(src)
        b = src.shape[0]
        src_seq = src.flatten(2).permute(2, 0, 1)                 # (HW, B, C)
        pos_seq = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, b, 1)     # (K, B, C)
        memory = self.encoder(src_seq, pos=pos_seq)
        tgt = torch.zeros_like(query_pos)
        hs = self.decoder(tgt, memory, pos=pos_seq, query_pos=query_pos, mask=mask)
        return hs.transpose(0, 1)


class MAQ2LTransformer(Q2LTransformer):
    """MA-Q2L transformer: CAM mask added to every decoder cross-attention, label self-attention."""

    def __init__(self, d_model: int = 2048, nhead: int = 4, num_encoder_layers: int = 1,
                 num_decoder_layers: int = 2, dim_feedforward: int = 8192, dropout: float = 0.1,
                 num_classes: int = 17, mask_attention: bool = True, label_correlation: bool = True,
                 mask_tiling: str = "reference"):
        super().__init__(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
                         dropout, decoder_self_attn=label_correlation)
        self.mask_attention = mask_attention
        self.label_correlation = label_correlation
        if mask_tiling not in MASK_TILINGS:
            raise ValueError(f"mask_tiling must be one of {MASK_TILINGS}, not {mask_tiling!r}")
        self.mask_tiling = mask_tiling
        if mask_attention:  # created after the xavier reset, as in the reference
            self.cam_mask = CAMMask(num_classes, d_model)

    def _decoder_layer(self, d_model, nhead, dim_feedforward, dropout, extra):
        return MADecoderLayer(d_model, nhead, dim_feedforward, dropout, label_correlation=extra)

    def cross_attention_mask(self, src: torch.Tensor) -> torch.Tensor | None:
        if not self.mask_attention:
            return None
        return tile_mask(self.cam_mask(src), self.nhead, self.mask_tiling)
