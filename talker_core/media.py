"""Media input and output: audio, video and image decoding (PyAV), MP4 and WAV writing.

Reading goes through PyAV (FFmpeg's libraries), so every container and codec it
knows works: wav, flac, mp3, m4a/aac, ogg, opus, the audio track of an mp4 or mkv,
png/jpeg/webp stills, and any video. Writing MP4 pipes raw frames into the ffmpeg
binary shipped by ``imageio-ffmpeg`` (H.264 yuv420p + AAC). Everything here is pure
Python/PyTorch; nothing imports ComfyUI.

Decoding stops as soon as the requested span is read (``max_seconds``,
``max_frames``), so a 45-minute file costs only the part that is used. Writing is
atomic: the output appears under its final name only when complete.

Legend: C audio channels, T audio samples, N video frames, H height, W width.
Audio waveforms are float32 (C, T) in [-1, 1]; frames are uint8 (N, H, W, 3) RGB.

Identity image (MODEL.md §7): RGB, centre-cropped to a square, resized to
512×512 with area interpolation, scaled to [-1, 1] — ``prepare_identity_image``.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MediaError",
    "MAX_IMAGE_PIXELS",
    "MAX_DECODED_VIDEO_BYTES",
    "IDENTITY_SIZE",
    "load_audio",
    "decode_video",
    "load_video_frames",
    "resample_frames_to_fps",
    "load_image",
    "prepare_identity_image",
    "write_wav",
    "write_mp4",
    "probe_media",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MAX_IMAGE_PIXELS = 64_000_000  # larger stills are refused before their pixels are decoded
MAX_DECODED_VIDEO_BYTES = 8 * 1024**3  # decoded RGB frames kept in memory by one load_video_frames call
IDENTITY_SIZE = 512  # LIA-X input side (MODEL.md §7)
SMALL_IDENTITY_WARN = 128  # shorter side below which the upscaled face will be visibly soft
AAC_RATES = (44_100, 48_000)  # other rates are resampled to 48 kHz for the AAC track

_AUDIO_EXAMPLES = "give an audio file (wav, mp3, flac, m4a, ogg…) or a video with sound"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic"}


class MediaError(ValueError):
    """A media file or array that cannot be used; the message names it and says what to do."""


# --------------------------------------------------------------------------- helpers


def _import_av():
    try:
        import av  # noqa: PLC0415  (lazy: importing this module must not need PyAV)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading media files needs PyAV: pip install av") from exc
    return av


def _existing_file(path: PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MediaError(f"{what} {p} does not exist; check the path")
    if not p.is_file():
        raise MediaError(f"{what} {p} is not a file; give the path of a file")
    if p.stat().st_size == 0:
        raise MediaError(f"{what} {p} is empty (0 bytes); give a complete file")
    return p


def _open_container(p: Path, what: str):
    av = _import_av()
    try:
        return av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise MediaError(
            f"{what} {p} could not be opened as a media file ({exc}); "
            "it is damaged or not in a format FFmpeg reads"
        ) from exc


def _check_limit(name: str, value, *, allow_none: bool = True, positive: bool = True):
    if value is None:
        if allow_none:
            return None
        raise MediaError(f"{name} is required")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise MediaError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v) or (positive and v <= 0) or (not positive and v < 0):
        raise MediaError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value!r}")
    return v


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise MediaError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")


def _samples_to_float(arr: np.ndarray, fmt_name: str) -> np.ndarray:
    """PyAV sample array (any sample format) → float32 in nominal [-1, 1]."""
    if arr.dtype == np.uint8:  # u8 / u8p: offset binary
        return (arr.astype(np.float32) - 128.0) / 128.0
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    if arr.dtype == np.int32:
        return (arr.astype(np.float64) / 2147483648.0).astype(np.float32)
    if arr.dtype == np.int64:
        return (arr.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    if arr.dtype in (np.float32, np.float64):
        return arr.astype(np.float32, copy=False)
    raise MediaError(f"unsupported audio sample format {fmt_name} ({arr.dtype})")  # pragma: no cover


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
                        p, total / rate,
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
            raise MediaError(f"audio file {p} could not be decoded{where} ({exc}); the file is damaged or truncated") from exc
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


# --------------------------------------------------------------------------- video


def _frame_rgb(frame) -> np.ndarray:
    """Decoded VideoFrame → uint8 (H, W, 3), honouring the display rotation (phone videos)."""
    arr = frame.to_ndarray(format="rgb24")
    rot = int(frame.rotation or 0)
    k = int(round(rot / 90.0)) % 4
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k=k))
    return arr


def _output_count(t_first: float, t_last: float, frame_dur: float, target_fps: float) -> int:
    """Frames at ``target_fps`` that fit in [t_first, t_last + frame_dur) (at least 1)."""
    return max(1, int(math.floor((t_last - t_first + frame_dur) * target_fps + 1e-6)))


def _nearest_indices(ts: np.ndarray, target_fps: float, count: int) -> np.ndarray:
    """Index of the frame nearest in time to each output time t0 + k / fps (ties → earlier frame)."""
    out_t = ts[0] + np.arange(count, dtype=np.float64) / target_fps
    prev = np.clip(np.searchsorted(ts, out_t, side="right") - 1, 0, len(ts) - 1)
    nxt = np.minimum(prev + 1, len(ts) - 1)
    take_next = (ts[nxt] - out_t) < (out_t - ts[prev])
    return np.where(take_next, nxt, prev)


def _median_step(ts: Sequence[float], fallback: float) -> float:
    if len(ts) < 2:
        return fallback
    return float(np.median(np.diff(np.asarray(ts, dtype=np.float64))))


class _NearestSelector:
    """Streaming form of :func:`_nearest_indices`: keeps only the frames it selects."""

    def __init__(self, target_fps: float, max_out: Optional[int]):
        self.fps = target_fps
        self.max_out = max_out
        self.t0: Optional[float] = None
        self.prev = None  # (t, frame)
        self.k = 0
        self.out: list[np.ndarray] = []

    def _emit(self, frame) -> None:
        self.out.append(frame)
        self.k += 1

    @property
    def full(self) -> bool:
        return self.max_out is not None and len(self.out) >= self.max_out

    def push(self, t: float, frame: np.ndarray) -> None:
        if self.prev is None:
            self.t0 = t
        else:
            tp, fp = self.prev
            while not self.full:
                tk = self.t0 + self.k / self.fps
                if tk > t:
                    break
                self._emit(frame if (t - tk) < (tk - tp) else fp)
        self.prev = (t, frame)

    def finish(self, count: int) -> list[np.ndarray]:
        if self.prev is not None:
            limit = count if self.max_out is None else min(count, self.max_out)
            while self.k < limit:
                self._emit(self.prev[1])
        return self.out


def _decode_video(
    path: PathLike,
    max_frames: Optional[int],
    max_seconds: Optional[float],
    start_seconds: float,
    target_fps: Optional[float],
):
    p = _existing_file(path, "video file")
    max_s = _check_limit("max_seconds", max_seconds)
    start = _check_limit("start_seconds", start_seconds or 0.0, positive=False)
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise MediaError(f"max_frames must be a positive integer, got {max_frames!r}")
    tgt = _check_limit("target_fps", target_fps)
    av = _import_av()
    with _open_container(p, "video file") as container:
        if not container.streams.video:
            raise MediaError(f"{p} has no video stream; give a video file (mp4, mov, mkv, webm…)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else None
        nominal = stream.average_rate or stream.guessed_rate or stream.base_rate
        nominal_fps = float(nominal) if nominal else 25.0
        t_zero = float(stream.start_time * stream.time_base) if (stream.start_time is not None and tb) else None
        if start > 0:
            base = t_zero or 0.0
            try:
                container.seek(int((base + start) / tb), stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, TypeError, ZeroDivisionError):
                logger.debug("%s: seek failed, decoding from the start", p)
                container.seek(0)
        tol = 0.5 / nominal_fps  # a frame is "at" start_seconds if within half a frame
        selector = _NearestSelector(tgt, max_frames) if tgt else None
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        kept_bytes = 0
        last_t: Optional[float] = None
        first_shape: Optional[tuple] = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = (last_t + 1.0 / nominal_fps) if last_t is not None else (t_zero or 0.0)
                if t_zero is None:
                    t_zero = t
                if last_t is not None and t <= last_t:
                    logger.debug("%s: frame at %.4f s does not advance time, skipped", p, t)
                    continue
                last_t = t
                rel = t - t_zero - start
                if rel < -tol:
                    continue
                if max_s is not None and rel >= max_s - 1e-4:
                    break
                rgb = _frame_rgb(frame)
                if first_shape is None:
                    first_shape = rgb.shape
                elif rgb.shape != first_shape:
                    raise MediaError(
                        f"video file {p} changes frame size at {rel:.2f} s ({first_shape[1]}×{first_shape[0]} → "
                        f"{rgb.shape[1]}×{rgb.shape[0]}); re-encode it at one size or pass max_seconds"
                    )
                stamps.append(rel)
                if selector is not None:
                    selector.push(rel, rgb)
                    kept_bytes = (len(selector.out) + 1) * rgb.nbytes
                    if selector.full:
                        break
                else:
                    frames.append(rgb)
                    kept_bytes += rgb.nbytes
                    if max_frames is not None and len(frames) >= max_frames:
                        break
                if kept_bytes > MAX_DECODED_VIDEO_BYTES:
                    raise MediaError(
                        f"video file {p}: decoded frames exceed {MAX_DECODED_VIDEO_BYTES / 1024**3:.0f} GiB "
                        f"after {rel:.1f} s; pass max_seconds or max_frames to read a shorter part"
                    )
        except av.error.EOFError:
            pass  # a stream that ends without packets
        except av.error.FFmpegError as exc:
            raise MediaError(f"video file {p} could not be decoded ({exc}); the file is damaged or truncated") from exc
    if not stamps:
        where = f" after {start:.2f} s" if start > 0 else ""
        raise MediaError(f"video file {p} has no video frames{where}; give a video with at least one frame")
    ts = np.asarray(stamps, dtype=np.float64)
    if selector is not None:
        step = _median_step(stamps, 1.0 / nominal_fps)
        end = ts[-1] + step
        if max_s is not None:
            end = min(end, max_s)
        count = max(1, int(math.floor((end - ts[0]) * tgt + 1e-6)))  # as _output_count, capped by max_seconds
        out = selector.finish(count)
        out_ts = ts[0] + np.arange(len(out), dtype=np.float64) / tgt
        return out, out_ts, float(tgt), p
    span = ts[-1] - ts[0]
    fps = (len(ts) - 1) / span if len(ts) > 1 and span > 0 else nominal_fps
    return frames, ts, float(fps), p


def decode_video(
    path: PathLike,
    max_frames: Optional[int] = None,
    max_seconds: Optional[float] = None,
    start_seconds: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Decode the first video stream with each frame's presentation time.

    Args:
        path: any video PyAV reads (constant or variable frame rate).
        max_frames: stop after this many frames.
        max_seconds: stop at this many seconds after ``start_seconds``.
        start_seconds: seek here first (frames within half a frame before it are kept).

    Returns:
        ``(frames, timestamps, fps)``: frames uint8 (N, H, W, 3) RGB (display
        rotation applied); timestamps float64 (N,) seconds relative to
        ``start_seconds``, strictly increasing (frames that do not advance time are
        dropped); fps the mean rate of the decoded frames (``(N-1)/span``).
    """
    frames, ts, fps, _ = _decode_video(path, max_frames, max_seconds, start_seconds, None)
    return torch.from_numpy(np.stack(frames)), torch.from_numpy(ts), fps


