"""ECAPA-TDNN speaker-embedding head over WavLM hidden states, inference only.

Implements ECAPA-TDNN (Desplanques et al., "ECAPA-TDNN: Emphasized Channel
Attention, Propagation and Aggregation in TDNN Based Speaker Verification",
arXiv 2005.07143) in the variant of Microsoft UniSpeech's speaker-verification
recipe, vendored by Talker-T2AV as ``speaker_verification/models2/ecapa_tdnn.py``
(``ECAPA_TDNN_SMALL``: channels 512, embedding 256, over WavLM-Large). MODEL.md §8.

Front (:func:`mix_hidden_states`): the L + 1 WavLM hidden states are averaged
with weights softmax(``feature_weight``) and instance-normalised over time.
Head (:class:`EcapaTdnn`, published names):

- ``layer1``: conv (kernel 5) → ReLU → BatchNorm (``conv``, ``bn``);
- ``layer2..4``: SE-Res2 blocks with dilation 2, 3, 4 — ``Conv1dReluBn1`` (k1),
  ``Res2Conv1dReluBn`` (the channels split into ``scale`` groups; group i > 0 is
  convolved (k3) after adding the previous group's output, the last group
  passes through), ``Conv1dReluBn2`` (k1), ``SE_Connect`` (squeeze-excitation
  through a ``se_bottleneck_dim`` bottleneck), plus the block input;
- ``conv`` (k1) over the concatenated outputs of layers 2–4, ReLU;
- ``pooling``: attentive statistics pooling (``linear1`` → tanh → ``linear2`` →
  softmax over time; weighted mean and standard deviation);
- ``bn`` and ``linear`` → the embedding.

BatchNorm always uses its running statistics: this module never trains.

Legend: B batch, T frames, D input feature width (WavLM width), C channels,
M aggregation channels (1536), E embedding width, L + 1 hidden states.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EcapaConfig", "EcapaTdnn", "mix_hidden_states"]

log = logging.getLogger(__name__)


@dataclass
class EcapaConfig:
    """ECAPA-TDNN sizes; defaults are the release (``ECAPA_TDNN_SMALL`` over WavLM-Large)."""

    feat_dim: int = 1024  # D: width of the WavLM hidden states
    channels: int = 512  # C
    emb_dim: int = 256  # E
    scale: int = 8  # Res2 groups per SE-Res2 block
    se_bottleneck_dim: int = 128
    attention_channels: int = 128  # hidden width of the attentive pooling
    mfa_channels: int = 1536  # M: width after aggregating layers 2-4 (fixed in the reference)

    def __post_init__(self):
        for f in fields(self):
            if int(getattr(self, f.name)) <= 0:
                raise ValueError(f"EcapaConfig.{f.name} must be positive, got {getattr(self, f.name)}")
        if self.scale < 2:
            raise ValueError(f"EcapaConfig.scale must be >= 2, got {self.scale}")
        if self.channels % self.scale:
            raise ValueError(f"EcapaConfig: channels {self.channels} is not divisible by scale {self.scale}")

    @classmethod
    def tiny(cls) -> EcapaConfig:
        return cls(
            feat_dim=64, channels=64, emb_dim=32, scale=8, se_bottleneck_dim=16, attention_channels=16, mfa_channels=96
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EcapaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EcapaConfig: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mix_hidden_states(hidden_states: torch.Tensor, feature_weight: torch.Tensor) -> torch.Tensor:
    """(L+1, B, T, D) hidden states, (L+1,) logits → (B, D, T) instance-normalised mixture.

    The mixture is Σ_l softmax(feature_weight)_l · h_l; each channel is then
    normalised to zero mean and unit variance over time (eps 1e-5, no affine).
    Statistics are computed in float32; the result has the input dtype.
    """
    if hidden_states.ndim != 4 or hidden_states.shape[0] != feature_weight.numel():
        raise ValueError(
            f"expected {feature_weight.numel()} stacked hidden states (L+1, B, T, D), "
            f"got shape {tuple(hidden_states.shape)}"
        )
    w = torch.softmax(feature_weight.float(), dim=0).view(-1, 1, 1, 1)
    mixed = (w * hidden_states.float()).sum(dim=0).transpose(1, 2)  # (B, D, T)
    # The reference adds 1e-6 before this norm; a constant shift does not change it.
    return F.instance_norm(mixed, eps=1e-5).to(hidden_states.dtype)


class FrozenBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that always normalises with its running statistics (same state-dict entries)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class Conv1dReluBn(nn.Module):
    """conv → ReLU → BatchNorm; (B, C_in, T) → (B, C_out, T) ('same' length for the paddings used)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=padding, dilation=dilation)
        self.bn = FrozenBatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Hierarchical residual convolution over ``scale`` channel groups; (B, C, T) → (B, C, T)."""

    def __init__(self, channels: int, scale: int, dilation: int):
        super().__init__()
        self.width = channels // scale
        n = scale - 1
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, 3, padding=dilation, dilation=dilation) for _ in range(n)
        )
        self.bns = nn.ModuleList(FrozenBatchNorm1d(self.width) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)
        outs = []
        carry = groups[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            carry = groups[i] if i == 0 else carry + groups[i]
            carry = bn(F.relu(conv(carry)))
            outs.append(carry)
        outs.append(groups[-1])
        return torch.cat(outs, dim=1)


class SE_Connect(nn.Module):  # noqa: N801 (published parameter name)
    """Squeeze-excitation: channel gates from the time average; (B, C, T) → (B, C, T)."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gate.unsqueeze(2)


