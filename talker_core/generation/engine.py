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

The model (:class:`talker_core.models.talker.TalkerModel`), the sampler
(:class:`talker_core.generation.flow_sampler.FlowSampler`) and this engine are separate:
the engine owns the loop, the key/value cache, the histories and the noise.
One patch of the loop is :meth:`TalkerGenerator.step`.

Noise comes from ``torch.Generator().manual_seed(seed)`` on the CPU, per step
the speech noise (1, 32, P) then the motion noise (1, 40, P), a forced stream
drawing none, so a seed gives the same result on every device.

Two implementations of a patch compute the same function:

- the plain path (``TalkerGenerator(model, fast=False)``): the modules' own
  ``forward``, transformers' dynamic key/value cache, the sampler calling the
  DiT head on its CFG pair at every Euler step;
- the fast path (default, :class:`FastPath`): a static key/value cache and a
  fixed-shape patch program (:class:`_PatchProgram`) whose tensors all live in
  preallocated buffers and whose indices (patch, position) are device tensors,
  so one patch runs without a host synchronisation; per-step work of the heads
  reduced to what changes between Euler steps
  (:class:`talker_core.models.dit_head.PatchVelocity`); on the CPU, the heads' and
  patch encoders' linear layers run on weights prepacked for oneDNN
  (:class:`talker_core.models.blocks.LinearKernels`); on CUDA the patch program is
  captured once in a CUDA graph and replayed per patch. The noise of the whole
  run is drawn up front, in the order above, so the draws are the same.
  Results equal the plain path's up to float rounding (tests/test_fast_path.py).

Legend: L prompt tokens, P frames per patch (4), N generated patches,
Ls / Lm reference speech / motion frames, D backbone width, C latent channels.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from talker_core.generation.flow_sampler import FlowSampler, FlowSettings
from talker_core.models.blocks import LinearKernels, plain_linear, tensor_key
from talker_core.models.dit_head import PatchVelocity
from talker_core.models.talker import StaticKVCache, TalkerModel

