"""The heads and patch encoders of one patch, reduced to the work that changes (fast path).

- :class:`PatchVelocity` evaluates a :class:`talker_core.models.dit_head.DiTHead` for the
  flow sampler's CFG pair (conditional ``mu`` and unconditional zeros) at step k of a
  fixed time grid, with everything that does not change between the Euler steps computed
  once: the time embeddings of the whole grid (once per grid), the projected global and
  context tokens and the projected first token of every step (once per patch). Only the x
  tokens and the transformer blocks run per step, and the last block computes its output
  for the last T positions only.
- :func:`sample_prepared` is :meth:`FlowSampler.sample` driving a :class:`PatchVelocity`
  (the same Euler loop, :meth:`FlowSampler.integrate`).
- :func:`encode_patches` is :meth:`PatchEncoder.forward` with a choice of linear kernel and
  the last block computed for the CLS position only; :func:`patch_tokens` is
  ``TalkerModel.speech_tokens`` / ``motion_tokens`` built on it.

Each equals the plain module up to float rounding (tests/test_fast_path.py). Nothing here
synchronises with the host, so a loop over it can be captured in a CUDA graph.

Legend: N batch, C channels of the latent, T frames, Tc context frames, G global condition
width, H head width (= backbone width D), S steps, B batch, P frames per patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from talker_core.fast.kernels import Linear, block_forward, plain_linear
from talker_core.generation.flow_sampler import FlowSampler, FlowSettings
from talker_core.models.blocks import TransformerBlock
from talker_core.models.dit_head import DiTHead, TimeMLP, timestep_sinusoid
from talker_core.models.patch_encoder import PatchEncoder

if TYPE_CHECKING:
    from talker_core.models.talker import TalkerModel

__all__ = ["PatchVelocity", "sample_prepared", "encode_patches", "patch_tokens"]


def _blocks(blocks: torch.nn.ModuleList) -> list[TransformerBlock]:
    return [b for b in blocks if isinstance(b, TransformerBlock)]


def _time_embedding(head: DiTHead, t: torch.Tensor, dt: torch.Tensor, linear: Linear) -> torch.Tensor:
    """``head.time_embedding(t, dt)`` with the linear kernel ``linear``: (N,), (N,) → (N, H)."""
    dtype, width = head.in_proj.weight.dtype, head.config.hidden_size

    def mlp(m: TimeMLP, x: torch.Tensor) -> torch.Tensor:
        return linear(m.linear_2, F.silu(linear(m.linear_1, x)))

    temb = mlp(head.time_mlp, timestep_sinusoid(t, width).to(dtype))
    return temb + mlp(head.delta_time_mlp, timestep_sinusoid(dt, width).to(dtype))


class PatchVelocity:
    """Velocities of one head for the flow sampler's CFG pair on a fixed time grid.

    ``velocity(x, k)`` equals ``head(x.repeat(2, 1, 1), [mu; 0], times[k], cond.repeat(2, 1, 1),
    global.repeat(2, 1), 0)`` (up to float rounding) for the ``mu``, ``cond`` and ``global``
    given to :meth:`begin`: rows [0, N) conditional, [N, 2N) unconditional.

    head:   the :class:`DiTHead`.
    times:  (S,) float32 flow times of the grid (the sampler's schedule).
    linear: linear kernel (:class:`talker_core.fast.kernels.LinearKernels` or ``plain_linear``).

    The time embeddings of the grid are computed here, once; :meth:`begin` does the
    per-patch work; :meth:`__call__` the per-step work.
    """

    def __init__(self, head: DiTHead, times: torch.Tensor, linear: Linear = plain_linear):
        self.head = head
        self.linear = linear
        dtype = head.in_proj.weight.dtype
        device = head.in_proj.weight.device
        times = times.reshape(-1).to(device=device, dtype=torch.float32)
        self.steps = times.shape[0]
        with torch.no_grad():
            temb = _time_embedding(head, times.to(dtype), torch.zeros_like(times).to(dtype), linear)  # (S, H)
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
        if self._const is None or self._first_cond is None:
            raise RuntimeError("PatchVelocity.begin() must be called before the steps of a patch")
        n, _, frames = x.shape
        dtype = self._const.dtype
        x_tok = lin(head.decoder.input_proj, lin(head.in_proj, x.transpose(1, 2).to(dtype)))  # (N, T, H)
        first = torch.cat([self._first_cond[k], self.first_uncond[k].expand(n, -1)]).unsqueeze(1)  # (2N, 1, H)
        h = torch.cat([first, self._const, x_tok.repeat(2, 1, 1)], dim=1)  # (2N, L, H)
        dec = head.decoder
        last = len(dec.blocks) - 1
        length = h.shape[1]
        for i, block in enumerate(_blocks(dec.blocks)):
            h = block_forward(block, h, dec.rope, lin, rows=slice(length - frames, length) if i == last else None)
        out = lin(head.out_proj, dec.norm(h))  # (2N, T, C)
        return out.transpose(1, 2).float()


@torch.no_grad()
def sample_prepared(
    sampler: FlowSampler,
    velocity: PatchVelocity,
    noise: torch.Tensor,
    mu: torch.Tensor,
    cond: torch.Tensor,
    global_cond: torch.Tensor,
    settings: FlowSettings,
) -> torch.Tensor:
    """``sampler.sample(head, noise, mu, cond, global_cond, settings)`` with a prepared velocity.

    velocity: a :class:`PatchVelocity` built on ``sampler.schedule(settings, device).times``;
    ``velocity.begin(mu, cond, global_cond)`` is called here, then ``velocity(x, k)`` per step.
    Shapes as in :meth:`FlowSampler.sample`; returns (N, C, T) float32 on mu's device.
    """
    sched = sampler.schedule(settings, mu.device)
    x = noise.to(device=mu.device, dtype=torch.float32) * settings.temperature
    if sched.first >= settings.steps:
        return x
    velocity.begin(mu, cond, global_cond)
    return sampler.integrate(velocity, x, sched, settings)


def encode_patches(encoder: PatchEncoder, frames: torch.Tensor, linear: Linear = plain_linear) -> torch.Tensor:
    """``encoder(frames)``: frames (B, T, P, D) → tokens (B, T, H), the last block for the CLS
    position only, linear layers through ``linear``."""
    b, t, _p, _ = frames.shape
    x = linear(encoder.input_proj, frames)
    cls = encoder.cls_token.to(x.dtype).expand(b, t, 1, -1)
    x = torch.cat([cls, x], dim=2).flatten(0, 1)  # (B·T, P+1, H)
    last = len(encoder.blocks) - 1
    for i, block in enumerate(_blocks(encoder.blocks)):
        x = block_forward(block, x, encoder.rope, linear, rows=slice(0, 1) if i == last else None)
    return encoder.norm(x[:, 0]).view(b, t, -1)


def patch_tokens(model: TalkerModel, stream: str, frames: torch.Tensor, linear: Linear = plain_linear) -> torch.Tensor:
    """``model.speech_tokens(frames)`` (stream ``"speech"``) or ``model.motion_tokens(frames)``
    (``"motion"``) with the linear kernel ``linear``: (B, F, C) → (B, ceil(F / P), D)."""
    projector = model.projector_speech if stream == "speech" else model.projector_motion
    encoder = model.speech_patch_encoder if stream == "speech" else model.motion_patch_encoder
    proj = linear(projector.linear1, frames.to(device=model.device, dtype=model.dtype))
    return encode_patches(encoder, model.patches_of(proj), linear)
