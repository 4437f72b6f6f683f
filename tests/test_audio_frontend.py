"""Unit tests of the audio front end and of the WhisperX-VAE building blocks (no fixtures)."""

from __future__ import annotations

import math

import pytest
import torch

from talker_core.models import audio_frontend as af
from talker_core.models.whisperx_vae import (
    CodecDecoderConfig,
    CodecEncoderConfig,
    WhisperEncoderConfig,
    WhisperXVAE,
    WhisperXVAEConfig,
)


def _tone(freq: float, sr: int, seconds: float = 0.5, dtype=torch.float32) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t)).to(dtype)[None]


# -- to_mono --------------------------------------------------------------------


def test_to_mono_shapes():
    stereo = torch.stack([torch.ones(10), -torch.ones(10) * 3])
    mono = af.to_mono(stereo)
    assert mono.shape == (1, 10)
    torch.testing.assert_close(mono, torch.full((1, 10), -1.0))
    assert af.to_mono(torch.zeros(7)).shape == (1, 7)
    one = torch.randn(1, 5)
    assert af.to_mono(one) is one
    with pytest.raises(ValueError, match="channels"):
        af.to_mono(torch.zeros(1, 2, 3))


# -- resample -------------------------------------------------------------------


@pytest.mark.parametrize("orig,new", [(44_100, 16_000), (16_000, 24_000), (48_000, 24_000), (22_050, 24_000)])
def test_resample_length_and_tone(orig, new):
    x = _tone(440.0, orig)
    y = af.resample(x, orig, new)
    assert y.shape == (1, math.ceil(x.shape[-1] * new / orig))
    ref = _tone(440.0, new)[..., : y.shape[-1]]
    inner = slice(200, y.shape[-1] - 200)  # away from the zero-padded edges
    torch.testing.assert_close(y[..., inner], ref[..., inner], atol=2e-3, rtol=0)


def test_resample_round_trip():
    x = _tone(300.0, 16_000) + _tone(1234.0, 16_000)
    back = af.resample(af.resample(x, 16_000, 24_000), 24_000, 16_000)
    assert back.shape == x.shape
    torch.testing.assert_close(back[..., 200:-200], x[..., 200:-200], atol=2e-3, rtol=0)


def test_resample_removes_content_above_new_nyquist():
    def rms(w):
        return w[..., 200:-200].pow(2).mean().sqrt()

    kept = af.resample(_tone(6_000.0, 44_100), 44_100, 16_000)  # below 8 kHz: passes
    assert rms(kept) > 0.33  # a 0.5-amplitude sine has RMS 0.354
    gone = af.resample(_tone(10_000.0, 44_100), 44_100, 16_000)  # above 8 kHz: filtered out
    assert rms(gone) < 0.01


def test_resample_batch_dims_dtype_identity_and_cache():
    x = torch.randn(2, 3, 4410, dtype=torch.float64)
    y = af.resample(x, 44_100, 16_000)
    assert y.shape == (2, 3, 1600) and y.dtype == torch.float64
    torch.testing.assert_close(y[1, 2], af.resample(x[1, 2], 44_100, 16_000))
    assert af.resample(x, 16_000, 16_000) is x
    before = af._sinc_kernel.cache_info().hits
    af.resample(x, 44_100, 16_000)
    assert af._sinc_kernel.cache_info().hits > before


@pytest.mark.parametrize(
    "wav,orig,new,match",
    [
        (torch.zeros(1, 0), 16_000, 24_000, "empty"),
        (torch.tensor([[0.0, float("nan"), 0.0]]), 16_000, 24_000, "NaN"),
        (torch.tensor([[0.0, float("inf")]]), 16_000, 24_000, "NaN or infinite"),
        (torch.zeros(1, 10, dtype=torch.int16), 16_000, 24_000, "floating-point"),
        (torch.zeros(1, 10), 0, 24_000, "positive"),
        (torch.zeros(1, 10), 16_000.5, 24_000, "integers"),
    ],
)
def test_resample_errors(wav, orig, new, match):
    with pytest.raises(ValueError, match=match):
        af.resample(wav, orig, new)


# -- Whisper log-mel ----------------------------------------------------------------


