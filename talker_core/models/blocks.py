"""Transformer pieces shared by the patch encoders and the DiT velocity heads.

Implements the small bidirectional pre-norm transformer of Talker-T2AV
(arXiv 2604.23586; reference ``llama4nar.py``: ``RMSNorm``, ``RoPE``, ``Block``),
see spec MODEL.md §3:

    x = x + attn.proj(SDPA(rope(q), rope(k), v))     with q, k, v = attn.qkv(norm1(x))
    x = x + mlp.proj(silu(mlp.fc1(y)) * mlp.fc2(y))  with y = norm2(x)

Attention is full (no causal mask), the MLP is SiLU-gated with hidden width
int(8·H/3), and no linear layer has a bias. Rotary embedding acts on adjacent
pairs of channels (2i, 2i+1) with θ_i = 10000^(−2i/head_dim) at positions
0..L−1 of the sequence handed to the stack.

Legend: B batch, L sequence length, H width, N heads, E head_dim (H = N·E).

Normalisation statistics and the rotary tables are computed in float32 whatever
the module dtype, so a bf16/fp16 copy of a stack stays close to float32.
The fast path's version of a block (prepacked linears, selected output rows) is
:func:`talker_core.fast.kernels.block_forward`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RMSNorm",
    "AdjacentPairRotary",
    "SelfAttention",
    "GatedMLP",
    "TransformerBlock",
    "mlp_hidden_width",
]

log = logging.getLogger(__name__)


def mlp_hidden_width(width: int) -> int:
    """Hidden width of the gated MLP for a block of ``width`` channels: int(8·width/3)."""
    return int(8 * width / 3)


class RMSNorm(nn.Module):
    """``x · rsqrt(mean(x²) + eps) · scale`` over the last dimension (parameter ``scale``)."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, H) → (…, H), same dtype as ``x``."""
        xf = x.float()
        inv = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xf * inv * self.scale.float()).to(x.dtype)


class AdjacentPairRotary(nn.Module):
    """Rotary position embedding on adjacent channel pairs (2i, 2i+1).

    Holds no state that a checkpoint stores: the cos/sin tables are functions of
    ``head_dim`` and the sequence length, computed in float32 on first use per
    (length, device) and cached (the published ``*.rope.w`` buffers are ignored
    when loading).
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin tables, each (L, E/2) float32 on ``device``."""
        key = (length, torch.device(device))
        cached = self._tables.get(key)
        if cached is None:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2) / self.head_dim))
            angles = torch.outer(torch.arange(length), inv_freq).float()
            cached = (angles.cos().to(device), angles.sin().to(device))
            self._tables[key] = cached
        return cached

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, N, L, E) → (B, N, L, E): channel pair i of position p rotated by p·θ_i.

        Positions are ``start``…``start+L−1`` (0… by default).
        """
        length = x.shape[-2]
        cos, sin = self.tables(start + length, x.device)
        if start:
            cos, sin = cos[start:], sin[start:]
        pairs = x.float().unflatten(-1, (self.head_dim // 2, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((cos * even - sin * odd, cos * odd + sin * even), dim=-1)
        return rotated.flatten(-2).to(x.dtype)


class SelfAttention(nn.Module):
    """Full (bidirectional) multi-head self-attention with rotary q/k; ``qkv`` and ``proj``, no biases."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        if width % n_head:
            raise ValueError(f"width {width} is not divisible by the number of heads {n_head}")
        self.n_head = n_head
        self.head_dim = width // n_head
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, rope: AdjacentPairRotary) -> torch.Tensor:
        """(B, L, H) → (B, L, H)."""
        b, length, _ = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, N, L, E)
        y = F.scaled_dot_product_attention(rope(q), rope(k), v)
        return self.proj(y.transpose(1, 2).reshape(b, length, -1))


class GatedMLP(nn.Module):
    """``proj(silu(fc1(x)) · fc2(x))`` with hidden width int(8·H/3), no biases."""

    def __init__(self, width: int):
        super().__init__()
        hidden = mlp_hidden_width(width)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(width, hidden, bias=False)
        self.proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, H) → (…, H)."""
        return self.proj(F.silu(self.fc1(x)) * self.fc2(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``norm1``, ``attn``, ``norm2``, ``mlp`` (published names)."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.attn = SelfAttention(width, n_head)
        self.norm2 = RMSNorm(width)
        self.mlp = GatedMLP(width)

    def forward(self, x: torch.Tensor, rope: AdjacentPairRotary) -> torch.Tensor:
        """(B, L, H) → (B, L, H)."""
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))