def load_video_frames(
    path: PathLike,
    max_frames: Optional[int] = None,
    max_seconds: Optional[float] = None,
    start_seconds: float = 0.0,
    target_fps: Optional[float] = None,
) -> tuple[torch.Tensor, float]:
    """Decode video frames, optionally re-timed to a constant rate.

    Only the span needed is decoded: decoding stops at ``max_frames`` /
    ``max_seconds``, and ``start_seconds`` seeks instead of decoding from the start.

    Args:
        path: any video PyAV reads.
        max_frames: at most this many *returned* frames (counted at ``target_fps``
            when that is given).
        max_seconds: at most this many seconds after ``start_seconds``.
        start_seconds: where to start, in seconds from the stream start.
        target_fps: ``None`` returns the decoded frames as they are (a variable
            frame rate clip then has uneven spacing: use :func:`decode_video` for
            the timestamps). A number (e.g. 25) returns frames at exactly that
            rate, picking for each output time ``k / target_fps`` the decoded frame
            nearest in time (drops frames from faster clips, repeats frames of
            slower ones); frames that are never picked are not kept in memory.

    Returns:
        ``(frames, fps)``: frames uint8 torch tensor (N, H, W, 3) RGB; fps float —
        ``target_fps`` when given, else the mean rate of the decoded frames.
    """
    frames, _, fps, _ = _decode_video(path, max_frames, max_seconds, start_seconds, target_fps)
    return torch.from_numpy(np.stack(frames)), fps


