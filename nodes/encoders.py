"""Encoder nodes: reference voice, driving speech, face image and motion clip → Talker inputs."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from talker_core.media.framing import FRAMING_MODES

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
    TalkerSpeakerEncoder,
    TalkerSpeech,
    TalkerVoice,
)

log = logging.getLogger(__name__)


def _framing_input():
    return io.Combo.Input(
        "framing",
        options=list(FRAMING_MODES),
        default="detect",
        tooltip="detect: find the face (OpenCV) and frame head and shoulders; falls back to the "
        "centre crop when no face is found (see the log). centre: the centred square.",
    )


def _crop_inputs() -> list:
    return [
        io.Int.Input("crop_x", default=0, min=0, max=65536, tooltip="Manual square: left edge (px)."),
        io.Int.Input("crop_y", default=0, min=0, max=65536, tooltip="Manual square: top edge (px)."),
        io.Int.Input(
            "crop_size",
            default=0,
            min=0,
            max=65536,
            tooltip="Manual square: side (px). 0 = off (framing decides); above 0 the square "
            "(crop_x, crop_y, crop_size) is used and must lie inside the image.",
        ),
    ]


class TalkerEncodeVoice(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerEncodeVoice",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerEncodeVoice"]),
            display_name="Encode Voice",
            category=f"{CATEGORY}/encode",
            description="A reference recording → the voice to clone: its speaker embedding (timbre) and speech "
            "latents (used as a prosody prefix when the sampler's prefix_seconds > 0).",
            inputs=[
                TalkerCodec.Input("codec", tooltip="From Load Speech Codec."),
                TalkerSpeakerEncoder.Input("speaker_encoder", tooltip="From Load Speaker Encoder."),
                io.Audio.Input(
                    "audio",
                    tooltip="Clean speech of the voice to clone, 3-10 s works best (any rate, "
                    "mixed to mono; the first clip of a batch).",
                ),
                io.Float.Input(
                    "max_seconds",
                    default=30.0,
                    min=0.5,
                    max=30.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Use at most this much of the recording (the model takes at most 30 s).",
                ),
            ],
            outputs=[TalkerVoice.Output("voice", display_name="voice", tooltip="The reference voice.")],
        )

    @classmethod
    def execute(cls, codec, speaker_encoder, audio, max_seconds) -> io.NodeOutput:
        from talker_core.pipeline import encode_voice

        wav, rate = host.audio_input(audio, "reference audio")
        with host.collect_warnings() as warnings:
            voice = encode_voice(codec.ready(), speaker_encoder.ready(), wav, rate, max_seconds=max_seconds)
        return io.NodeOutput(voice, ui=summary_ui(f"voice: {voice.speech.seconds:.2f} s used", warnings=warnings))


class TalkerEncodeSpeech(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerEncodeSpeech",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerEncodeSpeech"]),
            display_name="Encode Speech",
            category=f"{CATEGORY}/encode",
            description="Driving audio → speech latents, for audio-driven video (A2V): connect to the sampler's "
            "forced_speech input.",
            inputs=[
                TalkerCodec.Input("codec", tooltip="From Load Speech Codec."),
                io.Audio.Input("audio", tooltip="The speech the face should say (any rate and length; mixed to mono)."),
                io.Float.Input(
                    "max_seconds",
                    default=0.0,
                    min=0.0,
                    max=3600.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Use at most this many seconds of the audio; 0 uses all of it.",
                ),
            ],
            outputs=[TalkerSpeech.Output("speech", display_name="speech", tooltip="Speech latents at 25 Hz.")],
        )

    @classmethod
    def execute(cls, codec, audio, max_seconds) -> io.NodeOutput:
        from talker_core.pipeline import encode_speech

        wav, rate = host.audio_input(audio, "driving audio")
        vae = codec.ready()
        with host.interruptible(), host.collect_warnings() as warnings:
            speech = encode_speech(vae, wav, rate, max_seconds=max_seconds or None, hooks=host.make_hooks())
        return io.NodeOutput(speech, ui=summary_ui(f"speech: {speech.seconds:.2f} s encoded", warnings=warnings))


class TalkerEncodeFace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerEncodeFace",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerEncodeFace"]),
            display_name="Encode Face",
            category=f"{CATEGORY}/encode",
            description="A face image → the identity to animate. The face is found and framed head and "
            "shoulders (as the face model was trained), then resized to 512×512; with no face found, or "
            "framing 'centre', the centred square is used; a crop_size > 0 takes your own square. The "
            "square travels with the face (for Talker-T2AV Paste Back). From a batch (e.g. video "
            "frames), the frame at frame_index is used, cut by one square for the whole clip (the face found "
            "in its first second, as Encode Motion frames it).",
            inputs=[
                TalkerFaceModel.Input("face_model", tooltip="From Load Face Model."),
                io.Image.Input("image", tooltip="The face (IMAGE). With a batch, one frame is picked by frame_index."),
                io.Int.Input(
                    "frame_index",
                    default=0,
                    min=0,
                    max=100000,
                    tooltip="Which image of a batch to use (0 = the first). Ignored for a single image.",
                ),
                _framing_input(),
                *_crop_inputs(),
            ],
            outputs=[TalkerFace.Output("face", display_name="face", tooltip="The face identity.")],
        )

    @classmethod
    def execute(
        cls, face_model, image, frame_index, framing="detect", crop_x=0, crop_y=0, crop_size=0
    ) -> io.NodeOutput:
        from talker_core.pipeline import encode_face

        if image.ndim == 4:
            if frame_index >= image.shape[0]:
                raise ValueError(
                    f"frame_index {frame_index} is out of range: the image batch has {image.shape[0]} frame(s)"
                )
            if image.shape[0] > 1:
                log.info("Encode Face: using frame %d of a batch of %d", frame_index, image.shape[0])
        crop = (crop_x, crop_y, crop_size) if crop_size > 0 else None
        if image.ndim == 4 and image.shape[0] > 1:  # a clip: one square for all of it, as Encode Motion cuts
            from talker_core.media.framing import choose_clip_crop

            crop = choose_clip_crop(image, framing=framing, crop=crop, name="image")
            image = image[frame_index]
        elif image.ndim == 4:
            image = image[0]
        face = encode_face(face_model.ready(), image, framing=framing, crop=crop, name="image")
        return io.NodeOutput(host.identity_to_cpu(face))


class TalkerEncodeMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerEncodeMotion",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerEncodeMotion"]),
            display_name="Encode Motion",
            category=f"{CATEGORY}/encode",
            description="Video frames of a talking face → motion codes at 25 fps (frames are picked on a 25 fps "
            "clock from the given rate), each cut by one square for the whole clip: the face found in its "
            "first second and framed as Encode Face does (framing / crop inputs as there). Use for dubbing (sampler forced_motion, V2A) or as the "
            "style reference (sampler reference_motion). Load a clip with Load Video → Get Video "
            "Components.",
            inputs=[
                TalkerFaceModel.Input("face_model", tooltip="From Load Face Model."),
                io.Image.Input("images", tooltip="The clip's frames (IMAGE batch), one face."),
                io.Float.Input(
                    "fps",
                    default=25.0,
                    min=1.0,
                    max=240.0,
                    step=0.001,
                    tooltip="Frame rate of the images (connect Get Video Components' fps).",
                ),
                io.Float.Input(
                    "max_seconds",
                    default=0.0,
                    min=0.0,
                    max=3600.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Encode at most this many seconds; 0 encodes the whole clip.",
                ),
                _framing_input(),
                *_crop_inputs(),
            ],
            outputs=[TalkerMotion.Output("motion", display_name="motion", tooltip="Motion codes at 25 Hz.")],
        )

    @classmethod
    def execute(
        cls, face_model, images, fps, max_seconds, framing="detect", crop_x=0, crop_y=0, crop_size=0
    ) -> io.NodeOutput:
        from talker_core.media.framing import choose_clip_crop
        from talker_core.pipeline import encode_motion

        liax = face_model.ready()
        with host.interruptible(), host.collect_warnings() as warnings:
            if images.ndim != 4 or images.shape[0] == 0:
                raise ValueError(f"images must be a batch of frames (N, H, W, 3), got shape {tuple(images.shape)}")
            crop = (crop_x, crop_y, crop_size) if crop_size > 0 else None
            box = choose_clip_crop(images, framing=framing, crop=crop, name="images", fps=fps)
            motion = encode_motion(
                liax, images, fps, max_seconds=max_seconds or None, hooks=host.make_hooks(), crop=box
            )
        return io.NodeOutput(motion, ui=summary_ui(f"motion: {motion.seconds:.2f} s encoded", warnings=warnings))
