"""The sampler node: text + voice + face (+ optional prefix / forced stream) → speech and motion.

The mode follows from what is connected (documented in the README's node reference):

| connected            | speech_only | mode  | needs              |
|----------------------|-------------|-------|--------------------|
| neither forced input | off         | T2AV  | text, voice, face  |
| forced_speech        | off         | A2V   | face (text optional) |
| forced_motion        | off         | V2A   | voice (text: the words to dub) |
| neither              | on          | speech| text, voice        |
"""

from __future__ import annotations

from comfy_api.latest import io

from talker_core.params import param

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


def _names():
    from talker_core.pipeline import InputNames

    return InputNames(
        given="connected",
        voice_hint=" (Talker-T2AV Encode Voice)",
        face_hint=" (Talker-T2AV Encode Face); for audio only, turn speech_only on",
    )


def check_inputs(mode: str, text: str, voice, face, reference_motion, prefix_seconds: float) -> None:
    """Clear errors, naming the node inputs, for what each mode needs (before any model runs)."""
    from talker_core.pipeline import Mode

    Mode.check(
        mode,
        text=text or "",
        voice=voice is not None,
        face=face is not None or reference_motion is not None,
        forced_speech=mode == Mode.A2V,  # from_inputs inferred the mode from the forced streams
        forced_motion=mode == Mode.V2A,
        names=_names(),
    )
    if prefix_seconds > 0 and voice is None:
        raise ValueError("prefix_seconds > 0 continues the reference recording: connect voice (and reference_motion)")


def _widget(name: str) -> dict:
    """default, min, max and tooltip of a sampler widget, from talker_core.params (the one table)."""
    spec = param(name)
    if spec.kind is bool:
        return {"default": spec.default, "tooltip": spec.help}
    out = {"default": spec.default, "tooltip": spec.help}
    if spec.minimum is not None:
        out["min"] = spec.minimum
    if spec.maximum is not None:
        out["max"] = spec.maximum
    return out


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
                io.Int.Input("seed", **_widget("seed"), control_after_generate=True),
                io.Int.Input("steps", **_widget("steps")),
                io.Float.Input("cfg", **_widget("cfg"), step=0.1, round=0.01),
                io.Float.Input("temperature", **_widget("temperature"), step=0.01, round=0.001),
                io.Float.Input("sway", **_widget("sway"), **advanced(io.Float.Input), step=0.05, round=0.001),
                io.Boolean.Input("cfg_zero_star", **_widget("cfg_zero_star"), **advanced(io.Boolean.Input)),
                io.Float.Input(
                    "stop_threshold", **_widget("stop_threshold"), **advanced(io.Float.Input), step=0.01, round=0.001
                ),
                io.Float.Input("max_seconds", **_widget("max_seconds"), step=0.1, round=0.01),
                io.Float.Input("prefix_seconds", **_widget("prefix_seconds"), step=0.1, round=0.01),
                io.Boolean.Input(
                    "include_prefix",
                    **advanced(io.Boolean.Input),
                    default=True,
                    tooltip="Keep the reference prefix at the start of the outputs (as the reference "
                    "implementation does); off: return only the newly generated part.",
                ),
                io.Float.Input(
                    "segment_prefix_seconds",
                    **_widget("segment_prefix_seconds"),
                    **advanced(io.Float.Input),
                    step=0.1,
                    round=0.01,
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
        from talker_core.pipeline import Mode, unspeakable_message

        if not isinstance(text, str):
            return True
        if speech_only is True:
            return unspeakable_message(text, "text", Mode.NAMES[Mode.SPEECH]) or True
        if speech_only is False and forced_speech is _UNCONNECTED and forced_motion is _UNCONNECTED:
            message = unspeakable_message(text, "text", Mode.NAMES[Mode.T2AV])
            if message is not None:
                return f"{message} (or connect forced_speech for audio-driven video)"
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
        from talker_core.pipeline import Mode, TalkRequest, generate

        mode = Mode.from_inputs(
            speech_only=bool(speech_only),
            forced_speech=forced_speech is not None,
            forced_motion=forced_motion is not None,
            names=_names(),
        )
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
        summary = f"{Mode.NAMES[mode]}: {result.summary()}"
        return io.NodeOutput(speech, motion, ui=summary_ui(summary, motion_plot(speech, motion, prefix), warnings))


def _drop_prefix(stream, frames: int):
    """The stream without its first ``frames`` frames (None stays None)."""
    from talker_core.types import MotionCodes, SpeechLatents

    if stream is None:
        return None
    if isinstance(stream, SpeechLatents):
        return SpeechLatents(stream.latents[frames:])
    return MotionCodes(stream.codes[frames:])
