"""Audio decoding through PyAV: any container or codec FFmpeg reads, to float32 (C, T)."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch

from talker_core.media._common import (
    _AUDIO_EXAMPLES,
    _IMAGE_SUFFIXES,
    MediaError,
    PathLike,
    _check_limit,
    _existing_file,
    _import_av,
    _open_container,
    _samples_to_float,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- audio


def load_audio(path: PathLike, max_seconds: Optional[float] = None) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of any file PyAV reads.

    Args:
        path: wav, flac, mp3, m4a/aac, ogg/opus, or a video file with an audio track.
        max_seconds: decode at most this many seconds from the start; decoding stops
            there, the rest of the file is never read. ``None`` decodes everything.

    Returns:
        ``(waveform, sample_rate)``: waveform float32 torch tensor (C, T) in [-1, 1]
        (decoded values of lossy codecs that overshoot full scale are clipped),
        channels in the file's order; sample_rate int (the file's own rate, no
        resampling).

    Raises:
        MediaError: missing/empty file, no audio stream, undecodable data, no
        samples, or non-finite samples.
    """
    p = _existing_file(path, "audio file")
    max_s = _check_limit("max_seconds", max_seconds)
    av = _import_av()
    with _open_container(p, "audio file") as container:
        if not container.streams.audio:
            kind = " (it is an image)" if container.streams.video and p.suffix.lower() in _IMAGE_SUFFIXES else ""
            raise MediaError(f"{p} has no audio stream{kind}; {_AUDIO_EXAMPLES}")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        chunks: list[np.ndarray] = []
        total = 0
        rate: Optional[int] = None
        channels: Optional[int] = None
        limit: Optional[int] = None
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                if rate is None:
                    rate = int(frame.sample_rate)
                    channels = int(frame.layout.nb_channels)
                    limit = None if max_s is None else max(1, int(round(max_s * rate)))
                elif int(frame.sample_rate) != rate or int(frame.layout.nb_channels) != channels:
                    logger.warning(
                        "%s changes sample rate or channel layout after %.2f s; stopping there",
                        p,
                        total / rate,
                    )
                    break
                arr = frame.to_ndarray()
                if not frame.format.is_planar:  # packed: (1, samples·C) interleaved
                    arr = arr.reshape(-1, channels).T
                arr = _samples_to_float(arr, frame.format.name)
                if limit is not None and total + arr.shape[1] >= limit:
                    chunks.append(arr[:, : limit - total])
                    total = limit
                    break
                chunks.append(arr)
                total += arr.shape[1]
        except av.error.EOFError:
            pass  # a stream that ends without packets
        except av.error.FFmpegError as exc:
            where = f" after {total / rate:.2f} s" if rate else ""
            raise MediaError(
                f"audio file {p} could not be decoded{where} ({exc}); the file is damaged or truncated"
            ) from exc
    if total == 0 or rate is None:
        raise MediaError(f"audio file {p} contains no audio samples; give a file with sound in it")
    wav = np.concatenate(chunks, axis=1) if len(chunks) > 1 else np.ascontiguousarray(chunks[0])
    if not np.isfinite(wav).all():
        raise MediaError(f"audio file {p} decodes to non-finite samples (NaN/inf); re-export it as 16-bit PCM wav")
    peak = float(np.abs(wav).max())
    if peak > 1.0:
        logger.debug("%s: decoded peak %.3f above full scale, clipped to [-1, 1]", p, peak)
        np.clip(wav, -1.0, 1.0, out=wav)
    logger.debug("loaded %s: %d ch, %d Hz, %.2f s", p, channels, rate, total / rate)
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), rate
