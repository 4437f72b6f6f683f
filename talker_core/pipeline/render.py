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


SPEECH_DECODE_CHUNK = 250  # latent frames (10 s) decoded at a time: the decoder's memory is flat in the length


class SpeechDecoder:
    """Speech latents → waveform, incrementally, equal to a one-piece decode.

    ``push(latents)`` takes the next latent frames (n, 32) and returns the waveform samples
    (1, k) that are now final; ``flush()`` returns the rest. The WhisperX-VAE decoder is
    convolutional, so a sample depends only on latents within
    :meth:`~talker_core.models.whisperx_vae.WhisperXVAE.decoder_context_frames` frames of it:
    each span is decoded with that many extra frames on each side and only its own samples are
    kept, which gives the one-piece decode's samples (to float rounding). Audio therefore lags
    the latents by that context (13 frames, 0.52 s, for the release decoder); memory depends on
    ``chunk`` only, never on the clip's length.

    chunk: latent frames decoded per call (at least one; smaller chunks mean earlier audio
    and more recomputed context).
    """

    def __init__(self, vae, chunk: int = SPEECH_DECODE_CHUNK):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.vae, self.chunk = vae, int(chunk)
        self.context = int(vae.decoder_context_frames())
        self.hop = int(vae.hop)
        self._buf = torch.zeros(0, vae.cfg.codec_decoder.z_dim)
        self._buf_start = 0  # absolute frame index of _buf[0]
        self.frames_in = 0  # latent frames pushed
        self.frames_out = 0  # latent frames whose samples were returned

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Add latent frames (n, 32); returns the newly final samples (1, k), float32 CPU in [-1, 1]."""
        if latents.ndim != 2 or latents.shape[1] != self._buf.shape[1]:
            raise ValueError(f"latents must have shape (frames, {self._buf.shape[1]}), got {tuple(latents.shape)}")
        self._buf = torch.cat([self._buf, latents.detach().float().cpu()])
        self.frames_in += latents.shape[0]
        parts = []
        while self.frames_in - self.context - self.frames_out >= self.chunk:
            parts.append(self._decode(self.frames_out + self.chunk))
        return torch.cat(parts, 1) if parts else torch.zeros(1, 0)

    def flush(self) -> torch.Tensor:
        """The samples of every frame not returned yet (1, k)."""
        if self.frames_out >= self.frames_in:
            return torch.zeros(1, 0)
        parts = []
        while self.frames_out < self.frames_in:
            parts.append(self._decode(min(self.frames_in, self.frames_out + self.chunk)))
        return torch.cat(parts, 1)

    @torch.inference_mode()
    def _decode(self, until: int) -> torch.Tensor:
        lo = max(0, self.frames_out - self.context)
        hi = min(self.frames_in, until + self.context)
        window = self._buf[lo - self._buf_start : hi - self._buf_start]
        device, dtype = _device_dtype(self.vae)
        wav = self.vae.decode(window[None].to(device, dtype))
        check_finite(wav, "speech decoding", self.vae)
        wav = wav[0].float().clamp(-1, 1).cpu()
        keep = wav[:, (self.frames_out - lo) * self.hop : (until - lo) * self.hop]
        self.frames_out = until
        drop = max(0, self.frames_out - self.context) - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return keep


@torch.inference_mode()
def decode_speech(vae, speech: SpeechLatents, chunk: int = SPEECH_DECODE_CHUNK) -> torch.Tensor:
    """Speech latents (T, 32) → waveform (1, T·960) at 24 kHz, float32 CPU, in [-1, 1].

    Decoded ``chunk`` frames at a time with overlapping context (:class:`SpeechDecoder`), so a long
    clip never passes through the decoder at once; the result equals a one-piece decode.
    """
    if speech.latents.shape[0] == 0:
        raise ValueError("speech latents are empty (0 frames)")
    dec = SpeechDecoder(vae, chunk)
    return torch.cat([dec.push(speech.latents), dec.flush()], 1)


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


class FrameRenderer:
    """Motion codes → frames, a batch at a time, for one identity; shared by :func:`render_motion`
    and the streaming path (:mod:`talker_core.pipeline.stream`).

    ``render(codes)`` takes normalised motion codes (B, 40) and returns frames (B, 512, 512, 3)
    float32 [0, 1] on the CPU. ``hooks.check`` is also polled between the decoder's blocks, so a
    cancel takes effect within a fraction of one frame's rendering, not after the batch. When a
    batch runs out of memory it is split (down to one frame) and the smaller size is kept; only
    if a single frame does not fit is :class:`RenderOutOfMemory` raised.
    """

    def __init__(self, liax, face: Identity, chunk: int = 8, hooks: Optional[Hooks] = None, stats=None):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.liax, self.chunk = liax, int(chunk)
        self.hooks = hooks or Hooks()
        self.stats = stats or MotionStats.release()
        self.device, self.dtype = _device_dtype(liax)
        self.z = face.z.to(self.device, self.dtype)
        self.feats = [f.to(self.device, self.dtype) for f in face.feats]

    @torch.inference_mode()
    def render(self, codes: torch.Tensor, first: int = 0) -> torch.Tensor:
        """``first``: the clip's index of ``codes[0]`` (for error messages)."""
        raw = self.stats.denormalize(codes)
        parts, start = [], 0
        while start < raw.shape[0]:
            self.hooks.check()
            take = min(self.chunk, raw.shape[0] - start)
            alpha = raw[start : start + take].to(self.device, self.dtype)
            try:
                frames = self.liax.render(self.z, self.feats, alpha, check=self.hooks.check)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                if not _is_out_of_memory(exc):
                    raise
                _free_device_memory(self.device)
                if take == 1:
                    raise RenderOutOfMemory(
                        f"rendering one 512×512 frame does not fit in {self.device} memory; free memory (close "
                        "other models), use a lower precision, or render on the CPU. The generated motion is "
                        "kept: retry the render only"
                    ) from exc
                self.chunk = max(1, take // 2)
                log.warning("out of memory rendering; retrying with %d frame(s) per chunk", self.chunk)
                continue
            a = first + start
            check_finite(frames, f"rendering (frames {a}-{a + take - 1})", self.liax)
            parts.append(((frames.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu())
            start += take
        return torch.cat(parts) if parts else torch.zeros(0, 512, 512, 3)


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

    Frames are rendered ``chunk`` at a time, except the first, which is rendered alone so that
    the first progress report (with its preview) comes with the first frame. ``hooks`` is told
    after every chunk; its cancel is polled between the decoder's blocks too (within a frame).
    On out of memory the chunk is halved and retried (down to one frame); see
    :class:`FrameRenderer`. Nothing the caller passed in is modified, so a failed render can be
    retried with other settings without generating again. The whole clip is held in memory: long
    clips go through :mod:`talker_core.pipeline.stream` instead.
    """
    hooks = hooks or Hooks()
    renderer = FrameRenderer(liax, face, chunk=chunk, hooks=hooks, stats=stats)
    total = motion.codes.shape[0]
    out = torch.empty((total, 512, 512, 3), dtype=torch.uint8 if as_uint8 else torch.float32)
    start = 0
    while start < total:
        take = 1 if start == 0 else renderer.chunk
        frames = renderer.render(motion.codes[start : start + take], first=start)
        done = start + frames.shape[0]
        out[start:done] = (frames * 255).round().to(torch.uint8) if as_uint8 else frames
        preview = (
            frames[-1] if start == 0 or (done // preview_every) != (start // preview_every) or done == total else None
        )
        hooks.report(done, total, "render", preview)
        start = done
    return out