class SERes2Block(nn.Module):
    """k1 conv → Res2 (k3, dilated) → k1 conv → SE, plus the input; (B, C, T) → (B, C, T)."""

    def __init__(self, channels: int, scale: int, dilation: int, se_bottleneck: int):
        super().__init__()
        self.Conv1dReluBn1 = Conv1dReluBn(channels, channels)
        self.Res2Conv1dReluBn = Res2Conv1dReluBn(channels, scale, dilation)
        self.Conv1dReluBn2 = Conv1dReluBn(channels, channels)
        self.SE_Connect = SE_Connect(channels, se_bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x)))
        return x + self.SE_Connect(y)


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time; (B, M, T) → (B, 2M)."""

    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.linear1 = nn.Conv1d(channels, attention_channels, 1)
        self.linear2 = nn.Conv1d(attention_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))).float(), dim=2)
        xf = x.float()
        mean = (alpha * xf).sum(dim=2)
        var = (alpha * xf.square()).sum(dim=2) - mean.square()
        std = var.clamp(min=1e-9).sqrt()
        return torch.cat([mean, std], dim=1).to(x.dtype)


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN head: (B, D, T) normalised features → (B, E) speaker embedding."""

    def __init__(self, config: EcapaConfig | None = None):
        super().__init__()
        self.ecapa_config = config = config or EcapaConfig()
        c = config.channels
        self.layer1 = Conv1dReluBn(config.feat_dim, c, kernel=5, padding=2)
        self.layer2 = SERes2Block(c, config.scale, 2, config.se_bottleneck_dim)
        self.layer3 = SERes2Block(c, config.scale, 3, config.se_bottleneck_dim)
        self.layer4 = SERes2Block(c, config.scale, 4, config.se_bottleneck_dim)
        self.conv = nn.Conv1d(3 * c, config.mfa_channels, 1)
        self.pooling = AttentiveStatsPool(config.mfa_channels, config.attention_channels)
        self.bn = FrozenBatchNorm1d(2 * config.mfa_channels)
        self.linear = nn.Linear(2 * config.mfa_channels, config.emb_dim)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, T) features (see :func:`mix_hidden_states`) → (B, E) embedding."""
        if features.ndim != 3 or features.shape[1] != self.ecapa_config.feat_dim:
            raise ValueError(
                f"ECAPA-TDNN expects (batch, {self.ecapa_config.feat_dim}, frames) features, "
                f"got shape {tuple(features.shape)}"
            )
        out1 = self.layer1(features)
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        x = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
        return self.linear(self.bn(self.pooling(x)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.embed(features)
