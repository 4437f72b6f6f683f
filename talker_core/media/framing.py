"""Face framing: find the face in a photo and choose the square the renderer was trained on.

LIA-X (the face renderer) was trained on head-and-shoulders squares with the face centred, cut by
the authors' ``utils/crop.py``: the detected face box grown by ``increase_scale`` = 0.25 of its size
on every side and by a further ``increase_top_scale`` = 0.5 of that on top, then squared. We find
the face with OpenCV's frontal-face Haar cascade, which ships inside the ``opencv-python(-headless)``
4.x wheel (``cv2.data.haarcascades``), so nothing is downloaded at run time. Its box is tighter than
the authors' detector's; the two constants below were measured by running it on the authors' own
crops (LIA-X ``data/source`` portraits and the Talker-T2AV sample clip, all 512×512): the face box is
0.60 of the square's side on average, and the square's centre lies 0.06 box heights above the box's.

A clip (a driving video, a reference video, footage to paste back into) gets one stable square for
all its frames (:func:`choose_clip_crop`): the face is detected on ``CLIP_PROBE_FRAMES`` frames spread
over its first second, and the median of the detected boxes is framed. The face model sees the same
square on every frame, so the head's own motion is what changes, not the crop.

Without OpenCV (or with OpenCV 5, which dropped the cascades) and when no face is found, the centred
square of the shorter side is used, as before framing existed, and a warning says so. A manual
square (x, y, size) overrides everything.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import torch

from talker_core.media._common import MediaError
from talker_core.media.image import as_rgb_float
from talker_core.types import FaceCrop

__all__ = [
    "FRAMING_MODES",
    "FACE_TO_CROP",
    "CROP_RAISE",
    "ALREADY_FRAMED",
    "Detector",
    "opencv_detector",
    "frame_face",
    "centre_crop",
    "choose_crop",
    "choose_clip_crop",
    "CLIP_PROBE_FRAMES",
]

logger = logging.getLogger(__name__)

FRAMING_MODES = ("detect", "centre")
FACE_TO_CROP = 1.65  # square side / detected face box side (measured on the authors' crops, see above)
CROP_RAISE = 0.06  # the square's centre sits this many face-box heights above the face box's centre
ALREADY_FRAMED = 0.85  # a wanted square at least this share of the shorter side: the photo is already framed
DETECT_MAX_SIDE = 640  # detection runs on a copy at most this large (as the authors' crop tool does)
CLIP_PROBE_FRAMES = 5  # frames of a clip's first second the face is looked for in (one stable box)
MIN_FACE_SHARE = 0.06  # faces smaller than this share of the shorter side are ignored (texture false positives)

# A detector maps an RGB uint8 image (H, W, 3) to face boxes (x, y, width, height) in its pixels.
Detector = Callable[[np.ndarray], Sequence[tuple[float, float, float, float]]]


@functools.lru_cache(maxsize=1)
def opencv_detector() -> Optional[Detector]:
    """OpenCV's frontal-face Haar cascade from the installed wheel, or None when it is not available."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        logger.warning(
            "face framing needs OpenCV 4.x (pip install 'opencv-python-headless<5'); it is not installed, "
            "so faces are centre-cropped"
        )
        return None
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not data:
        logger.warning(
            "this OpenCV (%s) has no Haar face cascade (OpenCV 5 dropped them); install "
            "'opencv-python-headless<5' for face framing. Faces are centre-cropped",
            getattr(cv2, "__version__", "?"),
        )
        return None
    cascade = cv2.CascadeClassifier(str(data) + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        logger.warning("OpenCV's face cascade file could not be read from %s; faces are centre-cropped", data)
        return None

    def detect(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        h, w = rgb.shape[:2]
        scale = max(h, w) / DETECT_MAX_SIDE if max(h, w) > DETECT_MAX_SIDE else 1.0
        small = rgb
        if scale > 1.0:
            small = cv2.resize(rgb, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY))
        least = max(24, int(MIN_FACE_SHARE * min(small.shape[:2])))
        boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(least, least))
        return [
            (float(x) * scale, float(y) * scale, float(bw) * scale, float(bh) * scale)
            for x, y, bw, bh in (boxes if len(boxes) else [])
        ]

    return detect


