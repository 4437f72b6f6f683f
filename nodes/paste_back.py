"""Paste-back nodes: rendered frames composited into the original photo or footage at full resolution.

Two nodes, because the two uses want opposite things: **Paste Back** returns an IMAGE batch (short
clips, or post-processing after the paste: a face restorer, an upscaler, Create Video), which holds
every frame in memory; **Paste Back Video File** writes the composited frames into an MP4 a batch at
a time and returns a core VIDEO, so memory stays flat however long the clip (it renders from motion
codes itself, or takes ready frames, e.g. an upscaler's output).
"""

from __future__ import annotations

import time

import torch
from comfy_api.latest import io

from talker_core.media.paste import BACKGROUND_ENDS, MAX_FEATHER

from . import host
from .sockets import CATEGORY, TalkerFace, TalkerFaceModel, TalkerMotion

_END_TOOLTIP = (
    "A background clip shorter than the render: loop starts it again from its first frame, hold keeps its "
    "last frame. A longer one is cut to the render's length."
)


def _blend_inputs() -> list:
    return [
        io.Float.Input(
            "feather",
            default=0.1,
            min=0.0,
            max=MAX_FEATHER,
            step=0.01,
            tooltip="Seam width as a share of the square's side (0 = hard edge). Edges on the picture's border stay hard.",
        ),
        io.Boolean.Input(
            "colour_match",
            default=True,
            tooltip="Match the face's colours to the picture under the square (measured on the first "
            "frame, so there is no flicker).",
        ),
        io.Combo.Input("background_end", options=list(BACKGROUND_ENDS), default="loop", tooltip=_END_TOOLTIP),
    ]


def _check_face(face) -> None:
    if face is None or face.crop is None:
        raise ValueError("face has no crop box: connect the face from Talker-T2AV Encode Face")


class TalkerPasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerPasteBack",
            display_name="Paste Back",
            category=f"{CATEGORY}/decode",
            description="Put the rendered face back into the original picture: each frame is resized to the square "
            "the face was cut from (recorded by Encode Face) in the background's own resolution and blended in "
            "with a feathered seam. Frames of any size work (chain an upscaler before this node); a background "
            "of another size than the original gets the square scaled. Returns IMAGE frames (all in memory: for "
            "short clips and post-processing); for long clips use Paste Back Video File.",
            inputs=[
                io.Image.Input("images", tooltip="The rendered frames (Render Video, or an upscaler after it)."),
                TalkerFace.Input("face", tooltip="The face they were rendered from (Encode Face): holds the square."),
                io.Image.Input(
                    "background",
                    tooltip="The original image the face came from, or the original video's frames at 25 fps.",
                ),
                *_blend_inputs(),
            ],
            outputs=[
                io.Image.Output("pasted", display_name="images", tooltip="Full-resolution frames."),
                io.Float.Output("fps", display_name="fps", tooltip="Frame rate (25)."),
            ],
        )

    @classmethod
    def execute(cls, images, face, background, feather, colour_match, background_end="loop") -> io.NodeOutput:
        import comfy.model_management as mm

        from talker_core.media.paste import box_in, paste_frames
        from talker_core.types import FPS

        _check_face(face)
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be a batch of frames (N, H, W, 3), got shape {tuple(images.shape)}")
        bg = background if background.ndim == 4 else background[None]
        n, h, w = int(images.shape[0]), int(bg.shape[1]), int(bg.shape[2])
        box_in(face.crop, w, h)  # fails early on an unusable background
        out = torch.empty((n, h, w, 3), dtype=torch.float32, device=mm.intermediate_device())
        hooks = host.make_hooks()
        with host.interruptible():
            for i, frame in enumerate(paste_frames(images, bg, face.crop, feather, colour_match, end=background_end)):
                hooks.check()
                out[i] = frame.to(out.device, torch.float32) / 255.0
                hooks.report(i + 1, n, "paste")
        return io.NodeOutput(out, float(FPS))


def video_background(video):
    """A core VIDEO → what :func:`talker_core.media.paste.background_frames` takes, without decoding it whole:
    a file's path (or its in-memory bytes), decoded lazily; frames already in memory are re-timed to 25 fps."""
    from talker_core.media import resample_frames_to_fps
    from talker_core.types import FPS

    source = getattr(video, "get_stream_source", None)
    if source is not None:
        return source()
    parts = video.get_components()
    frames = parts.images
    rate = float(parts.frame_rate) if parts.frame_rate else float(FPS)
    return frames if abs(rate - FPS) < 1e-6 else resample_frames_to_fps(frames, rate, FPS)


class TalkerPasteBackVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from .video_file import encoder_inputs, sound_inputs

        return io.Schema(
            node_id="TalkerPasteBackVideo",
            display_name="Paste Back Video File",
            category=f"{CATEGORY}/decode",
            description="The rendered face pasted back into the original photo or footage at its own resolution, "
            "written frame by frame into an MP4 in the output folder (memory stays flat however long the clip), "
            "returned as a VIDEO. The face is rendered here from motion codes (connect face_model and motion), or "
            "taken from ready frames (images, e.g. an upscaler's output). A background video is decoded as it "
            "is needed, at 25 fps. The file carries the workflow.",
            inputs=[
                TalkerFace.Input("face", tooltip="The face (Encode Face): holds the square it was cut from."),
                io.String.Input("filename_prefix", default="video/Talker_pasted", tooltip="Where the MP4 goes."),
                *_blend_inputs(),
                io.Int.Input("chunk", default=8, min=1, max=256, tooltip="Frames rendered and pasted per batch."),
                *encoder_inputs(),
                io.Image.Input(
                    "background_image",
                    optional=True,
                    tooltip="The original photo (or frames at 25 fps). Connect this or background_video.",
                ),
                io.Video.Input(
                    "background_video",
                    optional=True,
                    tooltip="The original footage (Load Video), decoded as needed at 25 fps.",
                ),
                TalkerFaceModel.Input("face_model", optional=True, tooltip="To render the face from motion codes."),
                TalkerMotion.Input("motion", optional=True, tooltip="Motion codes to render (with face_model)."),
                io.Image.Input("images", optional=True, tooltip="Or ready rendered frames (any size) to paste."),
                *sound_inputs(),
            ],
            outputs=[io.Video.Output("video", display_name="video", tooltip="The written MP4 as a VIDEO.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls, face, filename_prefix, feather, colour_match, background_end, chunk, crf, preset,
        background_image=None, background_video=None, face_model=None, motion=None, images=None,
        codec=None, speech=None, audio=None,
    ) -> io.NodeOutput:  # fmt: skip
        from talker_core.media.paste import Compositor
        from talker_core.pipeline import decode_speech, render_to_mp4
        from talker_core.pipeline.compose import paste_to_mp4
        from talker_core.types import FPS, SAMPLE_RATE

        from .video_file import _metadata, output_mp4, video_result

        _check_face(face)
        if (background_image is None) == (background_video is None):
            raise ValueError(
                "connect the original picture: background_image (a photo) or background_video, one of them"
            )
        rendering = motion is not None or face_model is not None
        if rendering == (images is not None):
            raise ValueError(
                "connect face_model and motion (to render the face here) or images (ready frames), not both"
            )
        if rendering and (motion is None or face_model is None):
            raise ValueError("rendering the face here needs both face_model (Load Face Model) and motion (the sampler)")
        if speech is not None and audio is not None:
            raise ValueError("connect speech (with codec) or audio for the sound, not both")
        if speech is not None and codec is None:
            raise ValueError("speech is connected but codec is not: connect Talker-T2AV Load Speech Codec")
        if images is not None and (images.ndim != 4 or images.shape[0] == 0):
            raise ValueError(f"images must be a batch of frames (N, H, W, 3), got shape {tuple(images.shape)}")
        background = background_image if background_image is not None else video_background(background_video)
        wav = rate = None
        if audio is not None:
            wav, rate = host.audio_input(audio, "audio")
        path, file, subfolder = output_mp4(filename_prefix)
        metadata = _metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo)
        hooks = host.make_hooks()
        start = time.perf_counter()
        with host.interruptible(), host.collect_warnings() as warnings:
            if rendering:
                frames = motion.frames
                compose = Compositor(background, face.crop, feather, colour_match, background_end, check=hooks.check)
                try:
                    render_to_mp4(
                        face_model.ready(), face, motion, path,
                        vae=codec.ready() if speech is not None else None, speech=speech, audio=wav, sample_rate=rate,
                        chunk=chunk, hooks=hooks, crf=crf, preset=preset, metadata=metadata, compose=compose,
                    )  # fmt: skip
                finally:
                    compose.close()
            else:
                frames = int(images.shape[0])
                if speech is not None:
                    wav, rate = decode_speech(codec.ready(), speech), SAMPLE_RATE
                paste_to_mp4(
                    images, background, face.crop, path,
                    feather=feather, colour_match=colour_match, end=background_end, audio=wav, sample_rate=rate,
                    chunk=chunk, hooks=hooks, crf=crf, preset=preset, metadata=metadata,
                )  # fmt: skip
        wall = time.perf_counter() - start
        text = f"wrote {file}: {frames} frames ({frames / FPS:.2f} s) pasted back in {wall:.2f} s"
        return video_result(path, file, subfolder, text, warnings)
