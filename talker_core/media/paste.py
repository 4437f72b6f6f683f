"""Paste-back: rendered face frames composited into the original photo or footage at full resolution.

The identity was cut from its source as a square (:class:`talker_core.types.FaceCrop`); each
rendered frame (512×512, or any size, e.g. after an upscaler) is resized to that square in the
background's own resolution and blended in with a feathered edge, so the seam fades over a band of
``feather`` × the square's side. Edges of the square that lie on the picture's border are not
feathered (there is nothing to blend with). Optional colour matching shifts the rendered face's
per-channel mean and spread to those of the background under the square, measured once on the first
frame so the correction does not flicker.

Everything works one frame at a time, so memory does not grow with the clip's length:
:func:`paste_frames` is a generator, and :class:`Compositor` composites a batch at a time for the
streaming MP4 writers (``talker_core.pipeline.render_to_mp4(compose=...)``). The background is a
still image, a clip in memory, or a video file decoded lazily at 25 fps (nearest frame, as
:func:`talker_core.media.iter_video_frames`). Its length rule (:data:`BACKGROUND_ENDS`): the output
has the rendered frames' length, so a longer background is cut; a shorter one ``loop`` s (starts
again from its first frame; a file is decoded again, so memory stays flat) or ``hold`` s its last
frame. Its size may differ from the source the face was cut from (the square is scaled to it), but
not change within the clip.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterable, Iterator
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from talker_core.media._common import MediaError
from talker_core.types import FPS, FaceCrop

__all__ = [
    "MAX_FEATHER",
    "BACKGROUND_ENDS",
    "box_in",
    "feather_mask",
    "ColourMatch",
    "paste_frame",
    "paste_frames",
    "background_frames",
    "Compositor",
]

logger = logging.getLogger(__name__)

MAX_FEATHER = 0.5  # a band of half the side on each edge: the blend reaches the square's centre
BACKGROUND_ENDS = ("loop", "hold")  # what a background shorter than the render does after its last frame


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


def _is_video_source(background) -> bool:
    return isinstance(background, (str, os.PathLike)) or hasattr(background, "read")


def background_frames(background, end: str = "loop") -> Generator:
    """An endless stream of background frames (H, W, 3), one per rendered frame at 25 fps.

    ``background``: a still image (H, W, 3) or (1, H, W, 3), repeated; a clip (N, H, W, 3) in
    memory; or a video file (a path or a binary file object), decoded lazily at 25 fps. After the
    clip's last frame, ``end`` = ``"loop"`` starts it again (a file is decoded again from its start),
    ``"hold"`` repeats the last frame. Any other iterable is taken as it is, frame by frame.
    """
    if end not in BACKGROUND_ENDS:
        raise ValueError(f"background end must be one of {', '.join(BACKGROUND_ENDS)}, got {end!r}")
    if _is_video_source(background):
        from talker_core.media.video import iter_video_frames

        last = None
        while True:
            if hasattr(background, "seek"):
                background.seek(0)
            got = 0
            for frame in iter_video_frames(background, target_fps=FPS):
                got += 1
                last = frame
                yield frame
            if got == 0:  # pragma: no cover - iter_video_frames raises on a clip without frames
                raise MediaError("the background video has no frames")
            if end == "hold":
                break
            logger.info("the background video is shorter than the render (%d frames): it starts again", got)
        while True:
            yield last
    if isinstance(background, (torch.Tensor, np.ndarray)):
        clip = background[None] if background.ndim == 3 else background
        if clip.ndim != 4:
            raise MediaError(f"background must be (H, W, 3) or (N, H, W, 3), got shape {tuple(background.shape)}")
        n = int(clip.shape[0])
        if n == 0:
            raise MediaError("the background clip has no frames")
        k = 0
        while True:
            yield clip[k % n if end == "loop" else min(k, n - 1)]
            k += 1
    yield from background


class _Paster:
    """Frame-by-frame pasting with what is fixed by the first frame: the size, the seam mask, the colours."""

    def __init__(self, crop: FaceCrop, feather: float, colour_match: bool):
        if not 0.0 <= feather <= MAX_FEATHER:
            raise ValueError(f"feather must be in 0..{MAX_FEATHER}, got {feather}")
        self.crop, self.feather, self.colour_match = crop, feather, colour_match
        self.size: Optional[tuple[int, int]] = None
        self.mask: Optional[torch.Tensor] = None
        self.colour: Optional[ColourMatch] = None

    def __call__(self, face, background) -> torch.Tensor:
        bg = _as_float_frame(background, "background frame")
        h, w = int(bg.shape[0]), int(bg.shape[1])
        if self.size is None:
            crop = self.crop
            self.size = (h, w)
            x0, y0, x1, y1 = box_in(crop, w, h)
            if (w, h) != (crop.source_width, crop.source_height):
                logger.info(
                    "background is %d×%d, the face was cut from %d×%d: the square is scaled to it",
                    w,
                    h,
                    crop.source_width,
                    crop.source_height,
                )
            self.mask = feather_mask(y1 - y0, x1 - x0, self.feather, (x0 > 0, y0 > 0, x1 < w, y1 < h))
            if self.colour_match:
                patch = _resize(_as_float_frame(face, "rendered frame"), y1 - y0, x1 - x0)
                self.colour = ColourMatch(patch, bg[y0:y1, x0:x1], self.mask)
        elif (h, w) != self.size:
            raise MediaError(
                f"background frames change size ({self.size[1]}×{self.size[0]} then {w}×{h}); give one size"
            )
        return paste_frame(face, bg, self.crop, self.feather, self.colour, self.mask)


def paste_frames(
    faces: Iterable,
    backgrounds,
    crop: FaceCrop,
    feather: float = 0.1,
    colour_match: bool = True,
    count: Optional[int] = None,
    end: str = "loop",
) -> Iterator[torch.Tensor]:
    """Rendered frames → full-resolution uint8 frames (H, W, 3), one at a time.

    Args:
        faces: rendered frames (any square-ish size), an iterable or a (T, h, w, 3) tensor.
        backgrounds: the original image (H, W, 3), its clip (N, H, W, 3), a video file (path or
            file object), or an iterable of frames taken in step with ``faces``
            (:func:`background_frames`).
        crop: where the identity was cut from (``Identity.crop``); a background of another size
            than the source (e.g. upscaled) gets the square scaled to it.
        feather: seam band as a share of the square's side (0 = hard edge, at most 0.5).
        colour_match: match the face's colours to the background under the square (first frame).
        count: stop after this many frames (default: as many as ``faces`` has).
        end: what a shorter background clip does after its last frame (:data:`BACKGROUND_ENDS`).
    """
    paster = _Paster(crop, feather, colour_match)
    source = background_frames(backgrounds, end)
    try:
        for i, (face, background) in enumerate(zip(faces, source, strict=False)):
            if count is not None and i >= count:
                break
            yield paster(face, background)
    finally:
        source.close()


class Compositor:
    """Batch-by-batch paste-back for the streaming writers: ``compose(faces) → pasted``.

    Each call takes the next rendered frames (n, h, w, 3) (uint8, or float in [0, 1]) and returns
    them pasted into the next ``n`` background frames, uint8 (n, H, W, 3). Background frames are
    read only as they are needed (``pulled`` counts them), so memory holds one batch, not the clip.
    ``close()`` closes the background decoder.
    """

    def __init__(
        self,
        background,
        crop: FaceCrop,
        feather: float = 0.1,
        colour_match: bool = True,
        end: str = "loop",
        check=None,
    ):
        if crop is None:
            raise MediaError("the face has no crop box: encode it from the picture it is pasted back into")
        self._paster = _Paster(crop, feather, colour_match)
        self._source = background_frames(background, end)
        self._check = check
        self.pulled = 0

    def __call__(self, faces) -> torch.Tensor:
        out = []
        for face in faces:
            if self._check is not None:
                self._check()
            out.append(self._paster(face, next(self._source)))
            self.pulled += 1
        return torch.stack(out)

    def close(self) -> None:
        self._source.close()
