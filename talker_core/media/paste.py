"""Paste-back: rendered face frames composited into the original photo or footage at full resolution.

The identity was cut from its source as a square (:class:`talker_core.types.FaceCrop`); each
rendered frame (512×512, or any size, e.g. after an upscaler) is resized to that square in the
background's own resolution and blended in with a feathered edge, so the seam fades over a band of
``feather`` × the square's side. Edges of the square that lie on the picture's border are not
feathered (there is nothing to blend with). Optional colour matching shifts the rendered face's
per-channel mean and spread to those of the background under the square, measured once on the first
frame so the correction does not flicker.

Everything works one frame at a time (:func:`paste_frames` is a generator), so memory does not grow
with the clip's length. A background that is a clip shorter than the rendered frames plays forwards
then backwards (ping-pong) so it never jumps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sized
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from talker_core.media._common import MediaError
from talker_core.types import FaceCrop

__all__ = ["MAX_FEATHER", "box_in", "feather_mask", "ColourMatch", "paste_frame", "paste_frames", "ping_pong"]

logger = logging.getLogger(__name__)

MAX_FEATHER = 0.5  # a band of half the side on each edge: the blend reaches the square's centre


def box_in(crop: FaceCrop, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop square in a background of ``width``×``height`` (the source, or a resized copy): (x0, y0, x1, y1)."""
    left, top, bw, bh = crop.scaled_to(width, height)
    x0, y0 = int(round(left)), int(round(top))
    x1, y1 = int(round(left + bw)), int(round(top + bh))
    x0, y0 = max(0, min(x0, width - 1)), max(0, min(y0, height - 1))
    return x0, y0, max(x0 + 1, min(x1, width)), max(y0 + 1, min(y1, height))


def _ramp(n: int, band: float, soft_start: bool, soft_end: bool) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32) + 0.5
    r = torch.ones(n)
    if band > 0:
        if soft_start:
            r = torch.minimum(r, i / band)
        if soft_end:
            r = torch.minimum(r, (n - i) / band)
    r = r.clamp(0.0, 1.0)
    return r * r * (3.0 - 2.0 * r)  # smoothstep: no visible kink where the band starts


def feather_mask(
    height: int, width: int, feather: float, soft: tuple[bool, bool, bool, bool] = (True, True, True, True)
) -> torch.Tensor:
    """(height, width) blend weights in [0, 1]: 1 inside, fading to 0 over ``feather`` × side at each edge.

    ``soft`` = (left, top, right, bottom) says which edges fade; an edge on the picture's border stays hard.
    """
    if not 0.0 <= feather <= MAX_FEATHER:
        raise ValueError(f"feather must be in 0..{MAX_FEATHER}, got {feather}")
    left, top, right, bottom = soft
    rx = _ramp(width, feather * width, left, right)
    ry = _ramp(height, feather * height, top, bottom)
    return ry[:, None] * rx[None, :]


def _as_float_frame(frame, name: str) -> torch.Tensor:
    x = frame if isinstance(frame, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frame))
    if x.ndim != 3 or x.shape[-1] not in (3, 4):
        raise MediaError(f"{name} must be one frame (H, W, 3), got shape {tuple(x.shape)}")
    x = x[..., :3]
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise MediaError(f"{name} must be uint8 or float in [0, 1], got {x.dtype}")
    return x.float().clamp(0.0, 1.0)