def centre_crop(width: int, height: int) -> FaceCrop:
    """The centred square of the shorter side (the framing used when no face is found)."""
    side = min(width, height)
    return FaceCrop((width - side) // 2, (height - side) // 2, side, width, height, "centre")


def frame_face(box: Sequence[float], width: int, height: int) -> FaceCrop:
    """A detected face box (x, y, w, h) → the head-and-shoulders square, kept inside the image.

    The square is ``FACE_TO_CROP`` times the box, centred ``CROP_RAISE`` box heights above its
    centre; it shrinks to the shorter side when larger, and one that would take at least
    ``ALREADY_FRAMED`` of the shorter side takes all of it (the photo is already a head-and-shoulders
    crop: a square photo is then used whole, as the reference does). Near an edge the square slides
    inwards rather than leaving the image.
    """
    fx, fy, fw, fh = (float(v) for v in box)
    if fw <= 0 or fh <= 0:
        raise ValueError(f"face box {tuple(box)} is empty")
    short = min(width, height)
    side = FACE_TO_CROP * max(fw, fh)
    if side >= ALREADY_FRAMED * short:
        side = short
    side = max(1, min(short, int(round(side))))
    cx = fx + fw / 2.0
    cy = fy + fh / 2.0 - CROP_RAISE * fh
    x = int(min(max(round(cx - side / 2.0), 0), width - side))
    y = int(min(max(round(cy - side / 2.0), 0), height - side))
    return FaceCrop(x, y, side, width, height, "detected")


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.mul(255.0).round_().clamp_(0, 255)).to(torch.uint8).cpu().numpy()


def _manual(crop, w: int, h: int, name: str) -> FaceCrop:
    if isinstance(crop, FaceCrop):  # a square chosen before (e.g. for the whole clip) is kept as it was
        if (crop.source_width, crop.source_height) != (w, h):
            raise MediaError(
                f"{name}: the crop box was chosen on a {crop.source_width}×{crop.source_height} picture, "
                f"this one is {w}×{h}; give frames of one size"
            )
        return crop
    if len(crop) != 3:
        raise ValueError(f"{name}: a crop box is (x, y, size), got {tuple(crop)}")
    x, y, side = (int(v) for v in crop)
    if side < 1 or x < 0 or y < 0 or x + side > w or y + side > h:
        raise MediaError(
            f"{name}: the crop box x={x}, y={y}, size={side} does not fit in the {w}×{h} image; "
            f"give a square inside it (x + size ≤ {w}, y + size ≤ {h})"
        )
    return FaceCrop(x, y, side, w, h, "manual")


def _without_detection(
    crop, framing: str, detector: Optional[Detector], w: int, h: int, name: str
) -> tuple[Optional[FaceCrop], Optional[Detector]]:
    """``(square, None)`` when no detection is needed (a manual box, ``"centre"``, or no detector
    installed), else ``(None, detector)``."""
    if crop is not None:
        return _manual(crop, w, h, name), None
    if framing not in FRAMING_MODES:
        raise ValueError(f"framing must be one of {', '.join(FRAMING_MODES)}, got {framing!r}")
    if framing == "centre":
        return centre_crop(w, h), None
    detect = detector if detector is not None else opencv_detector()
    if detect is None:
        return centre_crop(w, h), None
    return None, detect


