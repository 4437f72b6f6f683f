"""The sampler node: text + voice + face (+ optional prefix / forced stream) → speech and motion.

The mode follows from what is connected (documented in docs/NODES.md):

| connected            | speech_only | mode  | needs              |
|----------------------|-------------|-------|--------------------|
| neither forced input | off         | T2AV  | text, voice, face  |
| forced_speech        | off         | A2V   | face (text optional) |
| forced_motion        | off         | V2A   | voice (text: the words to dub) |
| neither              | on          | speech| text, voice        |
"""

from __future__ import annotations

from comfy_api.latest import io

from . import host
from .compat import advanced, schema_extras
from .plot import motion_plot, summary_ui
from .sockets import (
    CATEGORY,
    SEARCH_ALIASES,
    TalkerFace,
    TalkerModel,
    TalkerMotion,
    TalkerSpeech,
    TalkerVoice,
)

_UNCONNECTED = object()  # validate_inputs: an optional input that is not connected

MODE_NAMES = {"t2av": "T2AV", "a2v": "A2V", "v2a": "V2A", "speech": "speech only"}


def infer_mode(speech_only: bool, forced_speech, forced_motion) -> str:
    """The generation mode from the wiring; raises ValueError on contradictory inputs."""
    from talker_core.pipeline import Mode

    if forced_speech is not None and forced_motion is not None:
        raise ValueError(
            "forced_speech and forced_motion are both connected: force one stream and let the model sample the "
            "other (forced_speech → audio-driven video, forced_motion → dubbing)"
        )
    if speech_only:
        if forced_speech is not None or forced_motion is not None:
            raise ValueError(
                "speech_only is on, but a forced stream is connected: disconnect it or turn speech_only off"
            )
        return Mode.SPEECH
    if forced_speech is not None:
        return Mode.A2V
    if forced_motion is not None:
        return Mode.V2A
    return Mode.T2AV


def check_inputs(mode: str, text: str, voice, face, reference_motion, prefix_seconds: float) -> None:
    """Clear errors, naming the node inputs, for what each mode needs (before any model runs)."""
    from talker_core.pipeline import Mode, unspeakable_reason

    name = MODE_NAMES[mode]
    reason = unspeakable_reason(text or "") if mode in (Mode.T2AV, Mode.SPEECH) else None
    if reason is not None:
        raise ValueError(f"text: {reason}; {name} needs the words to speak")
    if mode in (Mode.T2AV, Mode.V2A, Mode.SPEECH) and voice is None:
        raise ValueError(f"voice is not connected: {name} needs a reference voice (Encode Voice)")
    if mode in (Mode.T2AV, Mode.A2V) and face is None and reference_motion is None:
        raise ValueError(
            f"face is not connected: {name} makes a video and needs a face (Encode Face); "
            "for audio only, turn speech_only on"
        )
    if prefix_seconds > 0 and voice is None:
        raise ValueError("prefix_seconds > 0 continues the reference recording: connect voice (and reference_motion)")


class TalkerSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerSampler",
            display_name="Speech + Motion Sampler",
            category=CATEGORY,
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerSampler"], has_intermediate_output=True),
            description="Generates speech and face motion together from text, a reference voice and a face. "
            "Connect forced_speech for audio-driven video (A2V), forced_motion for dubbing (V2A), or "
            "turn speech_only on for speech alone. Text longer than one segment (30 s) is generated "
            "in segments, each continuing the previous one.",
            inputs=[
                TalkerModel.Input("model", tooltip="From Load Model."),
                TalkerVoice.Input(
                    "voice",
                    optional=True,
                    tooltip="The voice to clone (Encode Voice). Needed except in A2V.",
                ),
                TalkerFace.Input(
                    "face",
                    optional=True,
                    tooltip="The face (Encode Face). Needed for T2AV and A2V; not for speech only or dubbing.",
                ),
                TalkerMotion.Input(
                    "reference_motion",
                    optional=True,
                    tooltip="Motion of the reference clip (Encode Motion). With "
                    "prefix_seconds > 0 it is the motion prefix (style cloning); its first "
                    "frame also sets the starting pose.",
                ),
                TalkerSpeech.Input(
                    "forced_speech",
                    optional=True,
                    tooltip="Speech to lip-sync to (Encode Speech): audio-driven video (A2V). Only motion is sampled.",
                ),
                TalkerMotion.Input(
                    "forced_motion",
                    optional=True,
                    tooltip="Motion to dub (Encode Motion of a silent clip, or a saved "
                    "motion): video-to-audio (V2A). Only speech is sampled.",
                ),
                io.String.Input(
                    "text",
                    multiline=True,
                    default="",
                    placeholder="What the face should say.",
                    tooltip="The words to speak. Long text is split at sentence ends into segments "
                    "of up to 30 s, each continuing the previous one.",
                ),
                io.Boolean.Input(
                    "speech_only", default=False, tooltip="Generate speech alone (no motion, no face needed)."
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Noise seed; the same seed gives the same result on any device.",
                ),
                io.Int.Input(
                    "steps",
                    default=10,
                    min=1,
                    max=200,
                    tooltip="Flow-matching (Euler) steps per 4-frame patch; the paper uses 10.",
                ),
                io.Float.Input(
                    "cfg",
                    default=2.0,
                    min=0.0,
                    max=20.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance strength; 2.0 as in the paper, 1.0 disables it.",
                ),
                io.Float.Input(
                    "temperature",
                    default=0.3,
                    min=0.0,
                    max=5.0,
                    step=0.01,
                    round=0.001,
                    tooltip="Scale of the starting noise: lower is steadier, higher more varied.",
                ),
                io.Float.Input(
                    "sway",
                    **advanced(io.Float.Input),
                    default=1.0,
                    min=-1.0,
                    max=2.0,
                    step=0.05,
                    round=0.001,
                    tooltip="Sway sampling coefficient of the time grid (1.0 as in the reference).",
                ),
                io.Boolean.Input(
                    "cfg_zero_star",
                    **advanced(io.Boolean.Input),
                    default=True,
                    tooltip="CFG-Zero*: skip the first step and rescale guidance (as in the reference).",
                ),
                io.Float.Input(
                    "stop_threshold",
                    **advanced(io.Float.Input),
                    default=0.5,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                    round=0.001,
                    tooltip="End of speech when the stop head's probability stays above this for 3 "
                    "patches (T2AV and speech only).",
                ),
                io.Float.Input(
                    "max_seconds",
                    default=30.0,
                    min=0.16,
                    max=3600.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Upper bound on the generated length, all segments together.",
                ),
                io.Float.Input(
                    "prefix_seconds",
                    default=0.0,
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Style cloning: feed this much of the reference (voice latents and "
                    "reference_motion) as a prefix, so prosody and head motion continue its "
                    "style. 0: the reference sets only timbre and appearance.",
                ),
                io.Boolean.Input(
                    "include_prefix",
                    **advanced(io.Boolean.Input),
                    default=True,
                    tooltip="Keep the reference prefix at the start of the outputs (as the reference "
                    "implementation does); off: return only the newly generated part.",
                ),
                io.Float.Input(
                    "segment_prefix_seconds",
                    **advanced(io.Float.Input),
                    default=2.0,
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Long form: how much of each segment's end is fed to the next as its "
                    "prefix, carrying voice and motion over.",
                ),
            ],
            outputs=[
                TalkerSpeech.Output("speech", display_name="speech", tooltip="Speech latents (Decode Speech → AUDIO)."),
                TalkerMotion.Output(
                    "motion",
                    display_name="motion",
                    tooltip="Motion codes (Render Video → IMAGE); empty in speech only.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, text=None, speech_only=None, forced_speech=_UNCONNECTED, forced_motion=_UNCONNECTED):
        """Refuse a text with nothing to speak at queue time where the mode needs words (T2AV, speech only).

        ComfyUI passes a linked input to ``validate_inputs`` as None (its value is not known
        yet) and leaves an unconnected optional input out, so the defaults here tell a
        connected forced stream (A2V/V2A: text optional or checked at run time) from none.
        A linked ``text`` arrives as None and is checked at run time.
        """
        from talker_core.pipeline import unspeakable_reason

        if not isinstance(text, str):
            return True
        reason = unspeakable_reason(text)
        if reason is None:
            return True
        if speech_only is True:
            return f"text: {reason}; speech only needs the words to speak"
        if speech_only is False and forced_speech is _UNCONNECTED and forced_motion is _UNCONNECTED:
            return f"text: {reason}; T2AV needs the words to speak (or connect forced_speech for audio-driven video)"
        return True

    @classmethod
    def execute(
        cls,
        model,
        text,
        speech_only,
        seed,
        steps,
        cfg,
        temperature,
        sway,
        cfg_zero_star,
        stop_threshold,
        max_seconds,
        prefix_seconds,
        include_prefix,
        segment_prefix_seconds,
        voice=None,
        face=None,
        reference_motion=None,
        forced_speech=None,
        forced_motion=None,
    ) -> io.NodeOutput:
        from talker_core.pipeline import TalkRequest, generate

        mode = infer_mode(speech_only, forced_speech, forced_motion)
        check_inputs(mode, text, voice, face, reference_motion, prefix_seconds)
        request = TalkRequest(
            text=text,
            mode=mode,
            seed=seed,
            steps=steps,
            cfg=cfg,
            temperature=temperature,
            sway=sway,
            cfg_zero_star=cfg_zero_star,
            stop_threshold=stop_threshold,
            prefix_seconds=prefix_seconds,
            max_seconds=max_seconds,
            segment_prefix_seconds=segment_prefix_seconds,
        )
        bundle = model.ready()
        with host.interruptible(), host.collect_warnings() as warnings:
            result = generate(
                bundle,
                request,
                voice=voice,
                face=face,
                reference_motion=reference_motion,
                forced_speech=forced_speech,
                forced_motion=forced_motion,
                hooks=host.make_hooks(),
            )
        speech, motion, prefix = result.speech, result.motion, result.prefix_frames
        if not include_prefix and prefix > 0:
            speech, motion, prefix = _drop_prefix(speech, prefix), _drop_prefix(motion, prefix), 0
        summary = f"{MODE_NAMES[mode]}: {result.summary()}"
        return io.NodeOutput(speech, motion, ui=summary_ui(summary, motion_plot(speech, motion, prefix), warnings))


def _drop_prefix(stream, frames: int):
    """The stream without its first ``frames`` frames (None stays None)."""
    from talker_core.types import MotionCodes, SpeechLatents

    if stream is None:
        return None
    if isinstance(stream, SpeechLatents):
        return SpeechLatents(stream.latents[frames:])
    return MotionCodes(stream.codes[frames:])