def test_log_mel_shape_range_and_layouts():
    x = _tone(440.0, 16_000, 1.0)
    mel = af.whisper_log_mel(x)
    assert mel.shape == (128, af.WHISPER_FRAMES) and mel.dtype == torch.float32
    assert mel.max() - mel.min() <= 2.0 + 1e-6  # the 8-decade floor, /4
    torch.testing.assert_close(af.whisper_log_mel(x[0]), mel)
    assert af.whisper_log_mel(x, n_mels=80).shape == (80, af.WHISPER_FRAMES)
    # longer than 30 s: trimmed, same as the first 30 s
    long = torch.randn(1, af.WHISPER_SAMPLES + 1600, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(af.whisper_log_mel(long), af.whisper_log_mel(long[:, : af.WHISPER_SAMPLES]))


def test_log_mel_errors():
    with pytest.raises(ValueError, match="mono"):
        af.whisper_log_mel(torch.zeros(2, 1600))
    with pytest.raises(ValueError, match="empty"):
        af.whisper_log_mel(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="NaN"):
        af.whisper_log_mel(torch.full((1, 100), float("nan")))


def test_slaney_filters_shape_and_shape_of_triangles():
    fb = af.slaney_mel_filters(128)
    assert fb.shape == (128, af.WHISPER_N_FFT // 2 + 1)
    assert (fb >= 0).all()
    peaks = fb.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all()  # centres rise with the index
    # Slaney normalisation: each triangle integrates to ~1 over Hz (wide ones resolve well)
    df = 16_000 / af.WHISPER_N_FFT
    area = fb[-20:].sum(dim=1) * df
    torch.testing.assert_close(area, torch.ones_like(area), atol=0.02, rtol=0)


# -- WhisperX-VAE config and weight-norm folding ----------------------------------


def _small_cfg() -> WhisperXVAEConfig:
    # A smaller Whisper window keeps this fast: 200 mel frames → 100 positions → 50 latent frames.
    return WhisperXVAEConfig(
        codec_encoder=CodecEncoderConfig(in_dim=2, ratios=(4, 5, 6, 8), hidden_dim=16),
        codec_decoder=CodecDecoderConfig(hidden_dim=32, ratios=(8, 6, 5, 4), z_dim=8),
        sample_rate=24_000,
        whisper=WhisperEncoderConfig(n_mels=16, n_audio_ctx=100, n_audio_state=16, n_audio_head=2, n_audio_layer=1),
    )


def test_config_round_trip_and_invariants():
    for cfg in (WhisperXVAEConfig(), WhisperXVAEConfig.tiny(), _small_cfg()):
        assert WhisperXVAEConfig.from_dict(cfg.to_dict()) == cfg
    rel = WhisperXVAEConfig()
    assert (rel.whisper.n_mels, rel.whisper.n_audio_ctx, rel.whisper.n_audio_state) == (128, 1500, 1280)
    assert rel.hop * 25 == rel.sample_rate
    d = _small_cfg().to_dict()
    with pytest.raises(ValueError, match="undo"):
        WhisperXVAEConfig.from_dict({**d, "codec_decoder": {**d["codec_decoder"], "ratios": [8, 6, 5]}})
    with pytest.raises(ValueError, match="25 Hz"):
        WhisperXVAEConfig.from_dict({**d, "sample_rate": 16_000})
    with pytest.raises(ValueError, match="n_audio_state"):
        WhisperXVAEConfig.from_dict({**d, "whisper": {**d["whisper"], "n_audio_state": 32}})
    with pytest.raises(ValueError, match="unknown"):
        WhisperXVAEConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="dataset.sr"):
        WhisperXVAEConfig.from_lightning_cfg(
            {"model": {"codec_encoder": d["codec_encoder"], "codec_decoder": d["codec_decoder"]}}
        )


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = WhisperXVAE(_small_cfg()).eval()
    with torch.no_grad():  # make the weight norm non-trivial
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.rand_like(p) + 0.5)
    return model


def _small_inputs(frames=10):
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 1, frames * 960, generator=g) * 0.1
    mel = torch.randn(2, 16, 200, generator=g)
    return wav, mel


def test_fold_weight_norm_is_equivalent(small_model):
    import copy

    wav, mel = _small_inputs()
    lat = small_model.encode(wav, mel)
    assert lat.shape == (2, 10, 8)
    rec = small_model.decode(lat)
    assert rec.shape == (2, 1, 10 * 960)
    folded = copy.deepcopy(small_model).fold_weight_norm()
    assert folded.weight_norm_folded
    keys = folded.state_dict().keys()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    assert "vae.in_proj.weight" in keys
    torch.testing.assert_close(folded.encode(wav, mel), lat, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(folded.decode(lat), rec, atol=1e-6, rtol=1e-6)


def test_encode_decode_dtypes_and_errors(small_model):
    import copy

    wav, mel = _small_inputs()
    lat = small_model.encode(wav, mel)
    m64 = copy.deepcopy(small_model).to(torch.float64)
    lat64 = m64.encode(wav, mel)
    assert lat64.dtype == torch.float64
    torch.testing.assert_close(lat64.float(), lat, atol=1e-4, rtol=1e-4)
    mbf = copy.deepcopy(small_model).to(torch.bfloat16)
    assert mbf.decode(lat).dtype == torch.bfloat16
    assert torch.isfinite(mbf.encode(wav, mel).float()).all()

    with pytest.raises(ValueError, match="mel must have shape"):
        small_model.encode(wav, mel[..., :100])
    with pytest.raises(ValueError, match="more than"):
        small_model.encode(torch.zeros(2, 1, 60 * 960), mel)  # 60 frames > 100 / 2
    with pytest.raises(ValueError, match="batch sizes"):
        small_model.encode(wav[:1], mel)
    with pytest.raises(ValueError, match="latents must have shape"):
        small_model.decode(torch.zeros(1, 5, 7))