def _resize(face: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(fh, fw, 3) → (h, w, 3): antialiased when shrinking, bicubic when enlarging."""
    if face.shape[0] == h and face.shape[1] == w:
        return face
    x = face.permute(2, 0, 1)[None]
    shrink = h < face.shape[0] or w < face.shape[1]
    x = F.interpolate(x, size=(h, w), mode="bilinear" if shrink else "bicubic", align_corners=False, antialias=shrink)
    return x[0].permute(1, 2, 0).clamp(0.0, 1.0)


class ColourMatch:
    """Per-channel mean/spread transfer from the rendered face to the background under the square."""

    def __init__(self, face: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
        w = weight[..., None]
        total = w.sum().clamp_min(1e-6)
        mf = (face * w).sum((0, 1)) / total
        mt = (target * w).sum((0, 1)) / total
        sf = (((face - mf) ** 2 * w).sum((0, 1)) / total).sqrt()
        st = (((target - mt) ** 2 * w).sum((0, 1)) / total).sqrt()
        self.gain = (st / sf.clamp_min(1e-4)).clamp(0.5, 2.0)
        self.face_mean, self.target_mean = mf, mt

    def __call__(self, face: torch.Tensor) -> torch.Tensor:
        return ((face - self.face_mean) * self.gain + self.target_mean).clamp(0.0, 1.0)


def paste_frame(
    face,
    background,
    crop: FaceCrop,
    feather: float = 0.1,
    colour: Optional[ColourMatch] = None,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One rendered frame into one background frame → uint8 (H, W, 3) at the background's size."""
    bg = _as_float_frame(background, "background frame")
    fc = _as_float_frame(face, "rendered frame")
    h, w = int(bg.shape[0]), int(bg.shape[1])
    x0, y0, x1, y1 = box_in(crop, w, h)
    patch = _resize(fc, y1 - y0, x1 - x0)
    if colour is not None:
        patch = colour(patch)
    if mask is None:
        mask = feather_mask(y1 - y0, x1 - x0, feather, (x0 > 0, y0 > 0, x1 < w, y1 < h))
    out = bg.clone()
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = region + (patch - region) * mask[..., None]
    return out.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def ping_pong(frames: Union[torch.Tensor, np.ndarray], count: int) -> Iterator:
    """``count`` frames from a clip: forwards, then backwards, and so on (a still repeats)."""
    n = int(frames.shape[0])
    if n == 0:
        raise MediaError("the background clip has no frames")
    period = max(1, 2 * n - 2)
    for k in range(count):
        i = k % period
        yield frames[i if i < n else period - i]


def paste_frames(
    faces: Iterable,
    backgrounds: Union[Iterable, torch.Tensor, np.ndarray],
    crop: FaceCrop,
    feather: float = 0.1,
    colour_match: bool = True,
    count: Optional[int] = None,
) -> Iterator[torch.Tensor]:
    """Rendered frames → full-resolution uint8 frames (H, W, 3), one at a time.

    Args:
        faces: rendered frames (any square-ish size), an iterable or a (T, h, w, 3) tensor.
        backgrounds: the original image (H, W, 3), or its clip (N, H, W, 3) played ping-pong,
            or an iterable of frames taken in step with ``faces``.
        crop: where the identity was cut from (``Identity.crop``); a background of another size
            than the source (e.g. upscaled) gets the square scaled to it.
        feather: seam band as a share of the square's side (0 = hard edge, at most 0.5).
        colour_match: match the face's colours to the background under the square (first frame).
        count: number of frames when ``faces`` has no length (a generator).
    """
    if not 0.0 <= feather <= MAX_FEATHER:
        raise ValueError(f"feather must be in 0..{MAX_FEATHER}, got {feather}")
    if count is None:
        count = len(faces) if isinstance(faces, Sized) else None
    if isinstance(backgrounds, (torch.Tensor, np.ndarray)):
        if backgrounds.ndim == 3:
            backgrounds = backgrounds[None]
        if backgrounds.ndim != 4:
            raise MediaError(f"background must be (H, W, 3) or (N, H, W, 3), got shape {tuple(backgrounds.shape)}")
        if count is None:
            raise ValueError("give count when the rendered frames come from a generator and the background is a clip")
        backgrounds = ping_pong(backgrounds, count)
    mask = colour = None
    size = None
    for face, background in zip(faces, backgrounds, strict=False):
        bg = _as_float_frame(background, "background frame")
        h, w = int(bg.shape[0]), int(bg.shape[1])
        if size is None:
            size = (h, w)
            x0, y0, x1, y1 = box_in(crop, w, h)
            if (w, h) != (crop.source_width, crop.source_height):
                logger.info(
                    "background is %d×%d, the face was cut from %d×%d: the square is scaled to it",
                    w,
                    h,
                    crop.source_width,
                    crop.source_height,
                )
            mask = feather_mask(y1 - y0, x1 - x0, feather, (x0 > 0, y0 > 0, x1 < w, y1 < h))
            if colour_match:
                patch = _resize(_as_float_frame(face, "rendered frame"), y1 - y0, x1 - x0)
                colour = ColourMatch(patch, bg[y0:y1, x0:x1], mask)
        elif (h, w) != size:
            raise MediaError(f"background frames change size ({size[1]}×{size[0]} then {w}×{h}); give one size")
        yield paste_frame(face, bg, crop, feather, colour, mask)


def write_frames_mp4(path, frames: Iterable, count: int, fps: float, audio=None, sample_rate: Optional[int] = None):
    """Write ``count`` frames from an iterable to an MP4 without holding them in memory.

    The frames are spooled to a temporary uint8 file beside the output (a memory map, so resident
    memory stays at a few frames) and handed to :func:`talker_core.media.write_mp4`, which reads it
    16 frames at a time. (A streaming encoder that skips the spool file can replace this.)
    """
    import contextlib
    import os
    import secrets
    from pathlib import Path

    from talker_core.media.output import write_mp4

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    spool = out.with_name(f".{out.stem}.{secrets.token_hex(4)}.frames.tmp")
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise MediaError("there are no frames to write") from None
    h, w = int(first.shape[0]), int(first.shape[1])
    try:
        buf = np.lib.format.open_memmap(spool, mode="w+", dtype=np.uint8, shape=(count, h, w, 3))
        buf[0] = first.numpy() if isinstance(first, torch.Tensor) else first
        n = 1
        for frame in it:
            if n >= count:
                break
            buf[n] = frame.numpy() if isinstance(frame, torch.Tensor) else frame
            n += 1
        buf.flush()
        return write_mp4(out, torch.from_numpy(buf[:n]), fps, audio=audio, sample_rate=sample_rate)
    finally:
        buf = None  # type: ignore[assignment]  # noqa: F841 - release the map before removing its file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool)
