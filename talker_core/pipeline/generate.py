"""Generation from a request: wiring checks, prefix selection, long-form segments."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from talker_core.pipeline._helpers import check_finite
from talker_core.pipeline.request import (
    MAX_SEGMENT_FRAMES,
    MAX_TEXT_CHARS,
    Cancelled,
    Hooks,
    Mode,
    TalkRequest,
    TalkResult,
)
from talker_core.pipeline.text import split_text
from talker_core.types import (
    FPS,
    PATCH,
    Identity,
    MotionCodes,
    SpeakerReference,
    SpeechLatents,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# generation


@dataclass
class _Segment:
    text: str
    forced: Optional[torch.Tensor] = None  # (F, C) window of the forced stream


def _segment_seed(seed: int, index: int) -> int:
    """Seed of segment ``index``: the request's seed for the first, a fixed derivation after."""
    return seed if index == 0 else (seed + 1_000_003 * index) % (2**63)


def _forced_windows(
    forced: torch.Tensor, first_room: int, later_room: int, text: str, max_chars: int
) -> list[_Segment]:
    """Cut a forced stream into windows that fit one segment each; share the text out by length."""
    windows, pos, room = [], 0, first_room
    while pos < forced.shape[0]:
        windows.append(forced[pos : pos + room])
        pos += room
        room = later_room
    if len(windows) == 1:
        return [_Segment(text, windows[0])]
    sentences = split_text(text, max_chars) if text.strip() else []
    total = sum(w.shape[0] for w in windows)
    segments, cursor, used = [], 0, 0
    for w in windows:
        used += w.shape[0]
        take = []
        while cursor < len(sentences) and (cursor + 1) / max(len(sentences), 1) <= used / total + 1e-9:
            take.append(sentences[cursor])
            cursor += 1
        segments.append(_Segment(" ".join(take), w))
    if cursor < len(sentences):
        segments[-1].text = " ".join([segments[-1].text] + sentences[cursor:]).strip()
    return segments


def _validate_wiring(request: TalkRequest, voice, face, reference_motion, forced_speech, forced_motion) -> None:
    Mode.check(
        request.mode,
        text=request.text,
        voice=voice is not None,
        face=face is not None or reference_motion is not None,
        forced_speech=forced_speech is not None,
        forced_motion=forced_motion is not None,
    )
    if len(request.text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the text has {len(request.text)} characters; at most {MAX_TEXT_CHARS} are accepted per request. "
            "Split it into several requests"
        )


