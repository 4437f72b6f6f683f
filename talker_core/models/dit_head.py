"""DiT velocity head (the ``*_cfm.estimator`` modules of Talker-T2AV).

Implements the local diffusion-transformer that predicts the flow-matching
velocity of one patch (arXiv 2604.23586; reference ``local_dit.py``,
``VoxCPMLocDiT``, and ``llama4nar.py``, ``ContinuousDecoder``), spec MODEL.md §4.
It is only the network; the Euler sampler that drives it lives in
:mod:`talker_core.generation.flow_sampler`.

    temb  = time_mlp(sinusoid(t)) + delta_time_mlp(sinusoid(dt))
    seq   = [mu + temb, global_cond_proj(g), cond_proj(cond frames), in_proj(x frames)]
    v     = out_proj(decoder.norm(decoder.blocks(decoder.input_proj(seq)))[last T])

Sinusoid of width H: half sin, half cos, frequencies exp(−ln(10000)·i/(H/2−1)),
argument 1000·t. Speech head: C = 32, G = 256 (speaker embedding); motion head:
C = 40, G = 40 (first reference motion frame, normalised).

The generation fast path evaluates this head through
:class:`talker_core.fast.heads.PatchVelocity` (same function, less work per Euler step).

Legend: N batch, C channels of the latent, T frames to predict, Tc context
frames, G global condition width, H head width (= backbone width D), S steps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talker_core.models.blocks import AdjacentPairRotary, RMSNorm, TransformerBlock

__all__ = ["DitConfig", "DiTHead", "TimeMLP", "timestep_sinusoid"]

log = logging.getLogger(__name__)


@dataclass
class DitConfig:
    """Sizes of a DiT head (names of the reference ``DecoderConfig``).

    hidden_size: width H of the head (release 1024; must equal the backbone width,
                 since the backbone state ``mu`` is added to the time embedding).
    feat_dim:    input width of ``decoder.input_proj`` (release 1024 = hidden_size:
                 the decoder sees the already projected sequence).
    n_layer:     transformer blocks (release 8).
    n_head:      attention heads (release 8).
    """

    hidden_size: int = 1024
    feat_dim: int = 1024
    n_layer: int = 8
    n_head: int = 8

    def __post_init__(self):
        if min(self.hidden_size, self.feat_dim, self.n_layer, self.n_head) < 1:
            raise ValueError(f"DiT sizes must be positive, got {self}")
        if self.feat_dim != self.hidden_size:
            raise ValueError(
                f"DiT feat_dim ({self.feat_dim}) must equal hidden_size ({self.hidden_size}): "
                "the decoder input is the projected sequence"
            )
        if self.hidden_size % self.n_head or (self.hidden_size // self.n_head) % 2:
            raise ValueError(f"DiT hidden_size {self.hidden_size} must split into {self.n_head} heads of even size")
        if self.hidden_size % 2 or self.hidden_size < 4:
            raise ValueError(f"DiT hidden_size must be even and >= 4 for the time sinusoid, got {self.hidden_size}")

    @classmethod
    def tiny(cls) -> DitConfig:
        return cls(hidden_size=64, feat_dim=64, n_layer=2, n_head=4)


def timestep_sinusoid(t: torch.Tensor, width: int, scale: float = 1000.0) -> torch.Tensor:
    """t (N,) → (N, width) float32: [sin(scale·t·f_i), cos(scale·t·f_i)], f_i = exp(−ln(10000)·i/(width/2−1))."""
    half = width // 2
    t = t.float().reshape(-1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000) / (half - 1)))
    arg = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class TimeMLP(nn.Module):
    """``linear_2(silu(linear_1(x)))`` (published names ``linear_1``, ``linear_2``)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(width, width, bias=True)
        self.linear_2 = nn.Linear(width, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class DiTDecoder(nn.Module):
    """``input_proj`` → bidirectional ``blocks`` → ``norm`` over a (N, L, feat_dim) sequence."""

    def __init__(self, config: DitConfig):
        super().__init__()
        self.input_proj = nn.Linear(config.feat_dim, config.hidden_size, bias=True)
        self.rope = AdjacentPairRotary(config.hidden_size // config.n_head)
        self.blocks = nn.ModuleList(TransformerBlock(config.hidden_size, config.n_head) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.hidden_size)

    def forward(self, seq: torch.Tensor, keep_last: int) -> torch.Tensor:
        """seq (N, L, feat_dim) → (N, keep_last, H): the normalised last ``keep_last`` positions."""
        h = self.input_proj(seq)
        for block in self.blocks:
            h = block(h, self.rope)
        return self.norm(h[:, -keep_last:])


class DiTHead(nn.Module):
    """Velocity network v(x, mu, t, cond, global, dt) of one stream.

    Parameters (published names): ``in_proj``, ``cond_proj`` (C→H), ``global_cond_proj``
    (G→H), ``out_proj`` (H→C), ``time_mlp.linear_{1,2}``, ``delta_time_mlp.linear_{1,2}``,
    ``decoder.input_proj``, ``decoder.blocks.{i}.*``, ``decoder.norm.scale``.
    """

    def __init__(self, config: DitConfig, in_channels: int, global_cond_channels: int):
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        self.global_cond_channels = global_cond_channels
        width = config.hidden_size
        self.in_proj = nn.Linear(in_channels, width, bias=True)
        self.cond_proj = nn.Linear(in_channels, width, bias=True)
        self.global_cond_proj = nn.Linear(global_cond_channels, width, bias=True)
        self.out_proj = nn.Linear(width, in_channels, bias=True)
        self.time_mlp = TimeMLP(width)
        self.delta_time_mlp = TimeMLP(width)
        self.decoder = DiTDecoder(config)

    def time_embedding(self, t: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """t (N,), dt (N,) → time_mlp(sinusoid(t)) + delta_time_mlp(sinusoid(dt)), (N, H) in the head dtype."""
        dtype, width = self.in_proj.weight.dtype, self.config.hidden_size
        temb = self.time_mlp(timestep_sinusoid(t, width).to(dtype))
        return temb + self.delta_time_mlp(timestep_sinusoid(dt, width).to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        global_cond: torch.Tensor,
        dt: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity (N, C, T).

        x (N, C, T) current sample; mu (N, H) backbone state (zeros for the
        unconditional branch); t (N,) flow time in [0, 1]; cond (N, C, Tc) context
        frames; global_cond (N, G); dt (N,) mean-flow interval (zeros at inference).
        """
        dtype = self.in_proj.weight.dtype
        frames = x.shape[-1]
        x_tok = self.in_proj(x.transpose(1, 2).to(dtype))
        cond_tok = self.cond_proj(cond.transpose(1, 2).to(dtype))
        global_tok = self.global_cond_proj(global_cond.to(dtype)).unsqueeze(1)
        temb = self.time_embedding(t, dt)
        first = (mu.to(dtype) + temb).unsqueeze(1)
        seq = torch.cat([first, global_tok, cond_tok, x_tok], dim=1)
        out = self.out_proj(self.decoder(seq, keep_last=frames))
        return out.transpose(1, 2)