def resample_frames_to_fps(
    frames: torch.Tensor,
    timestamps_or_fps: Union[float, int, torch.Tensor, np.ndarray, Sequence[float]],
    target_fps: float = 25.0,
) -> torch.Tensor:
    """Re-time frames to a constant rate by nearest-frame selection.

    Args:
        frames: (N, H, W, C) tensor, any dtype (returned as is, frames are only picked).
        timestamps_or_fps: either the source frame rate (a number: frame i at i / fps)
            or the presentation time of each frame, (N,) seconds, strictly increasing
            (variable frame rate).
        target_fps: output rate.

    Returns:
        (M, H, W, C) tensor where output frame k is the input frame nearest in time to
        ``t_0 + k / target_fps`` (ties → the earlier frame), and M = ⌊duration ·
        target_fps⌋ (at least 1), duration = last time − first time + one source frame
        (the median spacing). 60 fps → 25 fps drops frames; 24 fps → 25 fps repeats
        about one frame in 24.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim < 1 or frames.shape[0] == 0:
        raise MediaError("frames must be a non-empty tensor (N, H, W, C)")
    n = int(frames.shape[0])
    tgt = _check_limit("target_fps", target_fps, allow_none=False)
    if isinstance(timestamps_or_fps, (int, float)) and not isinstance(timestamps_or_fps, bool):
        src = _check_limit("source fps", timestamps_or_fps, allow_none=False)
        ts = np.arange(n, dtype=np.float64) / src
        step = 1.0 / src
    else:
        ts = np.asarray(
            timestamps_or_fps.detach().cpu().numpy() if isinstance(timestamps_or_fps, torch.Tensor) else timestamps_or_fps,
            dtype=np.float64,
        ).reshape(-1)
        if ts.shape[0] != n:
            raise MediaError(f"got {n} frames but {ts.shape[0]} timestamps; give one timestamp per frame")
        if not np.isfinite(ts).all():
            raise MediaError("timestamps contain NaN/inf")
        if n > 1 and not (np.diff(ts) > 0).all():
            raise MediaError("timestamps must be strictly increasing (sort the frames by presentation time)")
        step = _median_step(ts, 1.0 / tgt)
    count = _output_count(ts[0], ts[-1], step, tgt)
    idx = _nearest_indices(ts, tgt, count)
    return frames[torch.from_numpy(idx)]


# --------------------------------------------------------------------------- images


def _size_guard(p: Path, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise MediaError(
            f"image {p} is {w}×{h} ({w * h / 1e6:.0f} megapixels), above the {max_pixels / 1e6:.0f} MP limit; "
            "downscale it first (the face is resized to 512×512 anyway)"
        )


def _pil_to_rgb(img) -> np.ndarray:
    """Pillow image (any mode) → uint8 (H, W, 3); alpha is dropped (ComfyUI's LoadImage does the same)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        arr = np.clip(np.round(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        logger.debug("image has an alpha channel; it is dropped (transparent pixels keep their stored colour)")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _load_image_pillow(p: Path, max_pixels: int) -> Optional[np.ndarray]:
    try:
        from PIL import Image, ImageOps  # noqa: PLC0415
    except ImportError:
        return None
    try:
        with Image.open(p) as img:
            _size_guard(p, img.width, img.height, max_pixels)
            img = ImageOps.exif_transpose(img)  # phone photos: apply the EXIF orientation
            return _pil_to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise MediaError(
            f"image {p} is too large to open safely ({exc}); downscale it first"
        ) from exc
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, MediaError):
            raise
        logger.debug("Pillow cannot read %s (%s); trying PyAV", p, exc)
        return None


