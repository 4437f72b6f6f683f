"""Audio front end: mono mix, band-limited resampling and the Whisper log-mel.

Reproduces the preprocessing of the reference ``infer.py`` (``load_audio_and_get_mel``):
the channel mean, torchaudio's ``transforms.Resample`` with its defaults (windowed
sinc interpolation, Hann window, ``lowpass_filter_width = 6``, ``rolloff = 0.99``) and
openai-whisper's ``pad_or_trim`` + ``log_mel_spectrogram(n_mels=128)`` (MODEL.md §6).
Pure PyTorch; the Slaney mel filter bank is computed here, not loaded.

Legend: C channels, T samples, M mel bins, F mel frames (100 per second at 16 kHz).
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F

from talker_core.types import WHISPER_SAMPLE_RATE

__all__ = [
    "WHISPER_SAMPLE_RATE",
    "WHISPER_N_FFT",
    "WHISPER_HOP",
    "WHISPER_SECONDS",
    "WHISPER_SAMPLES",
    "WHISPER_FRAMES",
    "to_mono",
    "resample",
    "pad_or_trim",
    "slaney_mel_filters",
    "whisper_log_mel",
]

log = logging.getLogger(__name__)

WHISPER_N_FFT = 400  # 25 ms window
WHISPER_HOP = 160  # 10 ms hop
WHISPER_SECONDS = 30  # Whisper always sees a 30 s window
WHISPER_SAMPLES = WHISPER_SAMPLE_RATE * WHISPER_SECONDS  # 480 000
WHISPER_FRAMES = WHISPER_SAMPLES // WHISPER_HOP  # 3000


def _check_wave(wav: torch.Tensor, name: str) -> None:
    if not isinstance(wav, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(wav).__name__}")
    if not wav.is_floating_point():
        raise ValueError(f"{name} must be a floating-point waveform, got dtype {wav.dtype}")
    if wav.ndim == 0 or wav.shape[-1] == 0 or wav.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(wav.shape)}); give at least one sample of audio")
    if not bool(torch.isfinite(wav).all()):
        raise ValueError(f"{name} contains NaN or infinite samples; clean the audio before encoding it")


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Average the channels: (C, T) or (T,) → (1, T)."""
    _check_wave(wav, "waveform")
    if wav.ndim == 1:
        return wav.unsqueeze(0)
    if wav.ndim != 2:
        raise ValueError(f"waveform must have shape (channels, samples) or (samples,), got {tuple(wav.shape)}")
    if wav.shape[0] == 1:
        return wav
    return wav.mean(dim=0, keepdim=True)


# ---------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------
#
# Band-limited interpolation: an output sample at time j/new is a windowed-sinc
# weighted sum of input samples x[i] at times i/orig. After reducing both rates by
# their gcd, output phases repeat every `new` samples while the input advances by
# `orig`, so one (new, 1, K) kernel bank applied as a strided convolution computes
# every output.


