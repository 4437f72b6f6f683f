"""From media to talking video: reference encoding, generation, decoding, rendering.

This is the layer the command line and the ComfyUI nodes call. It owns the
glue the reference's ``infer.py`` does inline (audio preparation, prefix
selection, motion normalisation, long-form segmentation) and leaves the numerics
to the components.

Legend: T frames at 25 Hz, N samples, H×W image size.
"""

from __future__ import annotations

from talker_core.pipeline.encode import (
    encode_face,
    encode_motion,
    encode_speech,
    encode_voice,
    motion_from_reference_pt,
)
from talker_core.pipeline.generate import generate
from talker_core.pipeline.render import (
    FrameRenderer,
    RenderOutOfMemory,
    SpeechDecoder,
    decode_speech,
    render_motion,
)
from talker_core.pipeline.request import (
    MAX_REFERENCE_SECONDS,
    MAX_SEGMENT_FRAMES,
    MAX_TEXT_CHARS,
    MIN_REFERENCE_SECONDS,
    Cancelled,
    Hooks,
    InputNames,
    Mode,
    TalkRequest,
    TalkResult,
)
from talker_core.pipeline.stream import StreamChunk, TalkStream, render_to_mp4, stream_talk, stream_to_mp4
from talker_core.pipeline.text import check_speakable, split_text, unspeakable_message, unspeakable_reason

__all__ = [
    "MAX_REFERENCE_SECONDS",
    "MAX_SEGMENT_FRAMES",
    "MAX_TEXT_CHARS",
    "MIN_REFERENCE_SECONDS",
    "Mode",
    "Hooks",
    "InputNames",
    "Cancelled",
    "TalkRequest",
    "TalkResult",
    "encode_voice",
    "encode_speech",
    "encode_face",
    "encode_motion",
    "motion_from_reference_pt",
    "generate",
    "decode_speech",
    "render_motion",
    "RenderOutOfMemory",
    "SpeechDecoder",
    "FrameRenderer",
    "stream_talk",
    "stream_to_mp4",
    "render_to_mp4",
    "StreamChunk",
    "TalkStream",
    "split_text",
    "check_speakable",
    "unspeakable_message",
    "unspeakable_reason",
]
