"""Autoregressive generation engine of Talker-T2AV.

Implements the patch-level generation loop of Talker-T2AV (arXiv 2604.23586;
reference ``infer.py``, ``ar_generate_motion_continuation``, for joint
generation and ``speech_llm.py``, ``generate_speech``, for speech only), as
specified in spec GENERATION.md:

- joint text-to-audio-video (T2AV): speech and motion patches sampled each step;
- audio-driven video (A2V): speech forced, motion sampled;
- dubbing (V2A): motion forced, speech sampled;
- speech only (TTS): task token 0 first, ``motion_pad_emb`` in place of motion;
- an optional prefix of reference frames (style continuation);
- stopping by the stop head (threshold, consecutive hits, minimum patches).

The model (:class:`talker_core.talker.TalkerModel`), the sampler
(:class:`talker_core.flow_sampler.FlowSampler`) and this engine are separate:
the engine owns the loop, the key/value cache, the histories and the noise.
One patch of the loop is :meth:`TalkerGenerator.step`.

Noise comes from ``torch.Generator().manual_seed(seed)`` on the CPU, per step
the speech noise (1, 32, P) then the motion noise (1, 40, P), a forced stream
drawing none, so a seed gives the same result on every device.

Legend: L prompt tokens, P frames per patch (4), N generated patches,
Ls / Lm reference speech / motion frames, D backbone width, C latent channels.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .flow_sampler import FlowSampler, FlowSettings
from .talker import TalkerModel

__all__ = [
    "GenerationMode",
    "SamplingSettings",
    "GenerationOutput",
    "GenerationCancelled",
    "GenerationState",
    "TalkerGenerator",
    "JOINT_MIN_PATCHES",
]

log = logging.getLogger(__name__)

# The reference consults the stop head from patch 7 on in joint generation
# (infer.py) and from patch floor(25 frames / 4) = 6 on in speech-only mode.
JOINT_MIN_PATCHES = 7
SPEECH_ONLY_MIN_FRAMES = 25


class GenerationMode(str, enum.Enum):
    """``joint``: speech + motion (T2AV, A2V, V2A); ``speech-only``: TTS."""

    JOINT = "joint"
    SPEECH_ONLY = "speech-only"


class GenerationCancelled(RuntimeError):
    """Raised when ``should_cancel()`` returns True; the engine stays usable."""

    def __init__(self, patches_done: int):
        super().__init__(f"generation cancelled after {patches_done} patch(es)")
        self.patches_done = patches_done


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling and stopping settings (paper recipe as defaults).

    steps, temperature, cfg, sway, cfg_zero_star: flow sampler settings per patch.
    stop_threshold:   stop probability counted as a stop vote.
    stop_consecutive: consecutive votes that end the generation (a lower p resets).
    stop_min_patches: first patch at which the stop head is consulted; None = the
                      mode's reference value (7 joint, 6 speech only).
    seed:             seed of the CPU noise generator.
    """

    steps: int = 10
    temperature: float = 0.3
    cfg: float = 2.0
    sway: float = 1.0
    cfg_zero_star: bool = True
    stop_threshold: float = 0.5
    stop_consecutive: int = 3
    stop_min_patches: Optional[int] = None
    seed: int = 0

    def __post_init__(self):
        self.flow()  # validates the sampler fields
        if not 0.0 <= self.stop_threshold <= 1.0:
            raise ValueError(f"stop_threshold must be in [0, 1], got {self.stop_threshold}")
        if self.stop_consecutive < 1:
            raise ValueError(f"stop_consecutive must be >= 1, got {self.stop_consecutive}")
        if self.stop_min_patches is not None and self.stop_min_patches < 0:
            raise ValueError(f"stop_min_patches must be >= 0, got {self.stop_min_patches}")

    def flow(self) -> FlowSettings:
        """The per-patch :class:`FlowSettings`."""
        return FlowSettings(self.steps, self.temperature, self.cfg, self.sway, self.cfg_zero_star)