def _load_image_av(p: Path, max_pixels: int) -> np.ndarray:
    av = _import_av()
    with _open_container(p, "image file") as container:
        if not container.streams.video:
            raise MediaError(f"{p} has no image in it; give an image file (png, jpg, webp…)")
        stream = container.streams.video[0]
        cc = stream.codec_context
        if cc.width and cc.height:
            _size_guard(p, cc.width, cc.height, max_pixels)
        try:
            for frame in container.decode(stream):
                _size_guard(p, frame.width, frame.height, max_pixels)
                return _frame_rgb(frame)
        except av.error.FFmpegError as exc:
            raise MediaError(f"image file {p} could not be decoded ({exc}); the file is damaged") from exc
    raise MediaError(f"image file {p} contains no picture; give an image file (png, jpg, webp…)")


def load_image(path: PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Read a still image (or the first frame of a video) as RGB.

    Pillow is used when installed (EXIF orientation applied, as ComfyUI's LoadImage
    does); anything Pillow cannot read goes through PyAV. Grayscale and palette
    images are expanded to RGB, 16-bit images scaled to 8 bits, and an alpha channel
    is *dropped* (transparent pixels keep their stored colour — the same as
    ComfyUI's LoadImage, so a file gives the same identity in the graph and from
    the command line). Animated files give their first frame.

    Args:
        path: png, jpeg, webp, bmp, gif, tiff… or a video.
        max_pixels: larger images are refused from their header, before decoding.

    Returns:
        uint8 torch tensor (H, W, 3).
    """
    p = _existing_file(path, "image file")
    arr = _load_image_pillow(p, max_pixels)
    if arr is None:
        arr = _load_image_av(p, max_pixels)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(f"image file {p} decoded to an unusable shape {arr.shape}")  # pragma: no cover
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def prepare_identity_image(
    img: Union[torch.Tensor, np.ndarray],
    name: str = "identity image",
    size: int = IDENTITY_SIZE,
    warn_small: bool = True,
) -> torch.Tensor:
    """Turn one image into the LIA-X identity input (MODEL.md §7).

    Steps: channels → RGB (1 channel repeated; 2 = gray+alpha and 4 = RGBA: alpha
    dropped, as in :func:`load_image`); a non-square image is centre-cropped to a
    square of its shorter side (never stretched); the square is resized to
    ``size``×``size`` — area interpolation (``F.interpolate(mode="area")``, the
    reference's method) when shrinking, bicubic clamped to [0, 1] when enlarging
    (area interpolation of an enlargement is nearest-neighbour blockiness); scaled
    to [-1, 1]. Any size down to 1×1 is accepted (tests and previews use tiny
    images); below 128 px on the shorter side a warning says the face will be soft.

    Args:
        img: one image, (H, W, C) or (1, H, W, C) or (H, W); uint8 (0–255), uint16
            (0–65535), or float in [0, 1] (ComfyUI IMAGE); C in {1, 2, 3, 4}.
        name: how errors refer to this input (e.g. the node socket name).
        size: output side (512 for the release).
        warn_small: log the small-image warning (turn off when preparing every frame of a clip).

    Returns:
        float32 tensor (3, size, size) in [-1, 1] on the input's device.
    """
    if isinstance(img, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(img))
    elif isinstance(img, torch.Tensor):
        x = img.detach()
    else:
        raise MediaError(f"{name} must be an image tensor or array (H, W, C), got {type(img).__name__}")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise MediaError(
                f"{name} is a batch of {x.shape[0]} images; give exactly one "
                "(pick one with an image-from-batch node, or the first frame of a video)"
            )
        x = x[0]
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise MediaError(f"{name} must have shape (H, W, C) or (1, H, W, C), got {tuple(img.shape)}")
    h, w, c = (int(s) for s in x.shape)
    if c not in (1, 2, 3, 4):
        hint = " (it looks channels-first: permute to (H, W, C))" if h in (1, 3, 4) else ""
        raise MediaError(f"{name} must have 1, 3 or 4 channels last, got shape {tuple(x.shape)}{hint}")
    if h == 0 or w == 0:
        raise MediaError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif getattr(torch, "uint16", None) is not None and x.dtype == torch.uint16:
        x = x.float() / 65535.0
    elif x.dtype == torch.int32 or x.dtype == torch.int16:
        raise MediaError(f"{name} has integer type {x.dtype}; give uint8 (0–255) or float (0–1)")
    elif x.is_floating_point():
        x = x.float()
        if not torch.isfinite(x).all():
            raise MediaError(f"{name} contains NaN or inf values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            hint = "divide by 255" if hi > 1.5 else "map [-1, 1] to [0, 1] with (x + 1) / 2"
            raise MediaError(f"{name} float values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; {hint}")
        x = x.clamp(0.0, 1.0)
    else:
        raise MediaError(f"{name} has unsupported type {x.dtype}; give uint8 (0–255) or float (0–1)")
    if c in (1, 2):
        x = x[..., :1].expand(h, w, 3)
    else:
        x = x[..., :3]
    side = min(h, w)
    if warn_small and side < SMALL_IDENTITY_WARN:
        logger.warning("%s is only %d×%d px; it is enlarged to %d×%d and the face will be soft", name, w, h, size, size)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[top : top + side, left : left + side].permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, S, S)
    if side > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    elif side < size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return (x[0] * 2.0 - 1.0).to(torch.float32).contiguous()


# --------------------------------------------------------------------------- writing


def _audio_array(audio, name: str = "audio") -> np.ndarray:
    """(C, T) or (T,) tensor/array → float32 (C, T) clipped to [-1, 1]."""
    a = _as_numpy(audio, name)
    if a.ndim == 3 and a.shape[0] == 1:  # ComfyUI AUDIO waveform (1, C, T)
        a = a[0]
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[0] > 8:
        raise MediaError(f"{name} must be (channels, samples) with 1–8 channels, got shape {a.shape}")
    if a.shape[1] == 0:
        raise MediaError(f"{name} has no samples")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise MediaError(f"{name} contains NaN or inf samples")
    return np.clip(a, -1.0, 1.0)


def _temp_beside(path: Path, suffix: str) -> Path:
    """An unused hidden name in the output folder (same file system, so the final rename is atomic).

    The file itself is created by its writer, so it gets the usual permissions (umask),
    unlike ``mkstemp``'s private 0600 files.
    """
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"


def _unlink_quietly(p: Optional[Path]) -> None:
    if p is not None:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover
            logger.warning("could not remove temporary file %s: %s", p, exc)


def _write_wav_file(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(wav.T * 32767.0).astype("<i2")  # (T, C) interleaved, little-endian
    try:
        fh = open(path, "xb")
    except OSError as exc:
        raise MediaError(f"cannot write {path} ({exc}); choose a writable output folder") from exc
    with fh, wave.open(fh, "wb") as w:
        w.setnchannels(wav.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def _check_rate(sample_rate) -> int:
    if sample_rate is None or isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise MediaError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _output_path(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        raise MediaError(f"output {p} is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaError(f"cannot create output folder {p.parent} ({exc}); choose a writable location") from exc
    return p


def write_wav(path: PathLike, waveform, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV atomically (temporary file beside it, renamed when complete).

    Args:
        path: output file.
        waveform: (C, T) or (T,) float tensor/array in [-1, 1] (clipped); also (1, C, T).
        sample_rate: Hz.

    Returns:
        The written path.
    """
    wav = _audio_array(waveform, "waveform")
    rate = _check_rate(sample_rate)
    out = _output_path(path)
    tmp = _temp_beside(out, ".tmp.wav")
    try:
        _write_wav_file(tmp, wav, rate)
        os.replace(tmp, out)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return out


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _frames_u8(chunk: torch.Tensor, start: int) -> np.ndarray:
    """(n, H, W, 3) uint8 or float [0, 1] chunk → uint8 numpy (n, H, W, 3)."""
    if chunk.dtype == torch.uint8:
        return chunk.cpu().numpy()
    c = chunk.detach().float().cpu()
    if not torch.isfinite(c).all():
        raise MediaError(f"frames {start}–{start + len(c) - 1} contain NaN or inf values")
    return (c.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def _frame_chunks(frames: torch.Tensor, pad_h: int, pad_w: int, chunk: int = 16) -> Iterable[bytes]:
    for i in range(0, frames.shape[0], chunk):
        arr = _frames_u8(frames[i : i + chunk], i)
        if pad_h or pad_w:
            arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        yield np.ascontiguousarray(arr).tobytes()


def write_mp4(
    path: PathLike,
    frames,
    fps: float,
    audio=None,
    sample_rate: Optional[int] = None,
    crf: int = 18,
    *,
    preset: str = "medium",
    audio_bitrate: str = "192k",
    metadata: Optional[dict] = None,
) -> Path:
    """Write an MP4 (H.264 yuv420p, BT.709 tagged; AAC audio) atomically.

    Frames are piped raw into the ffmpeg binary of ``imageio-ffmpeg``; audio goes
    through a temporary 16-bit WAV. The audio is trimmed or zero-padded to the video
    length (N / fps), and rates other than 44.1/48 kHz are resampled to 48 kHz for
    AAC (whose 1024-sample packets would otherwise exceed one 25 fps frame), so the
    two tracks end within one frame of each other. An odd width or height is padded
    by one pixel (edge pixels repeated), as H.264 4:2:0 needs even sizes.

    The file is written under a temporary name in the output folder and renamed
    when ffmpeg succeeded; on any failure or interruption (KeyboardInterrupt) the
    temporary files are removed and an existing file at ``path`` is left untouched.

    Args:
        path: output .mp4 (parent folders are created).
        frames: (N, H, W, 3) uint8, or float in [0, 1] (ComfyUI IMAGE), tensor or array.
        fps: frame rate (25 for Talker).
        audio: optional (C, T) or (T,) float waveform in [-1, 1] (1–8 channels).
        sample_rate: audio rate in Hz, required with ``audio``.
        crf: x264 constant rate factor, 0 (lossless) – 51; 18 is visually lossless.
        preset: x264 preset (``ultrafast`` … ``veryslow``).
        audio_bitrate: AAC bitrate, ffmpeg syntax (``192k``).
        metadata: optional ``{key: text}`` stored as MP4 tags (e.g. ``comment``).

    Returns:
        The written path.
    """
    fr = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(_as_numpy(frames, "frames")))
    if fr.ndim != 4 or fr.shape[-1] != 3:
        raise MediaError(f"frames must have shape (N, H, W, 3), got {tuple(fr.shape)}")
    n, h, w = (int(s) for s in fr.shape[:3])
    if n == 0 or h == 0 or w == 0:
        raise MediaError(f"frames are empty (shape {tuple(fr.shape)}); nothing to write")
    if not (fr.dtype == torch.uint8 or fr.is_floating_point()):
        raise MediaError(f"frames must be uint8 or float in [0, 1], got {fr.dtype}")
    rate_v = _check_limit("fps", fps, allow_none=False)
    if isinstance(crf, bool) or int(crf) != crf or not 0 <= crf <= 51:
        raise MediaError(f"crf must be an integer 0–51, got {crf!r}")
    wav = None
    if audio is not None:
        wav = _audio_array(audio)
        sr = _check_rate(sample_rate)
        want = int(round(n / rate_v * sr))
        have = wav.shape[1]
        if have > want:
            wav = wav[:, :want]
        elif have < want:
            wav = np.pad(wav, ((0, 0), (0, want - have)))
        if abs(have - want) > sr / rate_v:
            logger.info("audio (%.2f s) %s to the video length (%.2f s)", have / sr,
                        "trimmed" if have > want else "padded with silence", n / rate_v)
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        logger.info("frame size %d×%d is odd; padded to %d×%d for H.264", w, h, w + pad_w, h + pad_h)
    out = _output_path(path)
    exe = _ffmpeg_exe()
    fps_str = str(Fraction(rate_v).limit_denominator(1_000_000))
    tmp_mp4: Optional[Path] = None
    tmp_wav: Optional[Path] = None
    proc = None
    try:
        tmp_mp4 = _temp_beside(out, ".tmp.mp4")
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w + pad_w}x{h + pad_h}",
               "-framerate", fps_str, "-i", "pipe:0"]
        if wav is not None:
            tmp_wav = _temp_beside(out, ".tmp.wav")
            _write_wav_file(tmp_wav, wav, sr)
            cmd += ["-i", str(tmp_wav)]
        cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if wav is not None else [])
        cmd += ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
                "-c:v", "libx264", "-preset", str(preset), "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
                "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
        if wav is not None:
            cmd += ["-c:a", "aac", "-b:a", str(audio_bitrate), "-ar", str(sr if sr in AAC_RATES else 48_000)]
        movflags = "+faststart+use_metadata_tags" if metadata else "+faststart"
        for key, value in (metadata or {}).items():
            cmd += ["-metadata", f"{key}={value}"]
        cmd += ["-movflags", movflags, "-f", "mp4", str(tmp_mp4)]
        logger.debug("ffmpeg: %s", " ".join(cmd))
        with tempfile.TemporaryFile() as errlog:
            popen_kw = {"start_new_session": True} if os.name == "posix" else {
                "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog, **popen_kw)
            except OSError as exc:
                raise MediaError(f"could not start ffmpeg ({exe}): {exc}; reinstall imageio-ffmpeg") from exc
            broken = False
            try:
                for data in _frame_chunks(fr, pad_h, pad_w):
                    proc.stdin.write(data)
            except BrokenPipeError:
                broken = True  # ffmpeg stopped reading: its log says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    broken = True
            rc = proc.wait()
            if rc != 0 or broken:
                errlog.seek(0)
                tail = errlog.read().decode("utf-8", "replace").strip()[-1500:]
                raise MediaError(f"ffmpeg could not write {out} (exit code {rc}): {tail or 'no message'}")
        if not tmp_mp4.exists() or tmp_mp4.stat().st_size == 0:
            raise MediaError(f"ffmpeg produced no output for {out}")  # pragma: no cover
        os.replace(tmp_mp4, out)
        tmp_mp4 = None
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _unlink_quietly(tmp_mp4)
        raise
    finally:
        _unlink_quietly(tmp_wav)
    logger.debug("wrote %s: %d frames at %s fps%s", out, n, fps_str, " with audio" if wav is not None else "")
    return out


# --------------------------------------------------------------------------- probing


def probe_media(path: PathLike) -> dict:
    """Describe a media file from its headers (nothing is decoded).

    Returns:
        ``{"path", "format", "duration", "streams": [...]}`` where duration is the
        container's in seconds (or None) and each stream is a dict with ``index``,
        ``type`` ("audio", "video", …), ``codec``, ``duration`` (seconds or None),
        ``frames`` (count from the header, 0 when unknown), and for video ``fps``,
        ``width``, ``height``, ``pix_fmt``; for audio ``sample_rate``, ``channels``,
        ``layout``.
    """
    p = _existing_file(path, "media file")
    with _open_container(p, "media file") as container:
        info = {
            "path": str(p),
            "format": container.format.name,
            "duration": container.duration / 1_000_000 if container.duration is not None else None,
            "streams": [],
        }
        for s in container.streams:
            cc = s.codec_context
            d = {
                "index": s.index,
                "type": s.type,
                "codec": cc.name if cc is not None else None,
                "duration": float(s.duration * s.time_base) if (s.duration is not None and s.time_base) else None,
                "frames": int(s.frames or 0),
            }
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate
                d.update(fps=float(rate) if rate else None, width=cc.width, height=cc.height,
                         pix_fmt=cc.pix_fmt)
            elif s.type == "audio":
                d.update(sample_rate=cc.sample_rate, channels=cc.channels, layout=cc.layout.name)
            info["streams"].append(d)
    return info