@functools.lru_cache(maxsize=32)
def _sinc_kernel(
    orig: int, new: int, zero_crossings: int, rolloff: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Kernel bank (new, 1, 2·W + orig) and half width W for gcd-reduced rates.

    Built in float64 (as torchaudio's ``transforms.Resample`` does) and cast once.
    """
    cutoff = min(orig, new) * rolloff  # in units of the reduced rates
    half = math.ceil(zero_crossings * orig / cutoff)
    taps = torch.arange(-half, half + orig, dtype=torch.float64) / orig  # (K,) input sample times
    phases = -torch.arange(new, dtype=torch.float64) / new  # (new,) output sample times, negated
    t = (phases[:, None] + taps[None, :]) * cutoff  # (new, K), in cut-off periods
    t = t.clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * (math.pi / (2 * zero_crossings))) ** 2  # Hann over ±zero_crossings
    arg = t * math.pi
    safe = torch.where(arg == 0, torch.ones_like(arg), arg)
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(safe) / safe)
    kernel = sinc * window * (cutoff / orig)
    return kernel.unsqueeze(1).to(device=device, dtype=dtype), half


def resample(
    wav: torch.Tensor,
    orig_sr: int,
    new_sr: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """Resample along the last axis: (..., T) at ``orig_sr`` → (..., ceil(T·new_sr/orig_sr)).

    Windowed-sinc (Hann) interpolation with the defaults of torchaudio's ``Resample``;
    kernels are cached per (rates, dtype, device). Returns ``wav`` itself when the
    rates are equal.
    """
    _check_wave(wav, "waveform")
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} → {new_sr}")
    if lowpass_filter_width <= 0:
        raise ValueError(f"lowpass_filter_width must be positive, got {lowpass_filter_width}")
    if not 0.0 < rolloff <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr == new_sr:
        return wav
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, half = _sinc_kernel(orig, new, int(lowpass_filter_width), float(rolloff), wav.dtype, wav.device)

    lead = wav.shape[:-1]
    length = wav.shape[-1]
    x = wav.reshape(-1, 1, length)
    x = F.pad(x, (half, half + orig))
    y = F.conv1d(x, kernel, stride=orig)  # (N, new, blocks): phase-major
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # interleave phases in time order
    out_len = -(-new * length // orig)  # ceil
    return y[:, :out_len].reshape(*lead, out_len)


# ---------------------------------------------------------------------------
# Whisper log-mel
# ---------------------------------------------------------------------------


def pad_or_trim(wav: torch.Tensor, length: int = WHISPER_SAMPLES) -> torch.Tensor:
    """Zero-pad or cut the last axis to ``length`` samples: (..., T) → (..., length)."""
    n = wav.shape[-1]
    if n > length:
        return wav[..., :length]
    if n < length:
        return F.pad(wav, (0, length - n))
    return wav


def _hz_to_slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    # Slaney's Auditory Toolbox scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3.0
    brk_hz, brk_mel = 1000.0, 1000.0 / f_sp
    logstep = math.log(6.4) / 27.0
    return torch.where(hz >= brk_hz, brk_mel + torch.log(hz.clamp_min(brk_hz) / brk_hz) / logstep, hz / f_sp)


def _slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    f_sp = 200.0 / 3.0
    brk_hz, brk_mel = 1000.0, 1000.0 / f_sp
    logstep = math.log(6.4) / 27.0
    return torch.where(mel >= brk_mel, brk_hz * torch.exp(logstep * (mel - brk_mel)), mel * f_sp)


@functools.lru_cache(maxsize=8)
def slaney_mel_filters(
    n_mels: int = 128, sample_rate: int = WHISPER_SAMPLE_RATE, n_fft: int = WHISPER_N_FFT
) -> torch.Tensor:
    """Slaney-normalised triangular mel filters over 0…sr/2: (M, n_fft//2 + 1), float32, CPU.

    Same filters as ``librosa.filters.mel(sr, n_fft, n_mels)`` (the matrix openai-whisper ships):
    band edges equally spaced on the Slaney mel scale, each triangle scaled by 2/(f_hi − f_lo).
    """
    if n_mels <= 0 or n_fft <= 0 or sample_rate <= 0:
        raise ValueError(f"bad mel filter sizes: n_mels={n_mels}, n_fft={n_fft}, sample_rate={sample_rate}")
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)  # (K,) Hz
    top = _hz_to_slaney_mel(torch.tensor(sample_rate / 2.0, dtype=torch.float64))
    edges = _slaney_mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))  # (M+2,)
    widths = edges[1:] - edges[:-1]  # (M+1,)
    dist = edges[:, None] - bins[None, :]  # (M+2, K)
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    tri = torch.clamp(torch.minimum(rising, falling), min=0.0)
    tri = tri * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return tri.to(torch.float32)


def whisper_log_mel(wav16k: torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """Whisper's log-mel of one 16 kHz clip padded/trimmed to 30 s: (1, T) or (T,) → (M, 3000).

    STFT (n_fft 400, hop 160, periodic Hann, centred with reflection) → power of all
    but the last frame → Slaney mel → log10(max(·, 1e-10)) → floor at (clip max − 8)
    → (x + 4) / 4. Computed in float32 whatever the input dtype; the floor depends on
    the whole clip, so batch items must be computed one by one.
    """
    _check_wave(wav16k, "16 kHz waveform")
    if wav16k.ndim == 2 and wav16k.shape[0] == 1:
        wav16k = wav16k[0]
    if wav16k.ndim != 1:
        raise ValueError(
            f"whisper_log_mel takes one mono clip of shape (1, samples) or (samples,), got {tuple(wav16k.shape)}; "
            "mix to mono first and call it once per clip"
        )
    audio = pad_or_trim(wav16k.to(torch.float32), WHISPER_SAMPLES)
    window = torch.hann_window(WHISPER_N_FFT, dtype=torch.float32, device=audio.device)
    spec = torch.stft(
        audio, WHISPER_N_FFT, WHISPER_HOP, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = spec[..., :-1].abs() ** 2  # (K, 3000)
    filters = slaney_mel_filters(n_mels, WHISPER_SAMPLE_RATE, WHISPER_N_FFT).to(audio.device)
    mel = filters @ power  # (M, 3000)
    logmel = torch.clamp(mel, min=1e-10).log10()
    logmel = torch.maximum(logmel, logmel.max() - 8.0)
    return (logmel + 4.0) / 4.0
