"""Data objects passed between pipeline stages (and over the ComfyUI sockets).

Legend: T frames at 25 Hz, S LIA-X style width (512·scale).
All tensors are kept on the CPU in float32 unless a field says otherwise, so that
they can be cached, saved and moved between devices freely.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

__all__ = [
    "FPS",
    "PATCH",
    "SPEECH_DIM",
    "MOTION_DIM",
    "SPEAKER_DIM",
    "SAMPLE_RATE",
    "SPEAKER_SAMPLE_RATE",
    "WHISPER_SAMPLE_RATE",
    "MotionStats",
    "SpeechLatents",
    "MotionCodes",
    "SpeakerReference",
    "FaceCrop",
    "Identity",
]

FPS = 25  # latent and video frame rate of the release
PATCH = 4  # frames per backbone token
SPEECH_DIM = 32
MOTION_DIM = 40
SPEAKER_DIM = 256
# The sample rates, each written once (Hz):
SAMPLE_RATE = 24_000  # speech: the WhisperX-VAE's waveform rate (what it decodes to, its codec branch's input)
SPEAKER_SAMPLE_RATE = 16_000  # what the WavLM + ECAPA-TDNN speaker encoder takes
WHISPER_SAMPLE_RATE = 16_000  # what the WhisperX-VAE's Whisper (semantic) branch takes


@dataclass(frozen=True)
class MotionStats:
    """Per-dimension statistics that normalise LIA-X motion codes: (α − mean) / max(std, 1e-6)."""

    mean: torch.Tensor  # (40,)
    std: torch.Tensor  # (40,), already clipped to >= 1e-6

    @classmethod
    def release(cls) -> MotionStats:
        """The release statistics (read once, then shared: treat the tensors as read-only)."""
        return _release_stats()

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(…, 40) raw LIA-X codes → normalised codes (float32)."""
        return (raw.float() - self.mean.to(raw.device)) / self.std.to(raw.device)

    def denormalize(self, codes: torch.Tensor) -> torch.Tensor:
        """(…, 40) normalised codes → raw LIA-X codes (float32)."""
        return codes.float() * self.std.to(codes.device) + self.mean.to(codes.device)


@functools.lru_cache(maxsize=1)
def _release_stats() -> MotionStats:
    data = json.loads((Path(__file__).parent / "data" / "motion_stats.json").read_text())
    mean = torch.tensor(data["mean"], dtype=torch.float32)
    std = torch.tensor(data["std"], dtype=torch.float32).clamp_min(1e-6)
    return MotionStats(mean, std)


def _shape(t: Optional[torch.Tensor]) -> str:
    """``(T, 32) float32 cpu``-style description of a tensor for reprs (never its values)."""
    if t is None:
        return "None"
    dtype = str(t.dtype).removeprefix("torch.")
    return f"{tuple(t.shape)} {dtype} {t.device.type}"


# The payloads below travel over ComfyUI sockets; ComfyUI prints the repr of every input
# in an error report, so each repr is one short line (shapes and lengths, never tensor values).


@dataclass(repr=False)
class SpeechLatents:
    """WhisperX-VAE latents, (T, 32) at 25 Hz."""

    latents: torch.Tensor

    def __post_init__(self):
        if self.latents.ndim != 2 or self.latents.shape[1] != SPEECH_DIM:
            raise ValueError(f"speech latents must have shape (frames, {SPEECH_DIM}), got {tuple(self.latents.shape)}")

    @property
    def frames(self) -> int:
        return int(self.latents.shape[0])

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    def __repr__(self) -> str:
        return f"SpeechLatents({self.frames} frames, {self.seconds:.2f} s, {_shape(self.latents)})"


@dataclass(repr=False)
class MotionCodes:
    """Normalised LIA-X motion codes, (T, 40) at 25 Hz."""

    codes: torch.Tensor

    def __post_init__(self):
        if self.codes.ndim != 2 or self.codes.shape[1] != MOTION_DIM:
            raise ValueError(f"motion codes must have shape (frames, {MOTION_DIM}), got {tuple(self.codes.shape)}")

    @property
    def frames(self) -> int:
        return int(self.codes.shape[0])

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    def __repr__(self) -> str:
        return f"MotionCodes({self.frames} frames, {self.seconds:.2f} s, {_shape(self.codes)})"


@dataclass(repr=False)
class SpeakerReference:
    """What the sampler needs from the reference voice."""

    embedding: torch.Tensor  # (256,) speaker embedding
    speech: SpeechLatents  # reference latents (prefix source), at most 30 s

    def __post_init__(self):
        if self.embedding.shape != (SPEAKER_DIM,):
            raise ValueError(f"speaker embedding must have shape ({SPEAKER_DIM},), got {tuple(self.embedding.shape)}")

    def __repr__(self) -> str:
        return f"SpeakerReference(embedding {_shape(self.embedding)}, reference {self.speech.seconds:.2f} s)"


@dataclass(frozen=True)
class FaceCrop:
    """Where a 512×512 identity was cut from its source image: the square (x, y, size) in source pixels.

    ``method`` says how the square was chosen: ``"detected"`` (face framing), ``"manual"`` (a box the
    user gave) or ``"centre"`` (the centred square of the shorter side: framing off, or no face found).
    Paste-back uses it to put rendered frames back at full resolution.
    """

    x: int
    y: int
    size: int
    source_width: int
    source_height: int
    method: str = "centre"

    def __post_init__(self):
        if self.size < 1 or self.source_width < 1 or self.source_height < 1:
            raise ValueError(f"crop box {self} has an empty size")
        if (
            self.x < 0
            or self.y < 0
            or self.x + self.size > self.source_width
            or self.y + self.size > self.source_height
        ):
            raise ValueError(
                f"crop box x={self.x}, y={self.y}, size={self.size} does not fit in the "
                f"{self.source_width}×{self.source_height} source image"
            )

    def scaled_to(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box (left, top, width, height) in a copy of the source resized to ``width``×``height``."""
        sx, sy = width / self.source_width, height / self.source_height
        return self.x * sx, self.y * sy, self.size * sx, self.size * sy


@dataclass(repr=False)
class Identity:
    """A face to animate: the LIA-X identity of one 512×512 image."""

    z: torch.Tensor  # (1, S) identity code
    feats: list[torch.Tensor]  # encoder feature pyramid, each (1, C_i, H_i, W_i)
    first_motion: torch.Tensor  # (40,) normalised motion code of the image (the motion head's global condition)
    source: Optional[torch.Tensor] = field(default=None)  # (3, 512, 512) in [-1, 1], for previews
    crop: Optional[FaceCrop] = field(default=None)  # where the 512×512 image was cut from its source

    def __repr__(self) -> str:
        source = "with source image" if self.source is not None else "no source image"
        crop = f", crop {self.crop.size}px at ({self.crop.x}, {self.crop.y}) {self.crop.method}" if self.crop else ""
        return f"Identity(z {_shape(self.z)}, {len(self.feats)} feature maps, {source}{crop})"
