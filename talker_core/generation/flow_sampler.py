"""Euler sampler for the OT-CFM flow-matching heads of Talker-T2AV.

Implements the per-patch sampler of Talker-T2AV (arXiv 2604.23586; reference
``unified_cfm.py``, ``UnifiedCFM.forward``/``solve_euler``), spec MODEL.md §5.
The sampler holds no weights: it drives any velocity estimator with the
signature of :class:`talker_core.models.dit_head.DiTHead`
``estimator(x, mu, t, cond, global_cond, dt) -> v``.

    x_0   = noise · temperature                    (noise: caller's unscaled N(0, 1))
    grid  = linspace(1, 0, steps+1);  grid += sway · (cos(π/2·grid) − 1 + grid)
    for each step k: v = 0 for the first max(1, int(0.04·(steps+1))) steps when
        CFG-zero-star is on; otherwise the estimator on a batch of two (mu and
        mu = 0, same x/cond/global), s* = <v_c, v_u> / (|v_u|² + 1e-8) per sample
        (1 without CFG-zero-star), v = s*·v_u + cfg·(v_c − s*·v_u);
        x ← x − Δ_k·v

The time and step sizes follow the reference's own float32 recursion
(t ← t − Δ, Δ ← t − grid[k+1]), computed once per settings and device. All of
the sampler's arithmetic is float32; the estimator sees its own dtype.

:meth:`FlowSampler.sample` drives a plain estimator; the generation fast path drives
a prepared CFG-pair velocity (:func:`talker_core.fast.heads.sample_prepared`). Both share
:meth:`FlowSampler.integrate`, the Euler loop, whose step sizes are Python floats: no
host synchronisation per step.

Legend: N batch, C latent channels, T frames of the patch, Tc context frames,
D backbone width, G global condition width.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from talker_core.params import default

__all__ = ["FlowSettings", "FlowSchedule", "FlowSampler", "Estimator"]

log = logging.getLogger(__name__)

Estimator = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class FlowSettings:
    """One patch's sampler settings (paper recipe as defaults).

    steps:         Euler steps.
    temperature:   scale of the initial noise.
    cfg:           classifier-free guidance scale (1 = conditional velocity only).
    sway:          sway-sampling coefficient (0 = uniform time grid).
    cfg_zero_star: zero velocity for the first steps and the optimised CFG scale s*.
    """

    steps: int = default("steps")
    temperature: float = default("temperature")
    cfg: float = default("cfg")
    sway: float = default("sway")
    cfg_zero_star: bool = default("cfg_zero_star")

    def __post_init__(self):
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"flow sampler steps must be a positive integer, got {self.steps!r}")
        for name in ("temperature", "cfg", "sway"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"flow sampler {name} must be finite, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"flow sampler temperature must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class FlowSchedule:
    """The precomputed time grid of one :class:`FlowSettings` on one device.

    times:  (steps, 1) float32 on the device: flow time fed to the estimator at each step.
    deltas: per-step Euler step sizes (Python floats holding float32 values).
    first:  index of the first step that evaluates the estimator (earlier steps
            have zero velocity under CFG-zero-star and leave x unchanged).
    """

    times: torch.Tensor
    deltas: tuple[float, ...]
    first: int


def _build_schedule(settings: FlowSettings, device: torch.device) -> FlowSchedule:
    grid = torch.linspace(1, 0, settings.steps + 1, dtype=torch.float32)
    grid = grid + settings.sway * (torch.cos(torch.pi / 2 * grid) - 1 + grid)
    t = grid[0]
    delta = grid[0] - grid[1]
    times, deltas = [], []
    for k in range(1, settings.steps + 1):
        times.append(t)
        deltas.append(delta)
        t = t - delta
        if k < settings.steps:
            delta = t - grid[k + 1]
    zero_steps = max(1, int((settings.steps + 1) * 0.04)) if settings.cfg_zero_star else 0
    return FlowSchedule(
        times=torch.stack(times).reshape(-1, 1).to(device),
        deltas=tuple(float(d) for d in deltas),
        first=min(zero_steps, settings.steps),
    )


class FlowSampler:
    """Euler OT-CFM sampler with sway sampling, CFG and CFG-zero-star.

    Stateless apart from a cache of time grids keyed by (settings, device).
    """

    def __init__(self):
        self._schedules: dict[tuple[FlowSettings, torch.device], FlowSchedule] = {}

    def schedule(self, settings: FlowSettings, device: torch.device | str) -> FlowSchedule:
        """The (cached) :class:`FlowSchedule` of ``settings`` on ``device``."""
        key = (settings, torch.device(device))
        sched = self._schedules.get(key)
        if sched is None:
            sched = self._schedules[key] = _build_schedule(settings, key[1])
        return sched

    @torch.no_grad()
    def sample(
        self,
        estimator: Estimator,
        noise: torch.Tensor,
        mu: torch.Tensor,
        cond: torch.Tensor,
        global_cond: torch.Tensor,
        settings: FlowSettings = FlowSettings(),
    ) -> torch.Tensor:
        """Integrate the flow from noise to a sample.

        estimator: velocity network, ``estimator(x, mu, t, cond, global_cond, dt)``.
        noise:       (N, C, T) unscaled N(0, 1) draw (any device; moved to mu's).
        mu:          (N, D) backbone state (the conditional input).
        cond:        (N, C, Tc) context frames.
        global_cond: (N, G) global condition.
        Returns the sample (N, C, T), float32 on mu's device.
        """
        device = mu.device
        sched = self.schedule(settings, device)
        x = noise.to(device=device, dtype=torch.float32) * settings.temperature
        if sched.first >= settings.steps:
            return x
        n = x.shape[0]
        if mu.shape[0] != n or cond.shape[0] != n or global_cond.shape[0] != n:
            raise ValueError(
                f"batch sizes differ: noise {tuple(noise.shape)}, mu {tuple(mu.shape)}, "
                f"cond {tuple(cond.shape)}, global_cond {tuple(global_cond.shape)}"
            )
        dtype = _dtype_of(estimator)
        # Batch of two: rows [0, n) conditional, [n, 2n) unconditional (mu = 0).
        mu_in = torch.cat([mu, torch.zeros_like(mu)]).to(dtype)
        cond_in = cond.to(dtype).repeat(2, 1, 1)
        global_in = global_cond.to(dtype).repeat(2, 1)
        dt_in = torch.zeros(2 * n, device=device, dtype=dtype)
        times = sched.times.to(dtype).expand(-1, 2 * n)

        def velocity(x: torch.Tensor, k: int) -> torch.Tensor:
            return estimator(x.to(dtype).repeat(2, 1, 1), mu_in, times[k], cond_in, global_in, dt_in).float()

        return self.integrate(velocity, x, sched, settings)

    @staticmethod
    def integrate(velocity, x: torch.Tensor, sched: FlowSchedule, settings: FlowSettings) -> torch.Tensor:
        """The Euler loop: ``velocity(x, k)`` → (2N, C, T) float32 velocities of the CFG pair
        (rows [0, N) conditional, [N, 2N) unconditional); guidance and update in float32.
        No host synchronisation: the step sizes are Python floats. x: (N, C, T) → (N, C, T)."""
        n = x.shape[0]
        for k in range(sched.first, settings.steps):
            v = velocity(x, k)
            v_cond, v_uncond = v[:n], v[n:]
            if settings.cfg_zero_star:
                dot = (v_cond * v_uncond).flatten(1).sum(dim=1)
                norm = v_uncond.pow(2).flatten(1).sum(dim=1) + 1e-8
                s_star = (dot / norm).view(n, *([1] * (v.ndim - 1)))
                base = v_uncond * s_star
            else:
                base = v_uncond
            v = base + settings.cfg * (v_cond - base)
            x = x - sched.deltas[k] * v
        return x


def _dtype_of(estimator: Estimator) -> torch.dtype:
    params = getattr(estimator, "parameters", None)
    if params is not None:
        for p in params():
            if p.is_floating_point():
                return p.dtype
    return torch.float32
