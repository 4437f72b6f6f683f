"""Parity of the speaker encoder (WavLM + ECAPA-TDNN) with the golden fixtures, and its file handling."""

from __future__ import annotations

import pytest
import torch
from conftest import golden_params, load_fixture, on_test_device
from golden_weights import make_state_dict

from talker_core.checkpoint import CheckpointError, load_strict
from talker_core.models.speaker_encoder import (
    SPEAKER_KEYS,
    SpeakerEncoder,
    SpeakerEncoderConfig,
    config_from_state_dict,
    state_dict_from_file,
)
from talker_core.models.wavlm import WavLMConfig, format_conv_layers, parse_conv_layers

RELEASE_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"


def _build(meta):
    config = SpeakerEncoderConfig.from_dict(meta["config"])
    model = SpeakerEncoder(config).eval()
    weights = make_state_dict(meta["manifest"], meta["seed"], meta.get("unit_std", False))
    load_strict(model, weights, SPEAKER_KEYS, "golden manifest", "speaker encoder")
    return config, on_test_device(model), weights


@pytest.mark.parametrize("path", golden_params("speaker"))
def test_speaker_parity(path):
    fx = load_fixture(path)
    _, model, _ = _build(fx.meta)
    tensors = fx.tensors
    wav = tensors["wav_16k"]
    with torch.no_grad():
        hidden = model.hidden_states(wav)  # (L+1, B, T, D)
        embedding = model(wav)  # (B, E)
    refs = [tensors] if fx.alt is None else [tensors, fx.alt]
    if tensors["hidden_states"].ndim == 3:  # stored for a single clip: (L+1, T, D)
        refs = [{**r, "hidden_states": r["hidden_states"].unsqueeze(1)} for r in refs]
    alt = refs[1] if len(refs) > 1 else {}
    fx.check("hidden_states", hidden, expected=refs[0]["hidden_states"], alt=alt.get("hidden_states"))
    shape = embedding.shape
    fx.check(
        "embedding",
        embedding,
        expected=tensors["embedding"].reshape(shape),
        alt=None if fx.alt is None else fx.alt["embedding"].reshape(shape),
    )


@pytest.mark.parametrize("path", golden_params("speaker"))
def test_config_from_state_dict(path):
    meta = load_fixture(path).meta
    config = SpeakerEncoderConfig.from_dict(meta["config"])
    weights = make_state_dict(meta["manifest"], meta["seed"], meta.get("unit_std", False))
    assert config_from_state_dict(weights, base=config) == config
    # Everything the shapes fix is recovered even from release defaults as the base.
    guessed = config_from_state_dict(weights)
    for name in (
        "conv_feature_layers",
        "conv_bias",
        "extractor_mode",
        "encoder_layers",
        "encoder_embed_dim",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "conv_pos",
        "conv_pos_groups",
        "num_buckets",
        "relative_position_embedding",
        "gru_rel_pos",
    ):
        assert getattr(guessed.wavlm, name) == getattr(config.wavlm, name), name
    assert guessed.ecapa == config.ecapa


@pytest.mark.parametrize("path", golden_params("speaker"))
def test_module_keys_are_published_keys(path):
    meta = load_fixture(path).meta
    model = SpeakerEncoder(SpeakerEncoderConfig.from_dict(meta["config"]))
    published = {k for k in meta["manifest"] if not SPEAKER_KEYS.is_ignored(k)}
    assert set(model.state_dict()) == published


def test_release_file_layout_is_accepted_and_checked():
    config = SpeakerEncoderConfig.tiny()
    source = SpeakerEncoder(config)
    sd = dict(source.state_dict())
    sd["feature_extract.model.mask_emb"] = torch.zeros(config.wavlm.encoder_embed_dim)
    sd["loss_calculator.projection.weight"] = torch.zeros(7, config.ecapa.emb_dim)
    state = state_dict_from_file({"model": sd, "best_valid_eer": 0.5})
    assert config_from_state_dict(state, base=config) == config
    target = SpeakerEncoder(config)
    load_strict(target, state, SPEAKER_KEYS, "tiny file", "speaker encoder")
    state["feature_extract.model.encoder.layers.0.self_attn.unknown"] = torch.zeros(1)
    with pytest.raises(CheckpointError):
        load_strict(target, state, SPEAKER_KEYS, "tiny file", "speaker encoder")
    for bad in (sd, [sd], {"model": [1, 2]}, {"model": {"x": 1}}):
        with pytest.raises(CheckpointError):
            state_dict_from_file(bad)


def test_batch_rows_are_independent():
    torch.manual_seed(0)
    model = SpeakerEncoder(SpeakerEncoderConfig.tiny()).eval()
    wav = torch.randn(2, 6400)
    with torch.no_grad():
        both = model(wav)
        one = torch.cat([model(wav[:1]), model(wav[1:])])
    assert both.shape == (2, model.ecapa_config.emb_dim)
    torch.testing.assert_close(both, one, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 100))  # shorter than one WavLM frame


def test_conv_layer_strings():
    layers = parse_conv_layers(RELEASE_CONV)
    assert layers == ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    assert format_conv_layers(layers) == RELEASE_CONV
    assert parse_conv_layers("[(8, 4, 2), (8, 3, 1,)] * 2") == ((8, 4, 2), (8, 3, 1)) * 2
    for bad in ("__import__('os')", "[(1,2)]", "[(1,2,3)] +", "[(1,2,3)] * x", "[(0,2,3)]", ""):
        with pytest.raises(ValueError):
            parse_conv_layers(bad)


def test_config_dicts_round_trip_and_validate():
    for config in (SpeakerEncoderConfig(), SpeakerEncoderConfig.tiny()):
        assert SpeakerEncoderConfig.from_dict(config.to_dict()) == config
    release = WavLMConfig()
    assert (release.encoder_layers, release.encoder_embed_dim, release.num_buckets, release.max_distance) == (
        24,
        1024,
        320,
        800,
    )
    with pytest.raises(ValueError):
        WavLMConfig(encoder_attention_heads=5)
    with pytest.raises(ValueError):
        WavLMConfig.from_dict({"encoder_layer": 3})
    with pytest.raises(ValueError):
        SpeakerEncoderConfig(WavLMConfig.tiny(), SpeakerEncoderConfig().ecapa)  # widths disagree
