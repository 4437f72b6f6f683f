"""WavLM encoder, inference only, under the published parameter names.

Implements the WavLM model of Chen et al., "WavLM: Large-Scale Self-Supervised
Pre-Training for Full Stack Speech Processing" (arXiv 2110.13900), as s3prl's
``s3prl/upstream/wavlm/WavLM.py`` defines it and as the speaker-verification
checkpoint ``wavlm_large_finetune.pth`` stores it under ``feature_extract.model.*``
(MODEL.md §8). Talker-T2AV uses it only to feed the ECAPA-TDNN speaker encoder.

Pieces (module names are the published ones):

- ``feature_extractor.conv_layers.N``: strided 1-D convolutions over the waveform,
  each followed by a channel layer norm (``extractor_mode="layer_norm"``) or, in
  the first block only, a group norm with one group per channel (``"default"``),
  then GELU.
- ``layer_norm`` over the extracted features, ``post_extract_proj`` to the encoder
  width (absent when the widths agree).
- ``encoder.pos_conv.0``: a grouped, weight-normalised convolution (``weight_g``,
  ``weight_v``; norm over every dimension but the kernel axis) whose GELU output
  is added to its input.
- ``encoder.layers.N``: pre-norm transformer layers. Attention logits receive a
  relative position bias: bucketed relative distances looked up in layer 0's
  ``self_attn.relative_attention_bias`` and shared by every layer; with
  ``gru_rel_pos`` each layer rescales it per head and query position by a gate
  computed from its (normalised) input through ``grep_linear`` and ``grep_a``.
- ``encoder.layer_norm`` on the encoder output.

Legend: B batch, N waveform samples (16 kHz), T frames (50 Hz), C extractor
channels, D encoder width, H heads, K head width (D/H), L encoder layers.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "WavLMConfig",
    "WavLM",
    "parse_conv_layers",
    "format_conv_layers",
    "relative_position_buckets",
]

log = logging.getLogger(__name__)

ConvSpec = tuple[int, int, int]  # (output channels, kernel, stride)


# --------------------------------------------------------------------------- #
# conv_feature_layers: "[(dim,k,s)] + [(dim,k,s)] * n" without eval
# --------------------------------------------------------------------------- #

_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


def parse_conv_layers(text: str) -> tuple[ConvSpec, ...]:
    """Parse the published ``conv_feature_layers`` string into (dim, kernel, stride) triples.

    Accepts a sum of bracketed lists of integer triples, each list optionally
    repeated with ``* n``, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``.
    Nothing is evaluated; anything else raises ``ValueError``.
    """
    tokens: list[str] = []
    for number, symbol in _TOKEN.findall(text):
        if number:
            tokens.append(number)
        elif symbol and not symbol.isspace():
            if symbol not in "[](),+*":
                raise ValueError(f"conv_feature_layers {text!r}: unexpected character {symbol!r}")
            tokens.append(symbol)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = peek()
        if tok is None or (expected is not None and tok != expected):
            want = repr(expected) if expected else "more input"
            raise ValueError(f"conv_feature_layers {text!r}: expected {want} at token {pos}, got {tok!r}")
        pos += 1
        return tok

    def integer() -> int:
        tok = take()
        if not tok.isdigit():
            raise ValueError(f"conv_feature_layers {text!r}: expected an integer, got {tok!r}")
        return int(tok)

    def triple() -> ConvSpec:
        take("(")
        values = [integer()]
        while peek() == ",":
            take(",")
            if peek() == ")":
                break
            values.append(integer())
        take(")")
        if len(values) != 3:
            raise ValueError(f"conv_feature_layers {text!r}: each layer needs (dim, kernel, stride), got {values}")
        return values[0], values[1], values[2]

    def term() -> list[ConvSpec]:
        take("[")
        items = [triple()]
        while peek() == ",":
            take(",")
            if peek() == "]":
                break
            items.append(triple())
        take("]")
        if peek() == "*":
            take("*")
            items = items * integer()
        return items

    layers = term()
    while peek() == "+":
        take("+")
        layers += term()
    if peek() is not None:
        raise ValueError(f"conv_feature_layers {text!r}: unexpected {peek()!r} after the last layer")
    if not layers:
        raise ValueError(f"conv_feature_layers {text!r}: no layers")
    if any(v <= 0 for spec in layers for v in spec):
        raise ValueError(f"conv_feature_layers {text!r}: sizes must be positive")
    return tuple(layers)


def format_conv_layers(layers: Sequence[Sequence[int]]) -> str:
    """Inverse of :func:`parse_conv_layers`: runs of equal layers become ``[(d,k,s)] * n``."""
    parts: list[str] = []
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and tuple(layers[j + 1]) == tuple(layers[i]):
            j += 1
        d, k, s = (int(v) for v in layers[i])
        run = j - i + 1
        parts.append(f"[({d},{k},{s})]" + (f" * {run}" if run > 1 else ""))
        i = j + 1
    return " + ".join(parts)


# --------------------------------------------------------------------------- #
# Config
# --------------------------------------------------------------------------- #

_ACTIVATIONS = ("gelu", "gelu_accurate", "relu", "tanh", "linear")

# Keys of a full s3prl/fairseq WavLM cfg that only matter for pre-training (masking,
# gradient scaling). from_dict accepts and drops them.
_TRAINING_ONLY_KEYS = frozenset(
    {
        "feature_grad_mult",
        "mask_length",
        "mask_prob",
        "mask_selection",
        "mask_other",
        "no_mask_overlap",
        "mask_min_space",
        "mask_channel_length",
        "mask_channel_prob",
        "mask_channel_selection",
        "mask_channel_other",
        "no_mask_channel_overlap",
        "mask_channel_min_space",
    }
)


@dataclass
class WavLMConfig:
    """WavLM hyper-parameters under s3prl's ``WavLMConfig`` field names.

    Defaults are WavLM-Large, the model inside ``wavlm_large_finetune.pth``
    (24 layers × width 1024, FFN 4096, 16 heads, layer-norm feature extractor
    without conv bias, pre-norm layers, gated relative position bias with 320
    buckets up to distance 800, input waveform layer-normalised).
    """

    extractor_mode: str = "layer_norm"  # "layer_norm": LN in every conv block; "default": GN in the first only
    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"  # 320x downsampling
    conv_bias: bool = False
    encoder_layers: int = 24
    encoder_embed_dim: int = 1024
    encoder_ffn_embed_dim: int = 4096
    encoder_attention_heads: int = 16
    activation_fn: str = "gelu"
    layer_norm_first: bool = True
    conv_pos: int = 128  # kernel of the convolutional position embedding
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    normalize: bool = True  # layer-normalise each input waveform over its whole length
    # Training-time regularisation; kept so published configs round-trip, unused here.
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    dropout_features: float = 0.0

    def __post_init__(self):
        if self.extractor_mode not in ("layer_norm", "default"):
            raise ValueError(
                f"WavLMConfig.extractor_mode must be 'layer_norm' or 'default', got {self.extractor_mode!r}"
            )
        parse_conv_layers(self.conv_feature_layers)  # raises ValueError when malformed
        for name in (
            "encoder_layers",
            "encoder_embed_dim",
            "encoder_ffn_embed_dim",
            "encoder_attention_heads",
            "conv_pos",
            "conv_pos_groups",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"WavLMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(
                f"WavLMConfig: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(
                f"WavLMConfig: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"conv_pos_groups {self.conv_pos_groups}"
            )
        if self.activation_fn not in _ACTIVATIONS:
            raise ValueError(f"WavLMConfig.activation_fn must be one of {_ACTIVATIONS}, got {self.activation_fn!r}")
        if not self.layer_norm_first:
            raise ValueError(
                "WavLMConfig.layer_norm_first=False (post-norm WavLM Base/Base+) is not implemented; "
                "the speaker encoder of Talker-T2AV uses WavLM-Large (layer_norm_first=True)"
            )
        if self.relative_position_embedding:
            if self.num_buckets < 4 or self.num_buckets % 2:
                raise ValueError(f"WavLMConfig.num_buckets must be an even number >= 4, got {self.num_buckets}")
            if self.max_distance <= self.num_buckets // 4:
                raise ValueError(
                    f"WavLMConfig.max_distance ({self.max_distance}) must exceed num_buckets // 4 "
                    f"({self.num_buckets // 4}), the largest exactly represented distance"
                )
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "encoder_layerdrop",
            "dropout_input",
            "dropout_features",
        ):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"WavLMConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def conv_layers(self) -> tuple[ConvSpec, ...]:
        """The parsed ``conv_feature_layers``: ((channels, kernel, stride), ...)."""
        return parse_conv_layers(self.conv_feature_layers)

    @property
    def extractor_dim(self) -> int:
        """C: channels of the last feature-extractor convolution."""
        return self.conv_layers[-1][0]

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def num_hidden_states(self) -> int:
        """L + 1: the input of every encoder layer plus the encoder output."""
        return self.encoder_layers + 1

    @classmethod
    def tiny(cls) -> WavLMConfig:
        """A few-thousand-parameter WavLM for tests (same structure as the release)."""
        return cls(
            conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
            encoder_layers=2,
            encoder_embed_dim=64,
            encoder_ffn_embed_dim=128,
            encoder_attention_heads=4,
            conv_pos=16,
            conv_pos_groups=4,
            num_buckets=32,
            max_distance=100,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WavLMConfig:
        """Build from a mapping of published field names (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in known and k not in _TRAINING_ONLY_KEYS)
        if unknown:
            raise ValueError(f"WavLMConfig: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #


def _float32_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the last axis computed in float32 (the reference's Fp32LayerNorm)."""
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps).to(x.dtype)


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":  # exact GELU, evaluated in float32 as the reference does
        return F.gelu(x.float()).to(x.dtype)
    if name == "gelu_accurate":
        return F.gelu(x.float(), approximate="tanh").to(x.dtype)
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    return x  # "linear"


class _ChannelNorm(nn.Module):
    """Holds a LayerNorm over channels of (B, C, T) input at child index "1" (published layout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.add_module("1", nn.LayerNorm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _float32_layer_norm(x.transpose(1, 2), getattr(self, "1")).transpose(1, 2)


class _GroupNormFp32(nn.GroupNorm):
    """GroupNorm computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class _ConvBlock(nn.Module):
    """conv (child "0") → optional norm (child "2") → GELU; (B, C_in, N) → (B, C_out, N')."""

    def __init__(self, c_in: int, spec: ConvSpec, bias: bool, norm: str | None):
        super().__init__()
        c_out, kernel, stride = spec
        self.add_module("0", nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias))
        if norm == "layer":
            self.add_module("2", _ChannelNorm(c_out))
        elif norm == "group":
            self.add_module("2", _GroupNormFp32(c_out, c_out, affine=True))
        self._has_norm = norm is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, "0")(x)
        if self._has_norm:
            x = getattr(self, "2")(x)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """Waveform → frames: (B, N) → (B, C, T)."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        blocks = []
        c_in = 1
        for i, spec in enumerate(config.conv_layers):
            norm = "layer" if config.extractor_mode == "layer_norm" else "group" if i == 0 else None
            blocks.append(_ConvBlock(c_in, spec, config.conv_bias, norm))
            c_in = spec[0]
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class _WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_g * weight_v / ‖weight_v‖`` (norm over all axes but the kernel axis)."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding = kernel // 2
        self.groups = groups

    def effective_weight(self) -> torch.Tensor:
        v = self.weight_v
        norm = v.float().pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        return (v.float() * (self.weight_g.float() / norm)).to(v.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.effective_weight(), self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Module):
    """Convolutional position embedding: (B, D, T) → (B, D, T), GELU(conv(x)) trimmed to T frames."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.add_module("0", _WeightNormConv1d(config.encoder_embed_dim, config.conv_pos, config.conv_pos_groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        y = getattr(self, "0")(x)[..., :frames]  # an even kernel yields one extra frame
        return F.gelu(y)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """(T, T) long bucket index of the key-minus-query distance (bidirectional, log-spaced beyond num_buckets/4).

    Half the buckets are for keys after the query. Within a half, distances below
    ``num_buckets // 4`` get their own bucket; larger ones share log-spaced buckets
    up to ``max_distance``, beyond which the last bucket is used.
    """
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    bucket = (rel > 0).long() * half
    dist = rel.abs()
    far = (
        exact + (torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    )
    far = far.clamp(max=half - 1)
    return bucket + torch.where(dist < exact, dist, far)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the (gated) relative position bias; (B, T, D) → (B, T, D)."""

    def __init__(self, config: WavLMConfig, has_position_table: bool):
        super().__init__()
        d = config.encoder_embed_dim
        self.heads = config.encoder_attention_heads
        self.head_dim = config.head_dim
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.relative_attention_bias = nn.Embedding(config.num_buckets, self.heads) if has_position_table else None
        self.gated = config.gru_rel_pos
        if self.gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))

    def position_bias(self, frames: int) -> torch.Tensor:
        """(H, T, T) bias from this layer's bucket table (layer 0 only)."""
        if self.relative_attention_bias is None:
            raise RuntimeError("this attention layer holds no relative position table")
        buckets = relative_position_buckets(
            frames, self.num_buckets, self.max_distance, device=self.relative_attention_bias.weight.device
        )
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) layer input → (B, H, T, 1) per-head, per-query scale of the position bias.

        With r = sigmoid(sum of grep_linear outputs 0-3) and u = sigmoid(sum of
        outputs 4-7) on each head's slice of the input: r · (u · grep_a − 1) + 2.
        """
        b, t, _ = x.shape
        per_head = x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, K)
        r, u = torch.sigmoid(self.grep_linear(per_head).view(b, self.heads, t, 2, 4).sum(-1)).unbind(-1)
        return (r * (u * self.grep_a.squeeze(-1) - 1.0) + 2.0).unsqueeze(-1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        mask = None
        if bias is not None:
            mask = bias.to(q.dtype).unsqueeze(0)  # (1, H, T, T)
            if self.gated:
                mask = self.gate(x) * mask  # (B, H, T, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(LN(x)), then x + fc2(act(fc1(LN(x))))."""

    def __init__(self, config: WavLMConfig, index: int):
        super().__init__()
        d = config.encoder_embed_dim
        self.activation = config.activation_fn
        has_table = config.relative_position_embedding and index == 0
        self.self_attn = SelfAttention(config, has_table)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
        return x + self.fc2(_activation(self.activation, self.fc1(self.final_layer_norm(x))))


