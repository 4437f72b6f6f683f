"""Decoder nodes: speech latents → AUDIO (24 kHz); motion + face → IMAGE frames at 25 fps."""

from __future__ import annotations

import time

from comfy_api.latest import io

from . import host
from .compat import schema_extras
from .plot import summary_ui
from .sockets import (
    CATEGORY,
    SEARCH_ALIASES,
    TalkerCodec,
    TalkerFace,
    TalkerFaceModel,
    TalkerMotion,
    TalkerSpeech,
)


class TalkerDecodeSpeech(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerDecodeSpeech",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerDecodeSpeech"]),
            display_name="Decode Speech",
            category=f"{CATEGORY}/decode",
            description="Speech latents → 24 kHz mono AUDIO (feed Create Video's audio, Save Audio or Preview Audio).",
            inputs=[
                TalkerCodec.Input("codec", tooltip="From Load Speech Codec."),
                TalkerSpeech.Input(
                    "speech", tooltip="Speech latents (from the sampler, an encoder or a latents file)."
                ),
            ],
            outputs=[io.Audio.Output("audio", display_name="audio", tooltip="24 kHz mono speech.")],
        )

    @classmethod
    def execute(cls, codec, speech) -> io.NodeOutput:
        from talker_core.pipeline import decode_speech
        from talker_core.types import SAMPLE_RATE

        if speech is None:
            raise ValueError("speech is empty: connect the sampler's speech output (or an encoded/loaded speech)")
        wav = decode_speech(codec.ready(), speech)
        return io.NodeOutput(host.audio_output(wav, SAMPLE_RATE))


class TalkerRenderVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerRenderVideo",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerRenderVideo"], has_intermediate_output=True),
            display_name="Render Video",
            category=f"{CATEGORY}/decode",
            description="Motion codes + a face → 512×512 frames at 25 fps. Connect images and fps to Create Video "
            "(with the decoded speech as audio), then Save Video for an MP4 that carries the workflow. For short "
            "clips and post-processing: the IMAGE batch holds every frame, 3 MiB each, 4.4 GiB of RAM per "
            "minute of video. Long clips: use Render Video File, which writes the MP4 in flat memory.",
            inputs=[
                TalkerFaceModel.Input("face_model", tooltip="From Load Face Model."),
                TalkerFace.Input("face", tooltip="The face to animate (Encode Face)."),
                TalkerMotion.Input("motion", tooltip="Motion codes (from the sampler, an encoder or a latents file)."),
                io.Int.Input(
                    "chunk",
                    default=8,
                    min=1,
                    max=256,
                    tooltip="Frames rendered per batch: higher is faster on a GPU but needs more memory.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    "images",
                    display_name="images",
                    tooltip="The frames, (frames, 512, 512, 3) float32: 3 MiB a frame, 4.4 GiB of RAM per minute of video.",
                ),
                io.Float.Output("fps", display_name="fps", tooltip="Frame rate of the frames (25)."),
            ],
        )

    @classmethod
    def execute(cls, face_model, face, motion, chunk) -> io.NodeOutput:
        import comfy.model_management as mm

        from talker_core.pipeline import render_motion
        from talker_core.types import FPS

        if motion is None:
            raise ValueError(
                "motion is empty: the sampler ran in speech-only mode (or V2A without motion); "
                "turn speech_only off to get a video, or render a motion from an encoder or a file"
            )
        if face is None:
            raise ValueError("face is empty: connect Encode Face")
        liax = face_model.ready()
        start = time.perf_counter()
        with host.interruptible():
            frames = render_motion(liax, face, motion, chunk=chunk, hooks=host.make_hooks())
        wall = time.perf_counter() - start
        seconds = frames.shape[0] / FPS
        rtf = wall / max(seconds, 1e-9)
        text = f"rendered {frames.shape[0]} frames ({seconds:.2f} s) in {wall:.2f} s (RTF {rtf:.2f})"
        return io.NodeOutput(frames.to(mm.intermediate_device()), float(FPS), ui=summary_ui(text))