@dataclass
class GenerationOutput:
    """What one generation produced (CPU, float32).

    gen_speech:     (N·P, 32) generated speech latents (prefix excluded; in A2V the
                    forced latents, zero-padded to whole patches).
    gen_motion:     (N·P, 40) generated normalised motion (in V2A the forced codes,
                    zero-padded), or None in speech-only mode.
    p_stop:         stop probabilities evaluated, in order.
    steps:          N, patches generated.
    stopped:        True when the stop head ended the generation.
    prefill_hidden: (D,) backbone output at the last prefill position.
    prefix_speech:  (Fs, 32) reference latents to put before ``gen_speech`` for decoding.
    prefix_motion:  (Fm, 40) normalised reference motion before ``gen_motion``, or None.
    """

    gen_speech: torch.Tensor
    gen_motion: Optional[torch.Tensor]
    p_stop: list[float]
    steps: int
    stopped: bool
    prefill_hidden: torch.Tensor
    prefix_speech: torch.Tensor
    prefix_motion: Optional[torch.Tensor]


@dataclass
class GenerationState:
    """Everything one running generation carries from patch to patch (device tensors).

    cache:          backbone key/value cache.
    h:              (1, D) backbone state that conditions the next patch.
    speech_context: (1, 32, ctx) last context frames of speech.
    motion_context: (1, 40, ctx) last context frames of motion, or None (speech only).
    speaker:        (1, 256) speech head global condition.
    first_motion:   (1, 40) motion head global condition, or None.
    forced_speech:  (1, 32, N·P) forced speech, or None.
    forced_motion:  (1, 40, N·P) forced motion, or None.
    rng:            CPU noise generator.
    flow:           per-patch sampler settings.
    teacher_speech, teacher_motion: (1, C, F) frames fed back instead of the sampled
                    ones while they last (teacher forcing, diagnostics), or None.
    """

    cache: object
    h: torch.Tensor
    speech_context: torch.Tensor
    motion_context: Optional[torch.Tensor]
    speaker: torch.Tensor
    first_motion: Optional[torch.Tensor]
    forced_speech: Optional[torch.Tensor]
    forced_motion: Optional[torch.Tensor]
    rng: torch.Generator
    flow: FlowSettings
    teacher_speech: Optional[torch.Tensor] = None
    teacher_motion: Optional[torch.Tensor] = None
    patches_done: int = 0
    speech_patches: list = field(default_factory=list)
    motion_patches: list = field(default_factory=list)


