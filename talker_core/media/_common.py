"""What the media readers and writers share: the error type, limits and small checks."""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MAX_IMAGE_PIXELS = 64_000_000  # larger stills are refused before their pixels are decoded
MAX_DECODED_VIDEO_BYTES = 8 * 1024**3  # decoded RGB frames kept in memory by one load_video_frames call
IDENTITY_SIZE = 512  # LIA-X input side (MODEL.md §7)
SMALL_IDENTITY_WARN = 128  # shorter side below which the upscaled face will be visibly soft
AAC_RATES = (44_100, 48_000)  # other rates are resampled to 48 kHz for the AAC track
MAX_AUDIO_CHANNELS = 64  # more channels than this are refused (the voice is mixed to mono anyway)
CLIP_WARN_FRACTION = 0.001  # warn when more than this share of the samples lies above full scale
TRUNCATION_WARN_SECONDS = 0.5  # warn when a file decodes this much (and 5 %) shorter than its header says
IMAGE_FORMATS_THAT_WORK = "PNG, JPEG, WebP, BMP, GIF or TIFF in RGB, RGBA or grayscale"

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


def describe_non_file(p: Path) -> Optional[str]:
    """What ``p`` is when it is not a regular file ("does not exist", "is a folder", "is a pipe"...); None for a file."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return "is a broken link (its target does not exist)" if p.is_symlink() else "does not exist"
    except NotADirectoryError:
        return "does not exist (a part of the path is a file, not a folder)"
    except PermissionError:
        return "cannot be examined (permission denied on a folder of the path)"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a pipe, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"  # pragma: no cover


def _existing_file(path: PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    problem = describe_non_file(p)
    if problem is not None:
        hint = "check the path" if "exist" in problem else "give the path of a file"
        raise MediaError(f"{what} {p} {problem}; {hint}")
    if p.stat().st_size == 0:
        raise MediaError(f"{what} {p} is empty (0 bytes); give a complete file")
    if not os.access(p, os.R_OK):
        raise MediaError(f"{what} {p} cannot be read (permission denied); make it readable")
    return p


def _declared_seconds(container, stream) -> Optional[float]:
    """The duration the file's headers state for ``stream`` (the container's if the stream has none)."""
    try:
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000
    except (TypeError, ValueError, ZeroDivisionError):  # pragma: no cover - odd headers
        pass
    return None


def warn_truncated(what: str, declared: Optional[float], decoded: float) -> bool:
    """Log a warning when ``decoded`` seconds fall clearly short of the ``declared`` length; True if so."""
    if declared is None or not math.isfinite(declared) or declared <= 0:
        return False
    missing = declared - decoded
    if missing <= max(TRUNCATION_WARN_SECONDS, 0.05 * declared):
        return False
    logger.warning(
        "%s declares %.2f s but only %.2f s could be decoded: the file is truncated or damaged, and only "
        "%.2f s are used; export or download it again for the whole length",
        what,
        declared,
        decoded,
        decoded,
    )
    return True


def warn_clipping(samples, what: str) -> bool:
    """Log a warning when a noticeable share of ``samples`` (array or tensor) lies above full scale; True if so."""
    a = samples.detach().abs() if isinstance(samples, torch.Tensor) else np.abs(samples)
    over = int((a > 1.0).sum())
    if over == 0:
        return False
    total = max(int(a.size if isinstance(a, np.ndarray) else a.numel()), 1)
    peak = float(a.max())
    if over / total <= CLIP_WARN_FRACTION:
        logger.debug("%s: %d samples (peak %.3f) above full scale, clipped to [-1, 1]", what, over, peak)
        return False
    logger.warning(
        "%s: %.1f %% of the samples are above full scale (peak %.2f): it is too loud and clips, so the voice "
        "comes out distorted; lower its level (peak at most 1.0) and export it again",
        what,
        100.0 * over / total,
        peak,
    )
    return True


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
