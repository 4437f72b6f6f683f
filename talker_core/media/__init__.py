"""Media input and output: audio, video and image decoding (PyAV), MP4 and WAV writing.

Reading goes through PyAV (FFmpeg's libraries), so every container and codec it
knows works: wav, flac, mp3, m4a/aac, ogg, opus, the audio track of an mp4 or mkv,
png/jpeg/webp stills, and any video. Writing MP4 goes
through PyAV too, frame by frame (``Mp4Writer``: H.264 yuv420p + AAC), in this process (no external encoder is started). Everything here is pure
Python/PyTorch; nothing imports ComfyUI.

Decoding stops as soon as the requested span is read (``max_seconds``,
``max_frames``), so a 45-minute file costs only the part that is used. Writing is
atomic: the output appears under its final name only when complete.

Legend: C audio channels, T audio samples, N video frames, H height, W width.
Audio waveforms are float32 (C, T) in [-1, 1]; frames are uint8 (N, H, W, 3) RGB.

Identity image (MODEL.md §7): RGB, centre-cropped to a square, resized to
512×512 with area interpolation, scaled to [-1, 1] — ``prepare_identity_image``.

The parts: ``audio`` (decoding sound), ``video`` (decoding frames), ``image`` (stills and the
identity crop), ``output`` (WAV and MP4 writing), ``probe`` (what a file holds); ``_common``
holds the error type and the checks they share.
"""

from __future__ import annotations

from talker_core.media._common import (
    IDENTITY_SIZE,
    MAX_DECODED_VIDEO_BYTES,
    MAX_IMAGE_PIXELS,
    MediaError,
)
from talker_core.media.audio import load_audio
from talker_core.media.image import load_image, prepare_identity_image
from talker_core.media.output import Mp4Writer, write_mp4, write_wav
from talker_core.media.probe import probe_media
from talker_core.media.video import (
    decode_video,
    iter_video_frames,
    load_video_frames,
    resample_frames_to_fps,
)

__all__ = [
    "MediaError",
    "MAX_IMAGE_PIXELS",
    "MAX_DECODED_VIDEO_BYTES",
    "IDENTITY_SIZE",
    "load_audio",
    "decode_video",
    "load_video_frames",
    "iter_video_frames",
    "resample_frames_to_fps",
    "load_image",
    "prepare_identity_image",
    "write_wav",
    "write_mp4",
    "Mp4Writer",
    "probe_media",
]
