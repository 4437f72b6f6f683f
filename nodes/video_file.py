"""Render Video File: motion + face (+ speech or AUDIO) → an MP4 in the output folder and a core VIDEO.

Frames go from the renderer straight into the encoder a batch at a time, so a long clip never
exists as an IMAGE batch (which costs 4.4 GiB of RAM per minute of video): memory stays flat in
the clip's length. The file carries the workflow and prompt like Save Video's, so dropping it on
the canvas gives the graph back.
"""

from __future__ import annotations

import json
import os
import time

from comfy_api.latest import InputImpl, io, ui

from talker_core.media.output import CRF_DEFAULT, CRF_MAX, CRF_MIN, PRESET_DEFAULT
from talker_core.media.output import PRESETS as _PRESETS

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

PRESETS = list(_PRESETS)  # the x264 presets (the writer's), as the combo widgets of the video nodes take them


def encoder_inputs() -> list:
    """The x264 ``crf`` and ``preset`` widgets of every node that writes an MP4 (ranges from the writer)."""
    return [
        io.Int.Input(
            "crf",
            default=CRF_DEFAULT,
            min=CRF_MIN,
            max=CRF_MAX,
            tooltip=f"x264 quality: {CRF_MIN} lossless, 18 visually lossless, {CRF_MAX} worst.",
        ),
        io.Combo.Input("preset", options=PRESETS, default=PRESET_DEFAULT, tooltip="x264 speed/size trade-off."),
    ]


def sound_inputs() -> list:
    """The optional sound track of a node that writes an MP4: speech latents (with their codec) or any AUDIO."""
    return [
        TalkerCodec.Input("codec", optional=True, tooltip="Speech codec, to decode the speech input."),
        TalkerSpeech.Input("speech", optional=True, tooltip="Speech latents for the sound (needs codec)."),
        io.Audio.Input("audio", optional=True, tooltip="Or any AUDIO for the sound (instead of speech)."),
    ]


def _metadata(prompt, extra_pnginfo) -> dict | None:
    """What core Save Video stores: every extra_pnginfo entry (the workflow) and the prompt, as JSON text."""
    from comfy.cli_args import args

    if getattr(args, "disable_metadata", False):
        return None
    meta = {}
    for key, value in (extra_pnginfo or {}).items():
        meta[key] = json.dumps(value)
    if prompt is not None:
        meta["prompt"] = json.dumps(prompt)
    return meta or None


def output_mp4(filename_prefix: str) -> tuple[str, str, str]:
    """The next free ``<prefix>_00001_.mp4`` in the output folder (as Save Video names files): (path, file, subfolder)."""
    import folder_paths

    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), 512, 512
    )
    file = f"{name}_{counter:05}_.mp4"
    return os.path.join(folder, file), file, subfolder


def video_result(path: str, file: str, subfolder: str, text: str, warnings=None, more=()) -> io.NodeOutput:
    """The written MP4 as a core VIDEO (then the outputs ``more``), with its preview and a summary on the node."""
    saved = ui.SavedResult(file, subfolder, io.FolderType.output)
    return io.NodeOutput(
        InputImpl.VideoFromFile(path),
        *more,
        ui={**ui.PreviewVideo([saved]).as_dict(), **summary_ui(text, warnings=warnings or ())},
    )


class TalkerRenderVideoFile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerRenderVideoFile",
            display_name="Render Video File",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerRenderVideoFile"], has_intermediate_output=True),
            category=f"{CATEGORY}/decode",
            description="Motion codes + a face (+ speech) → an MP4 (H.264 + AAC) written frame by frame into the "
            "output folder, and a VIDEO. Memory stays flat however long the clip: use it for long videos. The file "
            "carries the workflow (drop it on the canvas to get the graph back).",
            inputs=[
                TalkerFaceModel.Input("face_model", tooltip="From Load Face Model."),
                TalkerFace.Input("face", tooltip="The face to animate (Encode Face)."),
                TalkerMotion.Input("motion", tooltip="Motion codes (from the sampler, an encoder or a latents file)."),
                io.String.Input(
                    "filename_prefix",
                    default="video/Talker",
                    tooltip="Where in the output folder the MP4 goes (as Save Video's prefix).",
                ),
                io.Int.Input(
                    "chunk",
                    default=8,
                    min=1,
                    max=256,
                    tooltip="Frames rendered per batch: higher is faster on a GPU but needs more memory.",
                ),
                *encoder_inputs(),
                *sound_inputs(),
            ],
            outputs=[io.Video.Output("video", display_name="video", tooltip="The written MP4 as a VIDEO.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls, face_model, face, motion, filename_prefix, chunk, crf, preset, codec=None, speech=None, audio=None
    ) -> io.NodeOutput:
        from talker_core.pipeline import render_to_mp4
        from talker_core.types import FPS

        if motion is None:
            raise ValueError(
                "motion is empty: the sampler ran in speech-only mode (or V2A without motion); "
                "turn speech_only off to get a video, or render a motion from an encoder or a file"
            )
        if face is None:
            raise ValueError("face is empty: connect Talker-T2AV Encode Face")
        if speech is not None and audio is not None:
            raise ValueError("connect speech (with codec) or audio for the sound, not both")
        if speech is not None and codec is None:
            raise ValueError("speech is connected but codec is not: connect Talker-T2AV Load Speech Codec")
        wav = rate = None
        if audio is not None:
            wav, rate = host.audio_input(audio, "audio")
        path, file, subfolder = output_mp4(filename_prefix)
        liax = face_model.ready()
        vae = codec.ready() if speech is not None else None
        start = time.perf_counter()
        with host.interruptible():
            render_to_mp4(
                liax,
                face,
                motion,
                path,
                vae=vae,
                speech=speech,
                audio=wav,
                sample_rate=rate,
                chunk=chunk,
                hooks=host.make_hooks(),
                crf=crf,
                preset=preset,
                metadata=_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo),
            )
        wall = time.perf_counter() - start
        seconds = motion.frames / FPS
        text = (
            f"wrote {file}: {motion.frames} frames ({seconds:.2f} s) in {wall:.2f} s "
            f"(RTF {wall / max(seconds, 1e-9):.2f})"
        )
        return video_result(path, file, subfolder, text)
