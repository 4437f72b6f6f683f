"""Audio decoding through PyAV: any container or codec FFmpeg reads, to float32 (C, T)."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch

from talker_core.media._common import (
    _AUDIO_EXAMPLES,
    _IMAGE_SUFFIXES,
    MAX_AUDIO_CHANNELS,
    MediaError,
    PathLike,
    _check_limit,
    _declared_seconds,
    _existing_file,
    _import_av,
    _open_container,
    warn_clipping,
    warn_truncated,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- audio


def _packed_float_resampler(av, frame):
    """A resampler to packed float32 at the frame's own rate and layout (no rate or channel change)."""
    return av.AudioResampler(format="flt", layout=frame.layout, rate=frame.sample_rate)


def _take(chunks: list, frame, channels: int, total: int, limit: Optional[int]) -> int:
    """Append one packed-float frame as (C, n) float32, up to ``limit`` samples in all; returns the new total."""
    if limit is not None and total >= limit:
        return total
    flat = frame.to_ndarray()  # packed: (1, samples·C) interleaved float32
    arr = flat.reshape(-1, channels).T
    if limit is not None and total + arr.shape[1] > limit:
        arr = arr[:, : limit - total]
    chunks.append(np.array(arr, dtype=np.float32, copy=True))  # own the memory: the frame's buffer is reused
    return total + arr.shape[1]


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
        declared = _declared_seconds(container, stream)
        chunks: list[np.ndarray] = []
        total = 0
        rate: Optional[int] = None
        channels: Optional[int] = None
        limit: Optional[int] = None
        resampler = None
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                if rate is None:
                    rate = int(frame.sample_rate)
                    channels = int(frame.layout.nb_channels)
                    if not 1 <= channels <= MAX_AUDIO_CHANNELS:
                        raise MediaError(
                            f"audio file {p} has {channels} channels; at most {MAX_AUDIO_CHANNELS} are supported. "
                            "Mix it down to mono or stereo first"
                        )
                    limit = None if max_s is None else max(1, int(round(max_s * rate)))
                    resampler = _packed_float_resampler(av, frame)
                elif int(frame.sample_rate) != rate or int(frame.layout.nb_channels) != channels:
                    logger.warning(
                        "%s changes sample rate or channel layout after %.2f s; stopping there",
                        p,
                        total / rate,
                    )
                    break
                # The decoder's own resampler turns any sample format and layout into packed float32
                # (one plane): PyAV's planar-to-numpy path is never used (it overruns with > 8 channels).
                assert resampler is not None and channels is not None  # set with the first frame
                for out in resampler.resample(frame):
                    total = _take(chunks, out, channels, total, limit)
                if limit is not None and total >= limit:
                    break
            else:
                if resampler is not None and channels is not None:
                    for out in resampler.resample(None):
                        total = _take(chunks, out, channels, total, limit)
        except av.error.EOFError:
            pass  # a stream that ends without packets
        except (av.error.FFmpegError, ValueError) as exc:
            if isinstance(exc, MediaError):
                raise
            if not total or rate is None:
                raise MediaError(
                    f"audio file {p} could not be decoded ({exc}); the file is damaged or not audio FFmpeg reads"
                ) from exc
            logger.warning(
                "audio file %s is damaged or truncated: decoding stops at %.2f s%s (%s); only the first %.2f s are used",
                p,
                total / rate,
                f" of the {declared:.2f} s it declares" if declared else "",
                exc,
                total / rate,
            )
            limit = total  # what decoded is used; no second warning
    if total == 0 or rate is None:
        raise MediaError(f"audio file {p} contains no audio samples; give a file with sound in it")
    wav = np.concatenate(chunks, axis=1) if len(chunks) > 1 else np.ascontiguousarray(chunks[0])
    if not np.isfinite(wav).all():
        raise MediaError(f"audio file {p} decodes to non-finite samples (NaN/inf); re-export it as 16-bit PCM wav")
    warn_clipping(wav, f"audio file {p}")
    np.clip(wav, -1.0, 1.0, out=wav)
    if limit is None or total < limit:
        warn_truncated(f"audio file {p}", declared, total / rate)
    logger.debug("loaded %s: %d ch, %d Hz, %.2f s", p, channels, rate, total / rate)
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), rate