class TalkerGenerator:
    """Runs generation with a :class:`TalkerModel`; reusable across calls (no state between them)."""

    def __init__(self, model: TalkerModel, sampler: FlowSampler | None = None):
        self.model = model
        self.sampler = sampler or FlowSampler()

    @property
    def config(self):
        return self.model.config

    # ------------------------------------------------------------------ public

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        speaker: torch.Tensor,
        *,
        ref_speech: Optional[torch.Tensor] = None,
        ref_motion: Optional[torch.Tensor] = None,
        first_motion: Optional[torch.Tensor] = None,
        prefix_frames: int = 0,
        mode: GenerationMode | str = GenerationMode.JOINT,
        forced_speech: Optional[torch.Tensor] = None,
        forced_motion: Optional[torch.Tensor] = None,
        settings: SamplingSettings = SamplingSettings(),
        max_patches: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        teacher_speech: Optional[torch.Tensor] = None,
        teacher_motion: Optional[torch.Tensor] = None,
    ) -> GenerationOutput:
        """Generate speech (and motion) patch by patch.

        prompt_ids:    (1, L) int64, the chat-templated prompt up to the first speech placeholder.
        speaker:       (256,) speaker embedding (speech head global condition).
        ref_speech:    (Ls, 32) reference speech latents; needed when prefix_frames > 0.
        ref_motion:    (Lm, 40) normalised reference motion, the prefix source; joint
                       mode only (ignored in speech-only mode).
        first_motion:  (40,) normalised motion head global condition (the identity
                       image's code); default ``ref_motion[0]``. Joint mode needs one
                       of the two. Long-form continuation passes the original first
                       frame here while ``ref_motion`` is the previous segment's tail.
        prefix_frames: reference frames fed before generating. Joint mode uses whole
                       patches: the value is clipped to the motion reference
                       (rounded down to whole patches, at least one patch) and
                       rounded down to a multiple of P; speech only clips it to Ls
                       and pads the last patch.
        mode:          ``"joint"`` or ``"speech-only"``.
        forced_speech: (F, 32) latents to force (A2V); joint mode only.
        forced_motion: (F, 40) normalised motion to force (V2A); joint mode only.
                       With a forced stream the run lasts ceil(F / P) patches and the
                       stop head is not consulted.
        max_patches:   most patches to generate (default and maximum: the model's
                       ``max_frames / P``).
        progress:      called as ``progress(patches_done, patches_max)`` after each patch.
        should_cancel: polled before each patch; True raises :class:`GenerationCancelled`.
        teacher_speech, teacher_motion: (F, C) teacher forcing, a diagnostic: each patch
                       is still sampled (same noise draws) and returned, but these
                       frames are what is fed back and used as context, as far as
                       they reach. Checking one step at a time against a stored run
                       this way is immune to the growth of float32 rounding
                       differences that free-running sampling amplifies.
        """
        mode = GenerationMode(mode)
        total = self._patch_budget(mode, forced_speech, forced_motion, max_patches)
        state, out = self.prefill(
            prompt_ids, speaker, ref_speech=ref_speech, ref_motion=ref_motion, first_motion=first_motion,
            prefix_frames=prefix_frames,
            mode=mode, forced_speech=forced_speech, forced_motion=forced_motion, settings=settings, patches=total,
        )
        device = self.model.device
        if teacher_speech is not None:
            state.teacher_speech = _forced(_check_matrix(teacher_speech, "teacher_speech", self.config.speech_dim),
                                           teacher_speech.shape[0], device)
        if teacher_motion is not None:
            state.teacher_motion = _forced(_check_matrix(teacher_motion, "teacher_motion", self.config.motion_dim),
                                           teacher_motion.shape[0], device)
        forced = forced_speech is not None or forced_motion is not None
        use_stop = not forced
        min_patches = settings.stop_min_patches
        if min_patches is None:
            min_patches = (
                JOINT_MIN_PATCHES if mode is GenerationMode.JOINT else SPEECH_ONLY_MIN_FRAMES // self.config.patch_size
            )
        streak = 0
        for index in range(total):
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(index)
            if use_stop and index >= min_patches:
                p = float(self.model.stop_probability(state.h)[0])
                out.p_stop.append(p)
                streak = streak + 1 if p >= settings.stop_threshold else 0
                if streak >= settings.stop_consecutive:
                    out.stopped = True
                    break
            self.step(state)
            if progress is not None:
                progress(index + 1, total)
        return self._finish(state, out)

    def prefill(
        self,
        prompt_ids: torch.Tensor,
        speaker: torch.Tensor,
        *,
        ref_speech: Optional[torch.Tensor],
        ref_motion: Optional[torch.Tensor],
        first_motion: Optional[torch.Tensor],
        prefix_frames: int,
        mode: GenerationMode,
        forced_speech: Optional[torch.Tensor],
        forced_motion: Optional[torch.Tensor],
        settings: SamplingSettings,
        patches: int,
    ) -> tuple[GenerationState, GenerationOutput]:
        """Validate inputs, run the backbone over the prompt (+ prefix) and set up the state.

        Returns the state for :meth:`step` and an output record whose ``gen_*``
        fields are filled by :meth:`generate`. ``patches`` is the run's patch budget
        (forced streams are padded to it).
        """
        model, cfg = self.model, self.config
        ps, device = cfg.patch_size, model.device
        joint = mode is GenerationMode.JOINT

        prompt_ids = _check_prompt(prompt_ids)
        speaker = _check_matrix(speaker.reshape(1, -1) if speaker.ndim == 1 else speaker, "speaker", cfg.speaker_dim)
        if speaker.shape[0] != 1:
            raise ValueError(f"speaker must be one embedding of shape ({cfg.speaker_dim},), got {tuple(speaker.shape)}")
        if prefix_frames < 0:
            raise ValueError(f"prefix_frames must be >= 0, got {prefix_frames}")
        if ref_speech is not None:
            ref_speech = _check_matrix(ref_speech, "ref_speech", cfg.speech_dim)
        if ref_motion is not None:
            ref_motion = _check_matrix(ref_motion, "ref_motion", cfg.motion_dim)
        if forced_speech is not None:
            forced_speech = _check_matrix(forced_speech, "forced_speech", cfg.speech_dim)
        if forced_motion is not None:
            forced_motion = _check_matrix(forced_motion, "forced_motion", cfg.motion_dim)
        if first_motion is not None:
            first_motion = _check_matrix(first_motion.reshape(1, -1) if first_motion.ndim == 1 else first_motion,
                                         "first_motion", cfg.motion_dim)
            if first_motion.shape[0] != 1:
                raise ValueError(f"first_motion must have shape ({cfg.motion_dim},), got {tuple(first_motion.shape)}")
        elif joint:
            if ref_motion is None or ref_motion.shape[0] == 0:
                raise ValueError(
                    "joint generation needs first_motion (40,) or ref_motion (Lm, 40) with at least one frame"
                )
            first_motion = ref_motion[:1]
        empty_speech = torch.zeros(0, cfg.speech_dim)

        embeds = [model.embed_prompt(prompt_ids)]
        if joint:
            lm = ref_motion.shape[0] if ref_motion is not None else 0
            # the reference keeps whole patches of the motion reference, at least one
            limit = max((lm // ps) * ps, ps) if lm else 0
            n_prefix = min(prefix_frames, limit) // ps
            pf = n_prefix * ps
            if n_prefix and ref_speech is None:
                raise ValueError("a prefix needs ref_speech (Ls, 32)")
            speech_prefix = (ref_speech if ref_speech is not None else empty_speech)[:pf]
            motion_prefix = (ref_motion if ref_motion is not None else torch.zeros(0, cfg.motion_dim))[:pf]
            if n_prefix:
                tokens = model.speech_tokens(speech_prefix[None], n_prefix) + model.motion_tokens(motion_prefix[None], n_prefix)
                tokens[:, 0] += model.task_token(TalkerModel.TASK_JOINT)
                embeds.append(tokens)
        else:
            if forced_speech is not None or forced_motion is not None:
                raise ValueError("forced streams need joint mode; speech-only mode generates speech only")
            embeds.insert(0, model.task_token(TalkerModel.TASK_SPEECH_ONLY)[None])
            pf = min(prefix_frames, ref_speech.shape[0]) if ref_speech is not None else 0
            if prefix_frames and ref_speech is None:
                raise ValueError("a prefix needs ref_speech (Ls, 32)")
            speech_prefix = (ref_speech if ref_speech is not None else empty_speech)[:pf]
            motion_prefix = None
            if pf:
                embeds.append(model.speech_tokens(speech_prefix[None]) + model.motion_pad_emb)

        cache = model.new_cache()
        h = model.run_backbone(torch.cat(embeds, dim=1), cache)
        ctx = cfg.context_patches * ps
        state = GenerationState(
            cache=cache,
            h=h,
            speech_context=_context(speech_prefix, ctx, ps, device),
            motion_context=_context(motion_prefix, ctx, ps, device) if joint else None,
            speaker=speaker.to(device),
            first_motion=first_motion.to(device) if joint else None,
            forced_speech=_forced(forced_speech, patches * ps, device),
            forced_motion=_forced(forced_motion, patches * ps, device),
            rng=torch.Generator().manual_seed(int(settings.seed)),
            flow=settings.flow(),
        )
        out = GenerationOutput(
            gen_speech=empty_speech,
            gen_motion=None,
            p_stop=[],
            steps=0,
            stopped=False,
            prefill_hidden=h[0].float().cpu(),
            prefix_speech=speech_prefix.clone(),
            prefix_motion=motion_prefix.clone() if motion_prefix is not None else None,
        )
        return state, out

    def step(self, state: GenerationState) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Produce one patch and feed it back.

        Samples (or takes the forced) speech patch, then the motion patch, encodes
        them into the next backbone token, runs the backbone one position and
        updates ``state`` (h, contexts, collected patches). Returns the speech
        patch (1, 32, P) and the motion patch (1, 40, P) or None, float32.
        """
        model, cfg, sampler = self.model, self.config, self.sampler
        ps = cfg.patch_size
        frames = slice(state.patches_done * ps, (state.patches_done + 1) * ps)
        mu = state.h.float()

        if state.forced_speech is not None:
            speech = state.forced_speech[:, :, frames]
        else:
            noise = torch.randn((1, cfg.speech_dim, ps), generator=state.rng)
            speech = sampler.sample(
                model.speech_cfm.estimator, noise, mu, state.speech_context, state.speaker, state.flow
            )
        motion = None
        if state.motion_context is not None:
            if state.forced_motion is not None:
                motion = state.forced_motion[:, :, frames]
            else:
                noise = torch.randn((1, cfg.motion_dim, ps), generator=state.rng)
                motion = sampler.sample(
                    model.motion_cfm.estimator, noise, mu, state.motion_context, state.first_motion, state.flow
                )

        state.speech_patches.append(speech)
        fed_speech = speech if state.forced_speech is not None else _teacher_or(state.teacher_speech, frames, speech)
        token = model.speech_tokens(fed_speech.transpose(1, 2))
        if motion is not None:
            state.motion_patches.append(motion)
            fed_motion = (
                motion if state.forced_motion is not None else _teacher_or(state.teacher_motion, frames, motion)
            )
            token = token + model.motion_tokens(fed_motion.transpose(1, 2))
            state.motion_context = _shift_in(state.motion_context, fed_motion)
        else:
            token = token + model.motion_pad_emb
        state.speech_context = _shift_in(state.speech_context, fed_speech)
        state.h = model.run_backbone(token, state.cache)
        state.patches_done += 1
        return speech, motion

    # ------------------------------------------------------------------ internals

    def _patch_budget(self, mode, forced_speech, forced_motion, max_patches) -> int:
        cfg = self.config
        cap = cfg.max_patches
        if max_patches is not None and not 0 <= max_patches <= cap:
            raise ValueError(
                f"max_patches must be in [0, {cap}] ({cfg.max_frames} frames per segment, the model's "
                f"training length), got {max_patches}; split longer requests into segments"
            )
        if forced_speech is not None and forced_motion is not None:
            raise ValueError("force at most one stream (forced_speech for A2V or forced_motion for V2A)")
        forced = forced_speech if forced_speech is not None else forced_motion
        if forced is None:
            return cap if max_patches is None else max_patches
        if forced.shape[0] > cfg.max_frames:
            raise ValueError(
                f"the forced stream has {forced.shape[0]} frames, more than the {cfg.max_frames} the model "
                "generates per segment; split it into segments"
            )
        needed = -(-forced.shape[0] // cfg.patch_size)
        return needed if max_patches is None else min(needed, max_patches)

    def _finish(self, state: GenerationState, out: GenerationOutput) -> GenerationOutput:
        cfg = self.config
        out.steps = state.patches_done
        if state.speech_patches:
            out.gen_speech = torch.cat(state.speech_patches, dim=2)[0].transpose(0, 1).float().cpu()
        else:
            out.gen_speech = torch.zeros(0, cfg.speech_dim)
        if state.motion_context is not None:
            if state.motion_patches:
                out.gen_motion = torch.cat(state.motion_patches, dim=2)[0].transpose(0, 1).float().cpu()
            else:
                out.gen_motion = torch.zeros(0, cfg.motion_dim)
        return out


def _check_prompt(prompt_ids: torch.Tensor) -> torch.Tensor:
    if prompt_ids.ndim == 1:
        prompt_ids = prompt_ids[None]
    if prompt_ids.ndim != 2 or prompt_ids.shape[0] != 1 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must have shape (1, L) with L >= 1, got {tuple(prompt_ids.shape)}")
    if prompt_ids.is_floating_point() or prompt_ids.is_complex():
        raise ValueError(f"prompt_ids must be integer token ids, got {prompt_ids.dtype}")
    return prompt_ids.long()


def _check_matrix(x: torch.Tensor, name: str, width: int) -> torch.Tensor:
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must have shape (frames, {width}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.detach().float().cpu()


def _context(frames: Optional[torch.Tensor], ctx: int, ps: int, device) -> torch.Tensor:
    """Head context (1, C, ctx): the last whole patches of ``frames`` (F, C), zero-padded
    to a whole patch, right-aligned; zeros where there is no history."""
    if frames is None:
        raise ValueError("internal: no frames for a context")
    padded = F.pad(frames, (0, 0, 0, (-frames.shape[0]) % ps))
    tail = padded[max(0, padded.shape[0] - ctx):]
    out = torch.zeros(1, frames.shape[1], ctx)
    if tail.shape[0]:
        out[0, :, ctx - tail.shape[0]:] = tail.transpose(0, 1)
    return out.to(device)


def _forced(frames: Optional[torch.Tensor], length: int, device) -> Optional[torch.Tensor]:
    """(F, C) → (1, C, length) zero-padded (or cut), on ``device``."""
    if frames is None:
        return None
    frames = frames[:length]
    frames = F.pad(frames, (0, 0, 0, length - frames.shape[0]))
    return frames.transpose(0, 1)[None].contiguous().to(device)


def _teacher_or(teacher: Optional[torch.Tensor], frames: slice, patch: torch.Tensor) -> torch.Tensor:
    """The teacher's frames for this patch when it covers them, else ``patch``."""
    if teacher is None or teacher.shape[-1] < frames.stop:
        return patch
    return teacher[:, :, frames]


def _shift_in(context: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Drop the oldest patch of ``context`` (1, C, ctx) and append ``patch`` (1, C, P)."""
    p = patch.shape[-1]
    if context.shape[-1] == p:
        return patch
    return torch.cat([context[..., p:], patch], dim=-1)
