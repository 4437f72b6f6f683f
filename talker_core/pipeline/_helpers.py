"""Small checks the pipeline stages share (audio tensors, devices, lengths)."""

from __future__ import annotations

import torch

from talker_core.media._common import warn_clipping
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
    warn_clipping(waveform, what)
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


class NonFiniteError(ValueError):
    """A stage produced NaN or infinite values; the message names the stage and what to change."""


def check_finite(values: torch.Tensor, stage: str, module: torch.nn.Module | None = None) -> None:
    """Raise :class:`NonFiniteError` when ``values`` holds NaN/inf (one reduction, no copy of the data)."""
    if bool(torch.isfinite(values).all()):
        return
    device, dtype = _device_dtype(module) if module is not None else (values.device, values.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        name = "fp16" if dtype == torch.float16 else "bf16"
        hint = (
            f"the model runs in {name} on {device}, which overflows here: load it in fp32 "
            "(--dtype fp32 on the command line, precision fp32 in the loader node)"
        )
    else:
        hint = (
            "the model files may be damaged (download them again), or the inputs are extreme "
            "(try other settings: a lower cfg or temperature)"
        )
    raise NonFiniteError(f"{stage} produced NaN or infinite values; nothing was written. {hint[0].upper()}{hint[1:]}")