def choose_crop(
    image: Union[torch.Tensor, np.ndarray],
    framing: str = "detect",
    crop: Optional[Sequence[int]] = None,
    detector: Optional[Detector] = None,
    name: str = "face image",
) -> FaceCrop:
    """Which square of ``image`` becomes the 512×512 identity.

    Args:
        image: one image, any layout :func:`talker_core.media.prepare_identity_image` accepts.
        framing: ``"detect"`` (find the face, frame it as LIA-X was trained) or ``"centre"``
            (the centred square of the shorter side).
        crop: a manual square (x, y, size) in the image's pixels; overrides ``framing``.
        detector: the face detector (default: OpenCV's Haar cascade, :func:`opencv_detector`).
        name: how messages refer to the image.
    """
    rgb = as_rgb_float(image, name)
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    square, detect = _without_detection(crop, framing, detector, w, h, name)
    if square is not None or detect is None:
        assert square is not None
        return square
    boxes = [b for b in detect(_to_uint8(rgb)) if b[2] > 0 and b[3] > 0]
    if not boxes:
        logger.warning(
            "%s: no face was found (%d×%d); using the centre crop. Give a crop box (x, y, size) to choose "
            "the square yourself, or use a front-facing photo",
            name,
            w,
            h,
        )
        return centre_crop(w, h)
    if len(boxes) > 1:
        logger.info("%s: %d faces found; framing the largest", name, len(boxes))
    best = max(boxes, key=lambda b: b[2] * b[3])
    result = frame_face(best, w, h)
    logger.info(
        "%s: face at (%d, %d, %d×%d) framed as the square x=%d, y=%d, size=%d of %d×%d",
        name,
        *(round(v) for v in best),
        result.x,
        result.y,
        result.size,
        w,
        h,
    )
    return result


def _probe_indices(count: int, fps: float) -> list[int]:
    """Up to ``CLIP_PROBE_FRAMES`` frame indices spread evenly over the clip's first second."""
    span = max(1, min(count, int(round(fps))))
    n = min(CLIP_PROBE_FRAMES, span)
    return sorted({int(round(k * (span - 1) / max(1, n - 1))) for k in range(n)})


def choose_clip_crop(
    frames,
    framing: str = "detect",
    crop: Optional[Sequence[int]] = None,
    detector: Optional[Detector] = None,
    name: str = "video",
    fps: float = 25.0,
) -> FaceCrop:
    """One square for every frame of a clip (see the module notes): the same rules as :func:`choose_crop`.

    Args:
        frames: the clip, (N, H, W, C) tensor/array or a sequence of frames (only the first second's
            ``CLIP_PROBE_FRAMES`` frames are looked at).
        framing, crop, detector, name: as :func:`choose_crop` (a manual ``crop`` is checked against
            the frame size; with no face in any probed frame: a warning and the centre crop).
        fps: the clip's frame rate (which frames make its first second).
    """
    count = len(frames)
    if count == 0:
        raise MediaError(f"{name} has no frames")
    first = as_rgb_float(frames[0], f"{name} frame 0")
    h, w = int(first.shape[0]), int(first.shape[1])
    square, detect = _without_detection(crop, framing, detector, w, h, name)
    if square is not None or detect is None:
        assert square is not None
        return square
    found = []
    for i in _probe_indices(count, fps):
        rgb = first if i == 0 else as_rgb_float(frames[i], f"{name} frame {i}")
        boxes = [b for b in detect(_to_uint8(rgb)) if b[2] > 0 and b[3] > 0]
        if boxes:
            found.append(max(boxes, key=lambda b: b[2] * b[3]))
    if not found:
        logger.warning(
            "%s: no face was found in its first second (%d×%d); using the centre crop. Give a crop box "
            "(x, y, size) to choose the square yourself",
            name,
            w,
            h,
        )
        return centre_crop(w, h)
    a = np.asarray(found, dtype=np.float64)  # median centre and size: one odd detection does not move the box
    cx, cy = np.median(a[:, 0] + a[:, 2] / 2), np.median(a[:, 1] + a[:, 3] / 2)
    side = float(np.median(np.maximum(a[:, 2], a[:, 3])))
    result = frame_face((cx - side / 2, cy - side / 2, side, side), w, h)
    logger.info(
        "%s: face found in %d of the first frames; the clip is framed as the square x=%d, y=%d, size=%d of %d×%d",
        name,
        len(found),
        result.x,
        result.y,
        result.size,
        w,
        h,
    )
    return result