def _user_prefix_frames(request: TalkRequest, voice, reference_motion) -> int:
    """Reference frames to feed as a style prefix (joint modes: whole patches)."""
    frames = int(math.floor(request.prefix_seconds * FPS + 1e-6))
    if frames == 0:
        return 0
    if voice is None:
        raise ValueError("a style prefix (prefix_seconds > 0) needs the reference voice")
    available = voice.speech.frames
    what = "reference audio"
    if request.mode != Mode.SPEECH:
        if reference_motion is None:
            raise ValueError(
                "a style prefix (prefix_seconds > 0) needs reference motion from a talking clip of the same "
                "person; connect one, or set prefix_seconds to 0 to clone only voice and face"
            )
        if reference_motion.frames < available:
            available, what = reference_motion.frames, "reference motion clip"
    if frames > available:
        raise ValueError(
            f"prefix_seconds={request.prefix_seconds:g} is longer than the {what} "
            f"({available / FPS:.2f} s); use at most {available / FPS:.2f}"
        )
    if request.mode != Mode.SPEECH:
        frames = (frames // PATCH) * PATCH
    return frames


@torch.inference_mode()
def generate(
    bundle,
    request: TalkRequest,
    voice: Optional[SpeakerReference] = None,
    face: Optional[Identity] = None,
    reference_motion: Optional[MotionCodes] = None,
    forced_speech: Optional[SpeechLatents] = None,
    forced_motion: Optional[MotionCodes] = None,
    hooks: Optional[Hooks] = None,
    on_frames: Optional[Callable[[torch.Tensor, Optional[torch.Tensor]], None]] = None,
) -> TalkResult:
    """Run the backbone and both heads for one request (any mode, any length).

    bundle: a loaded :class:`talker_core.weights.loaders.TalkerBundle` (model + tokenizer).
    voice: reference voice (speaker embedding and latents for the prefix).
    face: identity whose first-frame motion code conditions the motion head.
    reference_motion: motion of a talking clip of the reference person, for a style prefix.
    forced_speech / forced_motion: the given stream in A2V / V2A.

    Texts longer than ``request.max_segment_chars`` (and forced streams longer than one
    segment) run as several segments; each continues from the previous one's last
    ``segment_prefix_seconds`` as its prefix, so voice, prosody and motion carry over.
    Returned latents include the reference prefix of the first segment.

    on_frames(speech (n, 32), motion (n, 40) or None): optional, called in order with every
    stretch of the result as soon as it is final (the first segment's prefix, then each patch,
    trimmed as the result is), float32 on the CPU; concatenated they are exactly the returned
    ``speech``/``motion`` (:mod:`talker_core.pipeline.stream` renders from them while generating).
    """
    from talker_core.fast import FastPatchStep
    from talker_core.generation.engine import (
        GenerationCancelled,
        GenerationMode,
        SamplingSettings,
        TalkerGenerator,
    )
    from talker_core.tokenizer import render_prompt

    hooks = hooks or Hooks()
    start_time = time.perf_counter()
    _validate_wiring(request, voice, face, reference_motion, forced_speech, forced_motion)
    model = bundle.model
    cfg = model.config
    joint = request.mode != Mode.SPEECH
    seg_frames = min(cfg.max_frames, MAX_SEGMENT_FRAMES, int(request.max_segment_seconds * FPS))

    speaker = voice.embedding if voice is not None else torch.zeros(cfg.speaker_dim)
    if face is not None:
        first_motion = face.first_motion
    elif reference_motion is not None:
        first_motion = reference_motion.codes[0]
    elif forced_motion is not None:  # V2A without a face: the head that uses it is not run
        first_motion = forced_motion.codes[0]
    else:
        first_motion = None
    prefix = _user_prefix_frames(request, voice, reference_motion)
    budget = max(PATCH, int(math.floor(request.max_seconds * FPS + 1e-6)))
    carry = (int(request.segment_prefix_seconds * FPS) // PATCH) * PATCH

    forced = (
        forced_speech.latents
        if forced_speech is not None
        else (forced_motion.codes if forced_motion is not None else None)
    )
    if forced is not None:
        if forced.shape[0] > budget:
            log.warning(
                "the driving %s is %.2f s long; max_seconds=%g cuts it, only the first %.2f s are used: raise "
                "max_seconds to use all of it",
                "speech" if forced_speech is not None else "motion",
                forced.shape[0] / FPS,
                request.max_seconds,
                budget / FPS,
            )
        forced = forced[:budget]
        first_room, later_room = max(PATCH, seg_frames - prefix), max(PATCH, seg_frames - carry)
        segments = _forced_windows(forced, first_room, later_room, request.text, request.max_segment_chars)
    else:
        segments = [_Segment(t) for t in split_text(request.text, request.max_segment_chars)]

    engine = TalkerGenerator(model, step=FastPatchStep())
    gen_speech: list[torch.Tensor] = []
    gen_motion: list[torch.Tensor] = []
    prefix_speech = prefix_motion = None
    p_stop: list[float] = []
    produced = 0
    done_patches = 0
    planned = sum(-(-(s.forced.shape[0] if s.forced is not None else seg_frames) // PATCH) for s in segments)
    planned = min(planned, -(-budget // PATCH))

    for index, segment in enumerate(segments):
        remaining = budget - produced
        if remaining <= 0:
            log.warning(
                "max_seconds=%g reached: %d of %d text segment(s) were not spoken; raise max_seconds "
                "to say the whole text",
                request.max_seconds,
                len(segments) - index,
                len(segments),
            )
            break
        if index == 0:
            ref_speech = voice.speech.latents if voice is not None else None
            ref_motion = (
                reference_motion.codes
                if reference_motion is not None
                else (first_motion[None] if first_motion is not None else None)
            )
            prefix_k = prefix
        else:
            all_speech = torch.cat(gen_speech, 0)
            tail = min(carry, all_speech.shape[0])
            if joint:
                tail = (tail // PATCH) * PATCH
            ref_speech = all_speech[all_speech.shape[0] - tail :]
            ref_motion = (
                torch.cat(gen_motion, 0)[-tail:]
                if (joint and tail)
                else (first_motion[None] if (joint and first_motion is not None) else None)
            )
            prefix_k = tail
        room = max(PATCH, seg_frames - prefix_k)
        max_patches = max(1, min(room, remaining) // PATCH) if segment.forced is None else None
        prompt = render_prompt(
            bundle.tokenizer, segment.text, max_length=request.max_prompt_tokens, allow_empty=segment.forced is not None
        )
        settings = SamplingSettings(
            steps=request.steps,
            temperature=request.temperature,
            cfg=request.cfg,
            sway=request.sway,
            cfg_zero_star=request.cfg_zero_star,
            stop_threshold=request.stop_threshold,
            stop_consecutive=request.stop_consecutive,
            seed=_segment_seed(request.seed, index),
        )
        base = done_patches

        def progress(done: int, total: int, _base=base) -> None:
            hooks.report(min(_base + done, planned), max(planned, _base + total), "generate")

        limit = remaining if segment.forced is None else min(segment.forced.shape[0], remaining)
        emitted = [0]

        def on_patch(_index, speech, motion, _limit=limit, _emitted=emitted) -> None:
            n = min(speech.shape[-1], _limit - _emitted[0])
            if n <= 0:
                return
            _emitted[0] += n
            s = speech[0, :, :n].transpose(0, 1).float().cpu()
            m = motion[0, :, :n].transpose(0, 1).float().cpu() if (joint and motion is not None) else None
            assert on_frames is not None  # these hooks are installed only with on_frames
            on_frames(s, m)

        def on_prefill(out) -> None:
            m = out.prefix_motion.float().cpu() if (joint and out.prefix_motion is not None) else None
            if out.prefix_speech.shape[0] or (m is not None and m.shape[0]):
                assert on_frames is not None
                on_frames(out.prefix_speech.float().cpu(), m)

        try:
            out = engine.generate(
                prompt,
                speaker,
                ref_speech=ref_speech,
                ref_motion=ref_motion,
                prefix_frames=prefix_k,
                first_motion=first_motion if joint else None,
                mode=GenerationMode.JOINT if joint else GenerationMode.SPEECH_ONLY,
                forced_speech=segment.forced if forced_speech is not None else None,
                forced_motion=segment.forced if forced_motion is not None else None,
                settings=settings,
                max_patches=max_patches,
                progress=progress,
                should_cancel=hooks.should_cancel,
                on_patch=on_patch if on_frames is not None else None,
                on_prefill=on_prefill if (on_frames is not None and index == 0) else None,
            )
        except GenerationCancelled as exc:
            raise Cancelled(str(exc)) from exc
        where = f"sampling (segment {index + 1} of {len(segments)})" if len(segments) > 1 else "sampling"
        check_finite(out.gen_speech, where + ", speech", model)
        if joint and out.gen_motion is not None:
            check_finite(out.gen_motion, where + ", motion", model)
        keep = out.gen_speech.shape[0] if segment.forced is None else segment.forced.shape[0]
        keep = min(keep, remaining)
        if index == 0:
            prefix_speech = out.prefix_speech
            prefix_motion = out.prefix_motion
        gen_speech.append(out.gen_speech[:keep])
        if joint and out.gen_motion is not None:
            gen_motion.append(out.gen_motion[:keep])
        p_stop.extend(out.p_stop)
        produced += keep
        done_patches += out.steps
        log.info("segment %d/%d: %d frames%s", index + 1, len(segments), keep, " (stop head)" if out.stopped else "")

    if done_patches < planned:
        # The stop head (or the length budget) ended the run before the planned patch count:
        # the bar ends full, at what was actually done, instead of stopping short (e.g. at 6/7).
        hooks.report(done_patches, done_patches, "generate")
    speech = torch.cat([prefix_speech] + gen_speech, 0) if prefix_speech is not None else torch.cat(gen_speech, 0)
    motion = None
    if joint:
        parts = ([prefix_motion] if prefix_motion is not None else []) + gen_motion
        motion = MotionCodes(torch.cat(parts, 0))
    return TalkResult(
        speech=SpeechLatents(speech),
        motion=motion,
        generated_seconds=produced / FPS,
        wall_seconds=time.perf_counter() - start_time,
        segments=len(gen_speech),
        segments_planned=len(segments),
        prefix_frames=0 if prefix_speech is None else int(prefix_speech.shape[0]),
        p_stop=p_stop,
    )