__all__ = [
    "GenerationMode",
    "SamplingSettings",
    "GenerationOutput",
    "GenerationCancelled",
    "GenerationState",
    "FastPath",
    "TalkerGenerator",
    "release_fast_path",
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


@dataclass(frozen=True)
class FastPath:
    """Which parts of the fast path a :class:`TalkerGenerator` uses.

    enabled:        False runs the plain path (the modules' ``forward``, dynamic cache).
    packed_linears: oneDNN-prepacked weights for the heads' and patch encoders' linear
                    layers on the CPU (:class:`talker_core.models.blocks.LinearKernels`); None = on
                    when oneDNN is available. They cost one extra copy of those weights
                    (about 1.2 GB at release sizes in float32).
    pack_backbone:  also prepack the backbone's linear layers (another copy of the backbone
                    weights; the single-row backbone step gains little from it).
    cuda_graphs:    capture the patch program in a CUDA graph and replay it per patch;
                    None = on when the model is on a CUDA device. A capture that fails
                    falls back to running the same program eagerly (logged once).
    parallel_heads: on the CPU, sample the speech and the motion patch at the same time
                    in two worker threads, each with half of torch's intra-op threads
                    (two independent single-stream jobs use two cores better than
                    one job split over both); None = on when torch uses at least two
                    threads, both streams are sampled and the heads are release-sized
                    (width ≥ 256).
    """

    enabled: bool = True
    packed_linears: Optional[bool] = None
    pack_backbone: bool = False
    cuda_graphs: Optional[bool] = None
    parallel_heads: Optional[bool] = None

    @classmethod
    def off(cls) -> FastPath:
        return cls(enabled=False)


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
    fast: Optional[_FastState] = None
    patches_budget: int = 0


class TalkerGenerator:
    """Runs generation with a :class:`TalkerModel`; reusable across calls (no state between them).

    fast: True / None (default) = :class:`FastPath` defaults, False = the plain path, or a
    :class:`FastPath`. Prepacked weights and captured CUDA graphs are kept per model (not per
    generator), so engines built per request reuse them.
    """

    def __init__(self, model: TalkerModel, sampler: FlowSampler | None = None, fast: bool | FastPath | None = None):
        self.model = model
        self.sampler = sampler or FlowSampler()
        if fast is None or fast is True:
            fast = FastPath()
        elif fast is False:
            fast = FastPath.off()
        elif not isinstance(fast, FastPath):
            raise ValueError(f"fast must be a bool or a FastPath, got {type(fast).__name__}")
        self.fast = fast

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
        on_patch: Optional[Callable[[int, torch.Tensor, Optional[torch.Tensor]], None]] = None,
        on_prefill: Optional[Callable[[GenerationOutput], None]] = None,
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
        on_patch:      called as ``on_patch(index, speech (1, 32, P), motion (1, 40, P) or None)``
                       after each patch, with the patch on the model's device (normalised
                       motion), e.g. to start rendering while generation goes on
                       (:class:`talker_core.models.liax.StreamingRenderer`).
        on_prefill:    called once after the prefill with the output record, whose
                       ``prefix_speech``/``prefix_motion`` are then final (streaming callers
                       emit them before the first patch).
        """
        mode = GenerationMode(mode)
        total = self._patch_budget(mode, forced_speech, forced_motion, max_patches)
        state, out = self.prefill(
            prompt_ids,
            speaker,
            ref_speech=ref_speech,
            ref_motion=ref_motion,
            first_motion=first_motion,
            prefix_frames=prefix_frames,
            mode=mode,
            forced_speech=forced_speech,
            forced_motion=forced_motion,
            settings=settings,
            patches=total,
        )
        if on_prefill is not None:
            on_prefill(out)
        device = self.model.device
        if teacher_speech is not None:
            state.teacher_speech = _forced(
                _check_matrix(teacher_speech, "teacher_speech", self.config.speech_dim), teacher_speech.shape[0], device
            )
        if teacher_motion is not None:
            state.teacher_motion = _forced(
                _check_matrix(teacher_motion, "teacher_motion", self.config.motion_dim), teacher_motion.shape[0], device
            )
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
            speech, motion = self.step(state)
            if on_patch is not None:
                on_patch(index, speech, motion)
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
            first_motion = _check_matrix(
                first_motion.reshape(1, -1) if first_motion.ndim == 1 else first_motion, "first_motion", cfg.motion_dim
            )
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
                tokens = model.speech_tokens(speech_prefix[None], n_prefix) + model.motion_tokens(
                    motion_prefix[None], n_prefix
                )
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

        embeds = torch.cat(embeds, dim=1)
        fast = self._fast_resources(embeds.shape[1] + patches)
        if fast is not None:
            cache = fast.cache
            h = model.run_backbone_static(embeds, cache, fast.backbone_linear)
        else:
            cache = model.new_cache()
            h = model.run_backbone(embeds, cache)
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
            fast=fast,
            patches_budget=patches,
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
        if state.fast is not None:
            return self._step_fast(state)
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

    # ------------------------------------------------------------------ fast path

    def _fast_resources(self, positions: int) -> Optional[_FastState]:
        """The fast-path state of one run (None = plain path): a static cache of ``positions``."""
        opts, model = self.fast, self.model
        if not opts.enabled:
            return None
        if not model.supports_static_cache:
            log.info("fast path off: the backbone config is not plain full-attention Qwen3")
            return None
        res = _model_resources(model, opts)
        if model.device.type != "cpu":
            res.linear.clear()  # packed CPU copies of a model that has moved to another device
        graphs = res.graphs_enabled(model)
        if graphs:
            cache = res.shared_cache(positions)
        else:
            cache = model.new_static_cache(positions)
        cache.reset()
        return _FastState(res, cache, graphs)

    def _step_fast(self, state: GenerationState) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        fast = state.fast
        if fast.program is None:
            fast.program = self._load_program(state)
        program = fast.program
        if state.patches_done >= program.loaded_patches:
            raise ValueError(f"the run's budget of {program.loaded_patches} patches is used up")
        program.run()
        speech = program.out_speech.clone()
        state.speech_patches.append(speech)
        motion = None
        if program.motion_mode != "none":
            motion = program.out_motion.clone()
            state.motion_patches.append(motion)
        state.patches_done += 1
        return speech, motion

    def _load_program(self, state: GenerationState) -> _PatchProgram:
        """Build (or fetch the captured) patch program of this run and load the run into it."""
        fast = state.fast
        variant = (
            "forced" if state.forced_speech is not None else "sample",
            "none" if state.motion_context is None else ("forced" if state.forced_motion is not None else "sample"),
            state.teacher_speech is not None and state.forced_speech is None,
            state.teacher_motion is not None and state.forced_motion is None and state.motion_context is not None,
        )
        if fast.graphs:
            program = fast.resources.program(self, variant, state.flow, fast.cache)
        else:
            program = _PatchProgram(self, variant, state.flow, fast.cache, fast.resources, graphs=False)
        program.load(state)
        state.h = program.h
        state.speech_context = program.speech_context
        if state.motion_context is not None:
            state.motion_context = program.motion_context
        return program

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
    tail = padded[max(0, padded.shape[0] - ctx) :]
    out = torch.zeros(1, frames.shape[1], ctx)
    if tail.shape[0]:
        out[0, :, ctx - tail.shape[0] :] = tail.transpose(0, 1)
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


# --------------------------------------------------------------------------- fast path internals


class _ModelResources:
    """Fast-path resources kept per model: linear kernels, shared caches and captured programs."""

    MAX_PROGRAMS = 4
    CACHE_BUCKET = 256

    def __init__(self, model: TalkerModel, opts: FastPath):
        self._model = weakref.ref(model)
        self.opts = opts
        self.linear = LinearKernels(pack=opts.packed_linears)
        self.backbone_linear = LinearKernels(pack=opts.packed_linears) if opts.pack_backbone else plain_linear
        self.caches: dict[int, StaticKVCache] = {}
        self.programs: collections.OrderedDict[tuple, _PatchProgram] = collections.OrderedDict()
        self.graphs_failed = False
        self._weights_key = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_threads = 0

    def head_pool(self) -> Optional[ThreadPoolExecutor]:
        """Two worker threads with half of torch's intra-op threads each (None below two threads).

        ``torch.set_num_threads`` in a worker sets that thread's count and the default of
        threads started later; the caller's count is set again afterwards so that the
        default stays what it was."""
        threads = torch.get_num_threads()
        if threads < 2:
            return None
        if self._pool is None or self._pool_threads != threads:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(2, thread_name_prefix="talker-heads")
            barrier = threading.Barrier(2)

            def init():
                torch.set_num_threads(threads // 2)
                barrier.wait(timeout=30)

            for f in [pool.submit(init) for _ in range(2)]:
                f.result()
            torch.set_num_threads(threads)
            self._pool, self._pool_threads = pool, threads
        return self._pool

    def graphs_enabled(self, model: TalkerModel) -> bool:
        want = self.opts.cuda_graphs
        on_cuda = _graphs_supported(model)
        if want is None:
            want = on_cuda
        if want and not on_cuda:
            log.debug("cuda_graphs needs the model on a CUDA device; running the patch program eagerly")
            return False
        if want:
            key = _weights_key(model)
            if key != self._weights_key:  # new weights, device or dtype: drop what was built on the old ones
                self.caches.clear()
                self.programs.clear()
                self._weights_key = key
        return bool(want) and not self.graphs_failed

    def shared_cache(self, positions: int) -> StaticKVCache:
        """A cache of at least ``positions`` positions, shared by the captured programs.

        One cache is kept (its capacity a multiple of :attr:`CACHE_BUCKET`); a run that needs
        more replaces it, and the programs captured on the smaller one."""
        fitting = [c for c in self.caches.values() if c.capacity >= positions]
        if fitting:
            return min(fitting, key=lambda c: c.capacity)
        bucket = -(-positions // self.CACHE_BUCKET) * self.CACHE_BUCKET
        self.caches.clear()
        self.programs.clear()
        cache = self.caches[bucket] = self._model().new_static_cache(bucket)
        return cache

    def program(self, engine: TalkerGenerator, variant: tuple, flow: FlowSettings, cache: StaticKVCache):
        key = (variant, flow, cache.capacity)
        program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = _PatchProgram(engine, variant, flow, cache, self, graphs=True)
            while len(self.programs) > self.MAX_PROGRAMS:
                self.programs.popitem(last=False)
        program.engine = engine  # pipelines build one engine per call; the captured graph does not depend on it
        self.programs.move_to_end(key)
        return program


_RESOURCES: weakref.WeakKeyDictionary[TalkerModel, _ModelResources] = weakref.WeakKeyDictionary()


def release_fast_path(model: TalkerModel) -> None:
    """Free what the fast path keeps for ``model`` (prepacked weights, static caches, CUDA graphs,
    worker threads); it is rebuilt on the next generation. For hosts that manage memory."""
    res = _RESOURCES.pop(model, None)
    if res is not None:
        res.linear.clear()
        res.caches.clear()
        res.programs.clear()
        if res._pool is not None:
            res._pool.shutdown(wait=False)


def _model_resources(model: TalkerModel, opts: FastPath) -> _ModelResources:
    res = _RESOURCES.get(model)
    if res is None or res.opts != opts:
        res = _RESOURCES[model] = _ModelResources(model, opts)
    return res


def _weights_key(model: TalkerModel) -> tuple:
    return tuple(tensor_key(p) for p in model.parameters())


@dataclass
class _FastState:
    resources: _ModelResources
    cache: StaticKVCache
    graphs: bool
    program: Optional[_PatchProgram] = None

    @property
    def backbone_linear(self):
        return self.resources.backbone_linear


class _PatchProgram:
    """One patch of the loop as a fixed-shape program over preallocated buffers.

    Buffers (device): ``h`` (1, D) backbone state; ``speech_context`` (1, 32, ctx) and
    ``motion_context`` (1, 40, ctx); ``speaker`` (1, 256); ``first_motion`` (1, 40);
    the run's noise (N, 1, C, P) and given patches (forced or teacher, (N, 1, C, P),
    with a per-patch flag for teachers); ``patch`` and ``position`` (1,) int64 counters;
    ``out_speech`` (1, 32, P), ``out_motion`` (1, 40, P). :meth:`body` reads and writes only
    these and the static cache, so on CUDA it is captured once and replayed.

    variant: (speech "sample"/"forced", motion "sample"/"forced"/"none", speech teacher,
    motion teacher).
    """

    def __init__(
        self,
        engine: TalkerGenerator,
        variant: tuple,
        flow: FlowSettings,
        cache: StaticKVCache,
        resources: _ModelResources,
        graphs: bool,
    ):
        model, cfg = engine.model, engine.config
        self.engine = engine
        self.speech_mode, self.motion_mode, self.teacher_speech, self.teacher_motion = variant
        self.flow = flow
        self.cache = cache
        self.linear = resources.linear
        self.backbone_linear = resources.backbone_linear
        self.resources = resources
        self.graphs = graphs
        self.graph = None
        dev, ps = model.device, cfg.patch_size
        ctx = cfg.context_patches * ps
        capacity = cfg.max_patches
        f32 = dict(device=dev, dtype=torch.float32)
        self.h = torch.zeros(1, cfg.llm.hidden_size, device=dev, dtype=model.dtype)
        self.speech_context = torch.zeros(1, cfg.speech_dim, ctx, **f32)
        self.speaker = torch.zeros(1, cfg.speaker_dim, **f32)
        self.out_speech = torch.zeros(1, cfg.speech_dim, ps, **f32)
        self.patch = torch.zeros(1, dtype=torch.long, device=dev)
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        joint = self.motion_mode != "none"
        self.motion_context = torch.zeros(1, cfg.motion_dim, ctx, **f32) if joint else None
        self.first_motion = torch.zeros(1, cfg.motion_dim, **f32) if joint else None
        self.out_motion = torch.zeros(1, cfg.motion_dim, ps, **f32) if joint else None

        def stream_buffers(mode, teacher, channels):
            noise = torch.zeros(capacity, 1, channels, ps, **f32) if mode == "sample" else None
            given = torch.zeros(capacity, 1, channels, ps, **f32) if (mode == "forced" or teacher) else None
            flags = torch.zeros(capacity, dtype=torch.bool, device=dev) if teacher else None
            return noise, given, flags

        self.noise_speech, self.given_speech, self.flags_speech = stream_buffers(
            self.speech_mode, self.teacher_speech, cfg.speech_dim
        )
        self.noise_motion, self.given_motion, self.flags_motion = stream_buffers(
            self.motion_mode, self.teacher_motion, cfg.motion_dim
        )
        parallel = resources.opts.parallel_heads
        if parallel is None:
            parallel = cfg.dit.hidden_size >= 256
        both = self.speech_mode == "sample" and self.motion_mode == "sample"
        self.parallel = bool(parallel and not graphs and dev.type == "cpu" and both)
        # In a CUDA graph the two heads run on two streams (a fork and a join inside the graph),
        # so their small kernels overlap; outside a graph one stream keeps memory handling simple.
        self.side_stream = torch.cuda.Stream(dev) if (graphs and dev.type == "cuda" and both) else None
        times = engine.sampler.schedule(flow, dev).times
        self.speech_velocity = (
            PatchVelocity(model.speech_cfm.estimator, times, self.linear) if self.speech_mode == "sample" else None
        )
        self.motion_velocity = (
            PatchVelocity(model.motion_cfm.estimator, times, self.linear) if self.motion_mode == "sample" else None
        )
        self.loaded_patches = 0

    # -- per run --------------------------------------------------------------

    def load(self, state: GenerationState) -> None:
        """Copy one run (after its prefill) into the buffers; draws the run's noise from ``state.rng``."""
        cfg = self.engine.config
        ps, n = cfg.patch_size, state.patches_budget
        if n > cfg.max_patches:
            raise ValueError(f"patch budget {n} exceeds the model's {cfg.max_patches}")
        self.h.copy_(state.h)
        self.speech_context.copy_(state.speech_context)
        self.speaker.copy_(state.speaker)
        if self.motion_context is not None:
            self.motion_context.copy_(state.motion_context)
            self.first_motion.copy_(state.first_motion)
        speech_noise, motion_noise = [], []
        for _ in range(n):  # the plain path's draw order: speech, then motion, per patch
            if self.noise_speech is not None:
                speech_noise.append(torch.randn((1, cfg.speech_dim, ps), generator=state.rng))
            if self.noise_motion is not None:
                motion_noise.append(torch.randn((1, cfg.motion_dim, ps), generator=state.rng))
        if n:
            if speech_noise:
                self.noise_speech[:n].copy_(torch.stack(speech_noise))
            if motion_noise:
                self.noise_motion[:n].copy_(torch.stack(motion_noise))
            forced_s = (
                state.forced_speech
                if self.speech_mode == "forced"
                else (state.teacher_speech if self.teacher_speech else None)
            )
            forced_m = (
                state.forced_motion
                if self.motion_mode == "forced"
                else (state.teacher_motion if self.teacher_motion else None)
            )
            for given, flags, frames in (
                (self.given_speech, self.flags_speech, forced_s),
                (self.given_motion, self.flags_motion, forced_m),
            ):
                if given is None:
                    continue
                covered = min(n, frames.shape[-1] // ps)
                given.zero_()
                if covered:
                    patches = frames[:, :, : covered * ps].reshape(1, frames.shape[1], covered, ps)
                    given[:covered].copy_(patches.permute(2, 0, 1, 3))
                if flags is not None:
                    flags.zero_()
                    flags[:covered] = True
        self.patch.zero_()
        self.position.fill_(state.cache.length)
        self.loaded_patches = n

    def run(self) -> None:
        """One patch: replay the captured graph, or run :meth:`body`."""
        if self.graphs and self.graph is None and not self.resources.graphs_failed:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()

    # -- the program ------------------------------------------------------------

    def body(self) -> None:
        engine = self.engine
        model, sampler, flow = engine.model, engine.sampler, self.flow
        idx = self.patch
        mu = self.h.float()

        def stream(mode, teacher, velocity, noise, given, flags, context, global_cond):
            if mode == "forced":
                patch = given.index_select(0, idx)[0]
                return patch, patch
            patch = sampler.sample_prepared(velocity, noise.index_select(0, idx)[0], mu, context, global_cond, flow)
            if teacher:
                use = flags.index_select(0, idx).view(1, 1, 1)
                return patch, torch.where(use, given.index_select(0, idx)[0], patch)
            return patch, patch

        speech_args = (
            self.speech_mode,
            self.teacher_speech,
            self.speech_velocity,
            self.noise_speech,
            self.given_speech,
            self.flags_speech,
            self.speech_context,
            self.speaker,
        )
        motion_args = (
            self.motion_mode,
            self.teacher_motion,
            self.motion_velocity,
            self.noise_motion,
            self.given_motion,
            self.flags_motion,
            self.motion_context,
            self.first_motion,
        )
        pool = self.resources.head_pool() if self.parallel else None
        if self.side_stream is not None:
            main = torch.cuda.current_stream()
            self.side_stream.wait_stream(main)  # everything the motion head reads is ready
            with torch.cuda.stream(self.side_stream):
                motion, fed_motion = stream(*motion_args)
            speech, fed_speech = stream(*speech_args)
            main.wait_stream(self.side_stream)
        elif pool is not None:
            inference = torch.is_inference_mode_enabled()
            futures = [pool.submit(_worker_call, inference, stream, a) for a in (speech_args, motion_args)]
            (speech, fed_speech), (motion, fed_motion) = (f.result() for f in futures)
        else:
            speech, fed_speech = stream(*speech_args)
            if self.motion_mode != "none":
                motion, fed_motion = stream(*motion_args)
        self.out_speech.copy_(speech)
        token = model.speech_tokens(fed_speech.transpose(1, 2), linear=self.linear)
        if self.motion_mode != "none":
            self.out_motion.copy_(motion)
            token = token + model.motion_tokens(fed_motion.transpose(1, 2), linear=self.linear)
            self.motion_context.copy_(_shift_in(self.motion_context, fed_motion))
        else:
            token = token + model.motion_pad_emb
        self.speech_context.copy_(_shift_in(self.speech_context, fed_speech))
        h = model.run_backbone_static(token, self.cache, self.backbone_linear, position=self.position)
        self.h.copy_(h)
        self.patch.add_(1)
        self.position.add_(1)

    def _mutable(self) -> list[torch.Tensor]:
        return [
            t
            for t in (
                self.h,
                self.speech_context,
                self.motion_context,
                self.patch,
                self.position,
                self.out_speech,
                self.out_motion,
            )
            if t is not None
        ]

    def _capture(self) -> None:
        """Capture :meth:`body` (see :func:`_capture_graph`); on failure run eagerly from now on."""
        try:
            self.graph = _capture_graph(self.body, self._mutable())
            log.info("captured the patch program in a CUDA graph")
        except Exception as exc:  # noqa: BLE001 — any capture failure: run eagerly instead
            self.resources.graphs_failed = True
            self.graph = None
            log.warning(
                "CUDA graph capture of the patch step failed (%s: %s); running it eagerly", type(exc).__name__, exc
            )


def _graphs_supported(model: TalkerModel) -> bool:
    return model.device.type == "cuda"


def _capture_graph(body: Callable[[], None], mutable: list[torch.Tensor]):
    """A CUDA graph of ``body()``: two warm-up runs on a side stream (lazy initialisations,
    rotary tables), then the capture; the ``mutable`` buffers are restored after each, so
    the graph starts from the state the caller loaded. Returns the graph (``.replay()``)."""
    saved = [t.clone() for t in mutable]

    def restore():
        for t, s in zip(mutable, saved):
            t.copy_(s)

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                body()
                restore()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:  # other threads (a StreamingRenderer) may use the GPU meanwhile
            capture = torch.cuda.graph(graph, capture_error_mode="thread_local")
        except TypeError:  # torch < 2.1
            capture = torch.cuda.graph(graph)
        with capture:
            body()
        return graph
    finally:
        restore()


def _worker_call(inference: bool, fn, args):
    """Run ``fn(*args)`` in a worker thread under the caller's grad mode (those modes are per thread)."""
    with torch.inference_mode() if inference else torch.no_grad():
        return fn(*args)
