"""Decoding speech latents to a waveform and rendering motion codes to frames."""

from __future__ import annotations

import logging
from typing import Optional

import torch

from talker_core.pipeline._helpers import _device_dtype, check_finite
from talker_core.pipeline.request import Hooks
from talker_core.types import (
    Identity,
    MotionCodes,
    MotionStats,
    SpeechLatents,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# decoding and rendering


@torch.inference_mode()
def decode_speech(vae, speech: SpeechLatents) -> torch.Tensor:
    """Speech latents (T, 32) → waveform (1, T·960) at 24 kHz, float32 CPU, in [-1, 1]."""
    device, dtype = _device_dtype(vae)
    wav = vae.decode(speech.latents[None].to(device, dtype))
    check_finite(wav, "speech decoding", vae)
    return wav[0].float().clamp(-1, 1).cpu()


class RenderOutOfMemory(RuntimeError):
    """Rendering ran out of memory even one frame at a time; the motion codes are untouched."""


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.inference_mode()
def render_motion(
    liax,
    face: Identity,
    motion: MotionCodes,
    chunk: int = 8,
    hooks: Optional[Hooks] = None,
    stats: Optional[MotionStats] = None,
    preview_every: int = 25,
    as_uint8: bool = False,
) -> torch.Tensor:
    """Motion codes → video frames (T, 512, 512, 3) on the CPU: float32 in [0, 1], or uint8 with ``as_uint8``.

    Frames are rendered ``chunk`` at a time; ``hooks`` is told after every chunk and may cancel.
    When a chunk runs out of memory the chunk is halved and retried (down to one frame); only if
    a single frame does not fit is :class:`RenderOutOfMemory` raised. Nothing the caller passed in
    is modified, so a failed render can be retried with other settings without generating again.
    """
    hooks = hooks or Hooks()
    stats = stats or MotionStats.release()
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    raw = stats.denormalize(motion.codes)
    device, dtype = _device_dtype(liax)
    z = face.z.to(device, dtype)
    feats = [f.to(device, dtype) for f in face.feats]
    total = raw.shape[0]
    out = torch.empty((total, 512, 512, 3), dtype=torch.uint8 if as_uint8 else torch.float32)
    start = 0
    while start < total:
        hooks.check()
        alpha = raw[start : start + chunk].to(device, dtype)
        try:
            frames = liax.render(z, feats, alpha)  # (b, 3, 512, 512) in [-1, 1]
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_device_memory(device)
            if chunk == 1:
                raise RenderOutOfMemory(
                    f"rendering one 512×512 frame does not fit in {device} memory; free memory (close other "
                    "models), use a lower precision, or render on the CPU. The generated motion is kept: "
                    "retry the render only"
                ) from exc
            chunk = max(1, chunk // 2)
            log.warning("out of memory rendering; retrying with %d frame(s) per chunk", chunk)
            continue
        check_finite(frames, f"rendering (frames {start}-{start + frames.shape[0] - 1})", liax)
        frames = ((frames.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()
        done = start + frames.shape[0]
        out[start:done] = (frames * 255).round().to(torch.uint8) if as_uint8 else frames
        preview = frames[-1] if (done // preview_every) != (start // preview_every) or done == total else None
        hooks.report(done, total, "render", preview)
        start = done
    return out
