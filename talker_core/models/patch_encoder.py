"""Patch encoder: one backbone token per patch of P frames.

Implements the CLS-pooling patch encoder of Talker-T2AV (arXiv 2604.23586;
reference ``llama4nar.py``, ``PatchEncoder``), spec MODEL.md §3. Each patch of P
frames (already projected to the backbone width) goes through ``input_proj``; a
learned ``cls_token`` is prepended (length P+1); a stack of bidirectional
pre-norm ``blocks`` (see :mod:`talker_core.models.blocks`) and a final ``norm`` follow;
the CLS position is the patch token. Talker has two: ``speech_patch_encoder``
and ``motion_patch_encoder``, both at the backbone width.

The generation fast path runs it as :func:`talker_core.fast.heads.encode_patches`.

Legend: B batch, T patches, P frames per patch, D input width, H output width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from talker_core.models.blocks import AdjacentPairRotary, RMSNorm, TransformerBlock

__all__ = ["PatchEncoderConfig", "PatchEncoder"]

log = logging.getLogger(__name__)


@dataclass
class PatchEncoderConfig:
    """Depth of a patch encoder (its width is the backbone width).

    n_layer: transformer blocks (release: 4).
    n_head:  attention heads (release: 8; head_dim = width / n_head must be even).
    """

    n_layer: int = 4
    n_head: int = 8

    def __post_init__(self):
        if self.n_layer < 1 or self.n_head < 1:
            raise ValueError(f"patch encoder needs n_layer >= 1 and n_head >= 1, got {self.n_layer}, {self.n_head}")

    @classmethod
    def tiny(cls) -> PatchEncoderConfig:
        return cls(n_layer=2, n_head=4)

    def check_width(self, width: int) -> None:
        """Raise ValueError unless ``width`` splits into an even head_dim for ``n_head`` heads."""
        if width % self.n_head or (width // self.n_head) % 2:
            raise ValueError(f"patch encoder width {width} must split into {self.n_head} heads of even size")


class PatchEncoder(nn.Module):
    """(B, T, P, D) frame features → (B, T, H) patch tokens.

    Parameters (published names): ``input_proj`` (Linear D→H, bias), ``cls_token``
    (1, 1, 1, H), ``blocks.{i}.*``, ``norm.scale``.
    """

    def __init__(self, config: PatchEncoderConfig, input_dim: int, hidden_size: int):
        super().__init__()
        config.check_width(hidden_size)
        self.config = config
        self.input_proj = nn.Linear(input_dim, hidden_size, bias=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 1, hidden_size))
        nn.init.normal_(self.cls_token, std=0.02)
        self.rope = AdjacentPairRotary(hidden_size // config.n_head)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, config.n_head) for _ in range(config.n_layer))
        self.norm = RMSNorm(hidden_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, P, D) → tokens (B, T, H)."""
        if frames.ndim != 4:
            raise ValueError(f"patch encoder input must be (batch, patches, frames, width), got {tuple(frames.shape)}")
        b, t, p, _ = frames.shape
        x = self.input_proj(frames)
        cls = self.cls_token.to(x.dtype).expand(b, t, 1, -1)
        x = torch.cat([cls, x], dim=2).flatten(0, 1)  # (B·T, P+1, H)
        for block in self.blocks:
            x = block(x, self.rope)
        # RMSNorm acts per position: normalising the CLS position alone is exact.
        return self.norm(x[:, 0]).view(b, t, -1)
