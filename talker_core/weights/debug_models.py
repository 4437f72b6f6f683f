"""A complete tiny random-weight model set in the published formats and layout.

:func:`write_debug_models` writes, under one folder, the four files of the component
registry (:mod:`talker_core.weights.components`: the release names and formats, each
component's ``debug_writer``) exactly as the real ones are stored (MODEL.md §2), with
test sizes and seeded random weights:

- ``talker-t2av/model.safetensors``: ``TalkerConfig.tiny()`` under the published
  key names (tied LM head included as its own tensor, as in the release), with a
  ``talker_config`` entry in the metadata; plus the debug tokenizer
  (:func:`talker_core.tokenizer.write_debug_tokenizer`, 263 tokens, within the
  tiny vocabulary of 320) with its template in ``chat_template.jinja``, and the
  backbone's Qwen3 ``config.json``, as in the published folder.
- ``whisperx-vae/model.ckpt``: a Lightning-style pickle — ``state_dict`` with the
  unprefixed module names the reference loads (``CodecEnc.*``, ``CodecDec.*``,
  ``vae.*``, ``semantic_model.*``) plus a few training-only entries the real file
  has (Whisper's stored positional table and text decoder, a discriminator, a
  validator), ``hyper_parameters.cfg`` with ``model.codec_encoder``,
  ``model.codec_decoder`` and ``dataset.sr``, and the usual Lightning
  bookkeeping (``pytorch-lightning_version``, ``epoch``, ``global_step``,
  ``optimizer_states``, ``lr_schedulers``, ``loops``, ``callbacks``). The cfg is an
  OmegaConf ``DictConfig`` when omegaconf is importable, as in the real file;
  otherwise a plain nested dict of the same structure (the loader reads both).
  The Whisper branch has width 64 with one head, so that the loader's
  shape-based inference (64-wide heads, as in every openai-whisper size)
  recovers it from the file alone, as it must for the real checkpoint.
- ``lia-x.pt``: the plain ``enc.*``/``dec.*`` state dict of ``LiaXConfig.tiny()``
  (scale 1/8: every width an eighth of the release's scale-1 layout, same keys;
  the loader infers the scale from the first convolution, as for the release).
- ``wavlm_large_finetune.pth``: ``{"model": state dict}`` of a tiny WavLM +
  ECAPA-TDNN with a 256-wide embedding (the Talker's speaker width), including
  the two unused entries of the real file (``mask_emb``, ``loss_calculator.*``).
  Sizes that the file cannot express (WavLM ``max_distance``, strides) keep the
  release values, so the loader's inference from shapes rebuilds this config.

Weights come from each module's own initialisation under ``torch.manual_seed``
(the global RNG state is restored afterwards), so every tiny model gives
finite, non-constant outputs. Nothing here downloads anything.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "debug_talker_config",
    "write_backbone_config",
    "debug_whisperx_config",
    "debug_liax_config",
    "debug_speaker_config",
    "write_debug_models",
]

log = logging.getLogger(__name__)


def debug_talker_config():
    from talker_core.models.talker import TalkerConfig

    return TalkerConfig.tiny()


def debug_whisperx_config():
    from talker_core.models.whisperx_vae import WhisperEncoderConfig, WhisperXVAEConfig

    tiny = WhisperXVAEConfig.tiny()
    w = tiny.whisper
    # one 64-wide head: what the loader infers from a width of 64 (see module docstring)
    whisper = WhisperEncoderConfig(
        n_mels=w.n_mels,
        n_audio_ctx=w.n_audio_ctx,
        n_audio_state=w.n_audio_state,
        n_audio_head=w.n_audio_state // 64,
        n_audio_layer=w.n_audio_layer,
    )
    return WhisperXVAEConfig(
        codec_encoder=tiny.codec_encoder,
        codec_decoder=tiny.codec_decoder,
        sample_rate=tiny.sample_rate,
        whisper=whisper,
    )


def debug_liax_config():
    from talker_core.models.liax import LiaXConfig

    return LiaXConfig.tiny()


def debug_speaker_config():
    from talker_core.models.ecapa import EcapaConfig
    from talker_core.models.speaker_encoder import SpeakerEncoderConfig
    from talker_core.models.wavlm import WavLMConfig

    wavlm = WavLMConfig.tiny().to_dict()
    wavlm["max_distance"] = WavLMConfig().max_distance  # not stored in the file: keep the release value
    ecapa = EcapaConfig.tiny().to_dict()
    ecapa["emb_dim"] = debug_talker_config().speaker_dim  # the speech head's global condition width
    return SpeakerEncoderConfig(WavLMConfig.from_dict(wavlm), EcapaConfig.from_dict(ecapa))


def _state(module: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The module's state dict with every tensor owning its storage (tied weights cloned)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    seen: set[int] = set()
    for k, v in module.state_dict().items():
        v = v.detach()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v.contiguous()
        seen.add(ptr)
    return out


def _write_talker(folder: Path, seed: int) -> None:
    from safetensors.torch import save_file

    from talker_core.models.talker import TalkerModel
    from talker_core.tokenizer import write_debug_tokenizer
    from talker_core.weights.components import COMPONENTS
    from talker_core.weights.loaders import BACKBONE_CONFIG

    config = debug_talker_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TalkerModel(config)
        # the release's pad embedding is trained; a zero one would hide mistakes
        torch.nn.init.normal_(model.motion_pad_emb, std=0.02)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "talker_kind": "talker", "talker_config": json.dumps(config.to_dict(), sort_keys=True)}
    save_file(dict(_state(model)), str(folder / (COMPONENTS["talker"].weights_file or "")), metadata=meta)
    write_debug_tokenizer(folder, template_file=True)  # the published folder has chat_template.jinja
    write_backbone_config(folder / BACKBONE_CONFIG, config)


def write_backbone_config(path: Path, config) -> None:
    """A Qwen3 ``config.json`` for the backbone of ``config`` (a TalkerConfig), as the published folder has."""
    import dataclasses

    data = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", **dataclasses.asdict(config.llm)}
    data["torch_dtype"] = "float32"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _whisperx_cfg_tree(config) -> dict:
    enc, dec = config.codec_encoder, config.codec_decoder
    return {
        "model": {
            "codec_encoder": {"in_dim": enc.in_dim, "ratios": list(enc.ratios), "hidden_dim": enc.hidden_dim},
            "codec_decoder": {"hidden_dim": dec.hidden_dim, "ratios": list(dec.ratios), "z_dim": dec.z_dim},
        },
        "dataset": {"sr": config.sample_rate, "max_seconds": 6.0, "train_list": None},
        "preprocess": {"audio": {"sr": "${dataset.sr}", "hop": config.hop}},
        "train": {"lr": 1.0e-4, "betas": [0.8, 0.9], "max_steps": 480000, "use_discriminator": True},
    }


def _write_whisperx(path: Path, seed: int) -> None:
    from talker_core.models.whisperx_vae import WhisperXVAE

    config = debug_whisperx_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperXVAE(config)
        sd = _state(model)
        width = config.whisper.n_audio_state
        # training-only / recomputed entries of the real checkpoint
        sd["semantic_model.encoder.positional_embedding"] = (
            model.semantic_model.encoder.positional_embedding.detach().clone()
        )
        sd["semantic_model.decoder.token_embedding.weight"] = torch.randn(8, width) * 0.02
        sd["semantic_model.decoder.ln.weight"] = torch.ones(width)
        sd["discriminator.discriminators.0.convs.0.weight"] = torch.randn(4, 1, 5, 1) * 0.02
        sd["model_spk.feature_weight"] = torch.zeros(3)

    tree = _whisperx_cfg_tree(config)
    try:
        from omegaconf import OmegaConf

        cfg: Any = OmegaConf.create(tree)
    except ImportError:
        cfg = tree
    first = next(iter(sd.values()))
    ckpt = {
        "epoch": 0,
        "global_step": 480000,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 480000}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_path": "", "dirpath": "ckpt"}},
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(first)}},
                "param_groups": [
                    {
                        "lr": 1.0e-4,
                        "betas": (0.8, 0.9),
                        "eps": 1e-8,
                        "weight_decay": 0.0,
                        "amsgrad": False,
                        "foreach": None,
                        "params": [0],
                    }
                ],
            }
        ],
        "lr_schedulers": [{"base_lrs": [1.0e-4], "last_epoch": 480000, "_step_count": 480001}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"cfg": cfg},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, str(path))


def _write_liax(path: Path, seed: int) -> None:
    from talker_core.models.liax import LiaXGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LiaXGenerator(debug_liax_config())
    sd = _state(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, str(path))


def _write_speaker(path: Path, seed: int) -> None:
    from talker_core.models.speaker_encoder import SpeakerEncoder

    config = debug_speaker_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SpeakerEncoder(config)
        # the trained mixing weights are not uniform; give them some spread
        torch.nn.init.normal_(model.feature_weight, std=0.5)
        sd = _state(model)
        sd["feature_extract.model.mask_emb"] = torch.rand(config.wavlm.encoder_embed_dim)
        sd["loss_calculator.projection.weight"] = torch.randn(16, config.ecapa.emb_dim) * 0.02
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd}, str(path))


def write_debug_models(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write the tiny model set into ``out_dir`` under the release names of the component registry.

    Returns kind → path written. The same seed gives the same files' tensors (component ``i`` of
    the registry is written with ``seed + i``).
    """
    from talker_core.weights.components import COMPONENTS

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, c in enumerate(COMPONENTS.values()):
        paths[c.kind] = root / c.release
        c.debug_writer()(paths[c.kind], seed + i)
    log.info("wrote a debug model set to %s", root)
    return paths