class Encoder(nn.Module):
    """Position embedding and transformer stack; (B, T, D) → L + 1 hidden states (B, T, D)."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.relative = config.relative_position_embedding
        self.pos_conv = PositionalConv(config)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(config.encoder_embed_dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        first: EncoderLayer = self.layers[0]  # type: ignore[assignment]  # ModuleList items are Modules
        bias = first.self_attn.position_bias(x.shape[1]) if self.relative else None
        states = []
        for layer in self.layers:
            states.append(x)
            x = layer(x, bias)
        states.append(self.layer_norm(x))
        return states


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #


class WavLM(nn.Module):
    """WavLM under the published names; call it for the hidden states of a 16 kHz waveform."""

    def __init__(self, config: WavLMConfig | None = None):
        super().__init__()
        self.config = config = config or WavLMConfig()
        self.feature_extractor = FeatureExtractor(config)
        self.layer_norm = nn.LayerNorm(config.extractor_dim)
        self.post_extract_proj = (
            nn.Linear(config.extractor_dim, config.encoder_embed_dim)
            if config.extractor_dim != config.encoder_embed_dim
            else None
        )
        self.encoder = Encoder(config)

    def num_frames(self, num_samples: int) -> int:
        """T for a waveform of N samples (0 when it is shorter than the receptive field)."""
        n = int(num_samples)
        for _, kernel, stride in self.config.conv_layers:
            if n < kernel:
                return 0
            n = (n - kernel) // stride + 1
        return n

    def forward(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """(B, N) 16 kHz waveform → list of L + 1 tensors (B, T, D).

        Entry i < L is the input of encoder layer i (entry 0: the projected
        features plus the convolutional position embedding); entry L is the
        layer-normalised encoder output. With ``config.normalize`` each waveform
        is first normalised to zero mean and unit variance over its length
        (float32 statistics, eps 1e-5).
        """
        if wav.ndim != 2:
            raise ValueError(f"WavLM expects a (batch, samples) waveform, got shape {tuple(wav.shape)}")
        if self.num_frames(wav.shape[1]) < 1:
            raise ValueError(
                f"waveform of {wav.shape[1]} samples is too short for WavLM "
                f"(needs at least {self.min_samples()} samples at 16 kHz)"
            )
        dtype = self.layer_norm.weight.dtype
        if self.config.normalize:
            wav = F.layer_norm(wav.float(), (wav.shape[1],))
        feats = self.feature_extractor(wav.to(dtype)).transpose(1, 2)  # (B, T, C)
        feats = self.layer_norm(feats)
        if self.post_extract_proj is not None:
            feats = self.post_extract_proj(feats)
        return self.encoder(feats)

    def min_samples(self) -> int:
        """Smallest N that yields one frame."""
        n = 1
        for _, kernel, stride in reversed(self.config.conv_layers):
            n = (n - 1) * stride + kernel
        return n
