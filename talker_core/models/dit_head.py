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

Fast path: :class:`PatchVelocity` evaluates the head for the flow sampler's CFG
pair (conditional ``mu`` and unconditional zeros) at step k of a fixed time grid,
with everything that does not change between the Euler steps computed once: the
time embeddings of the whole grid (once per grid), the projected global and
context tokens and the projected first token of every step (once per patch).
Only the x tokens and the transformer blocks run per step, and the last block
computes its output for the last T positions only.

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

from talker_core.models.blocks import (
    AdjacentPairRotary,
    RMSNorm,
    TransformerBlock,
    block_forward,
    plain_linear,
)

__all__ = ["DitConfig", "DiTHead", "PatchVelocity", "timestep_sinusoid"]

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

    def time_embedding(self, t: torch.Tensor, dt: torch.Tensor, linear=plain_linear) -> torch.Tensor:
        """t (N,), dt (N,) → time_mlp(sinusoid(t)) + delta_time_mlp(sinusoid(dt)), (N, H) in the head dtype."""
        dtype, width = self.in_proj.weight.dtype, self.config.hidden_size

        def mlp(m: TimeMLP, x: torch.Tensor) -> torch.Tensor:
            return linear(m.linear_2, F.silu(linear(m.linear_1, x)))

        temb = mlp(self.time_mlp, timestep_sinusoid(t, width).to(dtype))
        return temb + mlp(self.delta_time_mlp, timestep_sinusoid(dt, width).to(dtype))

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


class PatchVelocity:
    """Velocities of one head for the flow sampler's CFG pair on a fixed time grid (fast path).

    ``velocity(x, k)`` equals ``head(x.repeat(2, 1, 1), [mu; 0], times[k], cond.repeat(2, 1, 1),
    global.repeat(2, 1), 0)`` (up to float rounding) for the ``mu``, ``cond`` and ``global``
    given to :meth:`begin`: rows [0, N) conditional, [N, 2N) unconditional.

    head:   the :class:`DiTHead`.
    times:  (S,) float32 flow times of the grid (the sampler's schedule).
    linear: linear kernel (:class:`talker_core.models.blocks.LinearKernels` or ``plain_linear``).

    The time embeddings of the grid are computed here, once; :meth:`begin` does the
    per-patch work; :meth:`__call__` the per-step work. Nothing in it synchronises
    with the host, so a loop over it can be captured in a CUDA graph.
    """

    def __init__(self, head: DiTHead, times: torch.Tensor, linear=plain_linear):
        self.head = head
        self.linear = linear
        dtype = head.in_proj.weight.dtype
        device = head.in_proj.weight.device
        times = times.reshape(-1).to(device=device, dtype=torch.float32)
        self.steps = times.shape[0]
        with torch.no_grad():
            temb = head.time_embedding(times.to(dtype), torch.zeros_like(times).to(dtype), linear)  # (S, H)
            self.temb = temb
            # unconditional first token (mu = 0): input_proj(temb_k), the same for every patch
            self.first_uncond = linear(head.decoder.input_proj, temb)  # (S, H)
        self._const: torch.Tensor | None = None
        self._first_cond: torch.Tensor | None = None

    def begin(self, mu: torch.Tensor, cond: torch.Tensor, global_cond: torch.Tensor) -> None:
        """Per-patch constants. mu (N, H); cond (N, C, Tc); global_cond (N, G)."""
        head, lin = self.head, self.linear
        dtype = head.in_proj.weight.dtype
        proj = head.decoder.input_proj
        global_tok = lin(head.global_cond_proj, global_cond.to(dtype)).unsqueeze(1)  # (N, 1, H)
        cond_tok = lin(head.cond_proj, cond.transpose(1, 2).to(dtype))  # (N, Tc, H)
        const = lin(proj, torch.cat([global_tok, cond_tok], dim=1))  # (N, 1+Tc, H)
        self._const = const.repeat(2, 1, 1)  # (2N, 1+Tc, H)
        # conditional first token of every step: input_proj(mu + temb_k) → (S, N, H)
        first = mu.to(dtype).unsqueeze(0) + self.temb.unsqueeze(1)
        self._first_cond = lin(proj, first)

    def __call__(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """x (N, C, T) → velocities (2N, C, T) float32 at grid step k."""
        head, lin = self.head, self.linear
        if self._const is None:
            raise RuntimeError("PatchVelocity.begin() must be called before the steps of a patch")
        n, _, frames = x.shape
        dtype = self._const.dtype
        x_tok = lin(head.decoder.input_proj, lin(head.in_proj, x.transpose(1, 2).to(dtype)))  # (N, T, H)
        first = torch.cat([self._first_cond[k], self.first_uncond[k].expand(n, -1)]).unsqueeze(1)  # (2N, 1, H)
        h = torch.cat([first, self._const, x_tok.repeat(2, 1, 1)], dim=1)  # (2N, L, H)
        dec = head.decoder
        last = len(dec.blocks) - 1
        length = h.shape[1]
        for i, block in enumerate(dec.blocks):
            h = block_forward(block, h, dec.rope, lin, rows=slice(length - frames, length) if i == last else None)
        out = lin(head.out_proj, dec.norm(h))  # (2N, T, C)
        return out.transpose(1, 2).float()
