"""Parity of the audio front end and WhisperX-VAE with the reference (golden fixtures).

Data-driven over every ``whisperx_vae*`` fixture in $TALKER_GOLDEN_DIR: the model is
built from the fixture's config, the weights from its manifest, loaded through
``WHISPERX_VAE_KEYS``; every stored output is compared by the parity rule of
tests/golden/README.md (``Fixture.check``: noise-aware where an alt run is stored).
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import golden_params, load_fixture, on_test_device
from golden_weights import make_state_dict

from talker_core.checkpoint import CheckpointError, load_strict
from talker_core.models.audio_frontend import resample, whisper_log_mel
from talker_core.models.whisperx_vae import (
    WHISPERX_VAE_KEYS,
    WhisperEncoderConfig,
    WhisperXVAE,
    WhisperXVAEConfig,
    state_dict_from_lightning,
)

FIXTURES = golden_params("whisperx_vae")

# Sample rates of the fixture's waveforms, by tensor name (44.1 kHz source).
RATES = {"wav_44k": 44_100, "wav_16k": 16_000, "wav_24k": 24_000}


@functools.lru_cache(maxsize=4)
def _fixture(path):
    return load_fixture(path)


def _weights(meta) -> dict[str, torch.Tensor]:
    return make_state_dict(meta["manifest"], meta["seed"], meta.get("unit_std", False))


@functools.lru_cache(maxsize=4)
def _model(path, folded: bool = False) -> WhisperXVAE:
    meta = _fixture(path).meta
    model = WhisperXVAE(WhisperXVAEConfig.from_dict(meta["config"])).eval()
    load_strict(model, _weights(meta), WHISPERX_VAE_KEYS, path.name, "WhisperX-VAE")
    if folded:
        model.fold_weight_norm()
    return on_test_device(model)


@pytest.mark.parametrize("path", FIXTURES)
def test_resampling(path):
    fx = _fixture(path)
    src = fx.tensors["wav_44k"]
    for name in ("wav_16k", "wav_24k"):
        fx.check(name, resample(src, RATES["wav_44k"], RATES[name]))


@pytest.mark.parametrize("path", FIXTURES)
def test_log_mel(path):
    fx = _fixture(path)
    t = fx.tensors
    n_mels = fx.meta["config"]["whisper"]["n_mels"]
    fx.check("mel", whisper_log_mel(t["wav_16k"], n_mels=n_mels), atol_key="mel_atol")
    # end to end from the 44.1 kHz source through our own resampler
    mel2 = whisper_log_mel(resample(t["wav_44k"], RATES["wav_44k"], RATES["wav_16k"]), n_mels=n_mels)
    fx.check("mel", mel2, atol_key="mel_atol")


@pytest.mark.parametrize("path", FIXTURES)
def test_semantic_branch(path):
    fx = _fixture(path)
    fx.check("semantic", _model(path).semantic_features(fx.tensors["mel"][None])[0])


@pytest.mark.parametrize("folded", [False, True], ids=["weight_norm", "folded"])
@pytest.mark.parametrize("path", FIXTURES)
def test_encode_decode(path, folded):
    fx = _fixture(path)
    t = fx.tensors
    model = _model(path, folded)
    assert model.weight_norm_folded == folded
    fx.check("latent", model.encode(t["wav_24k"][None], t["mel"][None])[0])
    fx.check("recon", model.decode(t["latent"][None])[0])


@pytest.mark.parametrize("path", FIXTURES)
def test_encode_waveform_end_to_end(path):
    fx = _fixture(path)
    fx.check("latent", _model(path).encode_waveform(fx.tensors["wav_44k"], RATES["wav_44k"])[0])


@pytest.mark.parametrize("path", FIXTURES)
def test_lightning_checkpoint_layout(path):
    """A Lightning-style dict (weights + training-only entries + cfg) loads strictly."""
    meta = _fixture(path).meta
    cfg = WhisperXVAEConfig.from_dict(meta["config"])
    sd = _weights(meta)
    extras = {
        "semantic_model.encoder.positional_embedding": torch.zeros(cfg.whisper.n_audio_ctx, cfg.whisper.n_audio_state),
        "semantic_model.decoder.token_embedding.weight": torch.zeros(4, cfg.whisper.n_audio_state),
        "discriminator.discriminators.0.convs.0.weight": torch.zeros(2, 1, 3),
        "spec_discriminator.blocks.0.weight": torch.zeros(2),
        "criteria.mel_loss.mel_basis": torch.zeros(3, 3),
    }
    lightning_cfg = {
        "model": {
            "codec_encoder": {**cfg.to_dict()["codec_encoder"], "unused_training_field": 1},
            "codec_decoder": cfg.to_dict()["codec_decoder"],
        },
        "dataset": {"sr": cfg.sample_rate, "batch_size": 8},
        "train": {"lr": 1e-4},
    }
    ckpt = {"state_dict": {**sd, **extras}, "hyper_parameters": {"cfg": lightning_cfg}, "epoch": 0}

    got = WhisperXVAEConfig.from_lightning_cfg(
        ckpt["hyper_parameters"]["cfg"], whisper=WhisperEncoderConfig(**meta["config"]["whisper"])
    )
    assert got == cfg
    model = WhisperXVAE(got)
    load_strict(model, state_dict_from_lightning(ckpt), WHISPERX_VAE_KEYS, "model.ckpt", "WhisperX-VAE")

    # a wrapper prefix is removed
    wrapped = {"state_dict": {"model." + k: v for k, v in ckpt["state_dict"].items()}}
    assert set(state_dict_from_lightning(wrapped)) == set(ckpt["state_dict"])

    # anything the map does not know is an error that names it
    bad = dict(ckpt["state_dict"], **{"CodecEnc.block.99.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"CodecEnc\.block\.99\.weight"):
        load_strict(
            WhisperXVAE(got),
            state_dict_from_lightning({"state_dict": bad}),
            WHISPERX_VAE_KEYS,
            "model.ckpt",
            "WhisperX-VAE",
        )
    missing = {k: v for k, v in sd.items() if not k.startswith("vae.out_proj")}
    with pytest.raises(CheckpointError, match=r"vae\.out_proj"):
        load_strict(WhisperXVAE(got), missing, WHISPERX_VAE_KEYS, "model.ckpt", "WhisperX-VAE")
    with pytest.raises(CheckpointError):
        state_dict_from_lightning({"hyper_parameters": {}})
