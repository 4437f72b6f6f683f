"""Still images (Pillow, PyAV as fallback) and the LIA-X identity crop (MODEL.md §7)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from talker_core.media._common import (
    IDENTITY_SIZE,
    IMAGE_FORMATS_THAT_WORK,
    MAX_IMAGE_PIXELS,
    SMALL_IDENTITY_WARN,
    MediaError,
    PathLike,
    _existing_file,
    _import_av,
)
from talker_core.media.video import _frame_rgb

logger = logging.getLogger(__name__)

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


def _load_image_pillow(p: Path, max_pixels: int) -> tuple[Optional[np.ndarray], str]:
    """Pillow's reading of ``p``: (RGB array, "") or (None, why Pillow could not read it)."""
    try:
        from PIL import Image, ImageOps  # noqa: PLC0415
    except ImportError:
        return None, "Pillow is not installed"
    try:
        with Image.open(p) as img:
            _size_guard(p, img.width, img.height, max_pixels)
            kind = f"{img.format or 'an image'} in mode {img.mode}"
            img = ImageOps.exif_transpose(img)  # phone photos: apply the EXIF orientation
            return _pil_to_rgb(img), ""
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image {p} is too large to open safely ({exc}); downscale it first") from exc
    except Image.UnidentifiedImageError:
        return None, "not a format Pillow knows"
    except MemoryError as exc:
        raise MediaError(f"image {p} does not fit in memory when decoded; downscale it first") from exc
    except Exception as exc:  # any failure of a Pillow plugin or mode conversion: never a raw error to the user
        what = kind if "kind" in locals() else "its content"
        logger.debug("Pillow cannot read %s (%s: %s); trying PyAV", p, type(exc).__name__, exc)
        return None, f"Pillow cannot decode {what}"


def _not_an_image(p: Path, why: str) -> MediaError:
    return MediaError(f"image file {p} is not an image the pack can read ({why}); save it as {IMAGE_FORMATS_THAT_WORK}")


def _load_image_av(p: Path, max_pixels: int, why: str) -> np.ndarray:
    av = _import_av()
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise _not_an_image(p, why) from exc
    with container:
        if not container.streams.video:
            raise _not_an_image(p, why + "; it holds no picture")
        stream = container.streams.video[0]
        cc = stream.codec_context
        if cc.width and cc.height:
            _size_guard(p, cc.width, cc.height, max_pixels)
        try:
            for frame in container.decode(stream):
                _size_guard(p, frame.width, frame.height, max_pixels)
                return _frame_rgb(frame, p)
        except av.error.FFmpegError as exc:
            raise _not_an_image(p, why + "; its data could not be decoded") from exc
    raise _not_an_image(p, why + "; it contains no picture")


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
    arr, why = _load_image_pillow(p, max_pixels)
    if arr is None:
        arr = _load_image_av(p, max_pixels, why)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(f"image file {p} decoded to an unusable shape {arr.shape}")  # pragma: no cover
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def as_rgb_float(img: Union[torch.Tensor, np.ndarray], name: str = "image") -> torch.Tensor:
    """One image of any accepted layout and type → float32 (H, W, 3) in [0, 1] (the checks of
    :func:`prepare_identity_image`, without the crop)."""
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
        return x[..., :1].expand(h, w, 3)
    return x[..., :3]


def prepare_identity_image(
    img: Union[torch.Tensor, np.ndarray],
    name: str = "identity image",
    size: int = IDENTITY_SIZE,
    warn_small: bool = True,
    crop: Optional[tuple[int, int, int]] = None,
) -> torch.Tensor:
    """Turn one image into the LIA-X identity input (MODEL.md §7).

    Steps: channels → RGB (1 channel repeated; 2 = gray+alpha and 4 = RGBA: alpha
    dropped, as in :func:`load_image`); the square ``crop`` = (x, y, side) is cut out, or
    without one a non-square image is centre-cropped to a square of its shorter side
    (never stretched; face framing, :mod:`talker_core.media.framing`, chooses ``crop``);
    the square is resized to ``size``×``size`` — area interpolation
    (``F.interpolate(mode="area")``, the reference's method) when shrinking, bicubic
    clamped to [0, 1] when enlarging (area interpolation of an enlargement is
    nearest-neighbour blockiness); scaled to [-1, 1]. Any size down to 1×1 is accepted
    (tests and previews use tiny images); below 128 px on the square's side a warning
    says the face will be soft.

    Args:
        img: one image, (H, W, C) or (1, H, W, C) or (H, W); uint8 (0–255), uint16
            (0–65535), or float in [0, 1] (ComfyUI IMAGE); C in {1, 2, 3, 4}.
        name: how errors refer to this input (e.g. the node socket name).
        size: output side (512 for the release).
        warn_small: log the small-image warning (turn off when preparing every frame of a clip).
        crop: optional square (x, y, side) in the image's pixels; it must lie inside the image.

    Returns:
        float32 tensor (3, size, size) in [-1, 1] on the input's device.
    """
    x = as_rgb_float(img, name)
    h, w = int(x.shape[0]), int(x.shape[1])
    if crop is None:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
    else:
        left, top, side = (int(v) for v in crop)
        if side < 1 or left < 0 or top < 0 or left + side > w or top + side > h:
            raise MediaError(
                f"{name}: the crop box x={left}, y={top}, size={side} does not fit in the {w}×{h} image; "
                f"give a square inside it (x + size ≤ {w}, y + size ≤ {h})"
            )
    if warn_small and side < SMALL_IDENTITY_WARN:
        logger.warning(
            "%s: the face square is only %d×%d px; it is enlarged to %d×%d and the face will be soft",
            name,
            side,
            side,
            size,
            size,
        )
    x = x[top : top + side, left : left + side].permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, S, S)
    if side > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    elif side < size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return (x[0] * 2.0 - 1.0).to(torch.float32).contiguous()
