"""Small checks the pipeline stages share (audio tensors, devices, lengths)."""

from __future__ import annotations

import torch

from talker_core.pipeline.request import MIN_REFERENCE_SECONDS

# ----------------------------------------------------------------------------------------------
# helpers


def _device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _as_waveform(waveform: torch.Tensor, sample_rate: int, what: str) -> torch.Tensor:
    """Validate an audio tensor and return it as (C, N) float32 on the CPU."""
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"{what}: expected an audio tensor, got {type(waveform).__name__}")
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim == 3:  # ComfyUI AUDIO: (B, C, N)
        if waveform.shape[0] != 1:
            raise ValueError(f"{what}: expected one clip, got a batch of {waveform.shape[0]}")
        waveform = waveform[0]
    if waveform.ndim != 2 or waveform.shape[0] < 1 or waveform.shape[0] > 64:
        raise ValueError(f"{what}: expected audio shaped (channels, samples), got {tuple(waveform.shape)}")
    if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 768_000:
        raise ValueError(f"{what}: sample rate {sample_rate!r} is not a plausible audio rate")
    waveform = waveform.detach().to("cpu", torch.float32)
    if not torch.isfinite(waveform).all():
        raise ValueError(f"{what}: the audio contains NaN or infinite samples; clean or re-export it")
    return waveform


def _check_audible(wav: torch.Tensor, sample_rate: int, what: str) -> None:
    seconds = wav.shape[-1] / sample_rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise ValueError(
            f"{what} is {seconds:.2f} s long; give at least {MIN_REFERENCE_SECONDS:g} s of clear speech "
            "(3-10 s works best)"
        )
    if float(wav.abs().max()) < 1e-4:
        raise ValueError(f"{what} is silent; give a recording of the voice to clone")
