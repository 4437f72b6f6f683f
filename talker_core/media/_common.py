"""What the media readers and writers share: the error type, limits and small checks."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Union

import numpy as np
import torch

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
            f"{what} {p} could not be opened as a media file ({exc}); it is damaged or not in a format FFmpeg reads"
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
