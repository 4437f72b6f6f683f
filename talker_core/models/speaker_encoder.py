"""Speaker encoder: WavLM hidden states → ECAPA-TDNN → 256-d speaker embedding.

The global condition of Talker-T2AV's speech DiT head (MODEL.md §1, §8). The
published weights are Microsoft UniSpeech's speaker-verification checkpoint
``wavlm_large_finetune.pth``, loaded by the reference through
``speaker_verification/verification.py`` (``init_model('wavlm_large', ...)``)
and called in ``speech_llm.py`` as ``spk(audio16k)``.

Layout (as in the file): the ECAPA-TDNN head is the root module (``layer1..4``,
``conv``, ``pooling``, ``bn``, ``linear``), with ``feature_weight`` (one logit per
WavLM hidden state) beside it and WavLM under ``feature_extract.model``.

The file is ``{"model": state_dict}``. Besides the 709 tensors of this module
(release sizes) it carries two entries inference does not use, listed in
``SPEAKER_IGNORED``: WavLM's pre-training mask embedding
``feature_extract.model.mask_emb`` and the weight of the speaker-classification
(AAM softmax) layer that trained the embedding, ``loss_calculator.projection.weight``.
It stores no hyper-parameters: WavLM-Large's are the defaults of
:class:`~talker_core.models.wavlm.WavLMConfig`, and :func:`config_from_state_dict`
reads every size that the shapes determine.

Legend: B batch, N samples at 16 kHz, T frames (50 Hz), D WavLM width,
L WavLM layers, E embedding width.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from talker_core.checkpoint import CheckpointError, KeyMap
from talker_core.models.ecapa import EcapaConfig, EcapaTdnn, mix_hidden_states
from talker_core.models.wavlm import WavLM, WavLMConfig, format_conv_layers
from talker_core.types import SPEAKER_SAMPLE_RATE

__all__ = [
    "SPEAKER_SAMPLE_RATE",
    "SPEAKER_KEYS",
    "SpeakerEncoderConfig",
    "SpeakerEncoder",
    "state_dict_from_file",
    "config_from_state_dict",
]

log = logging.getLogger(__name__)


# Published keys that inference does not use (full match on the published name).
SPEAKER_IGNORED = (
    r"feature_extract\.model\.mask_emb",  # WavLM pre-training: embedding of masked frames
    r"loss_calculator\..+",  # speaker-classification head used to train the embedding
)

SPEAKER_KEYS = KeyMap(ignore=SPEAKER_IGNORED)

_WAVLM = "feature_extract.model."


@dataclass
class SpeakerEncoderConfig:
    """WavLM and ECAPA-TDNN sizes; defaults are the release (WavLM-Large, ECAPA 512/256)."""

    wavlm: WavLMConfig = field(default_factory=WavLMConfig)
    ecapa: EcapaConfig = field(default_factory=EcapaConfig)

    def __post_init__(self):
        if isinstance(self.wavlm, Mapping):
            self.wavlm = WavLMConfig.from_dict(self.wavlm)
        if isinstance(self.ecapa, Mapping):
            self.ecapa = EcapaConfig.from_dict(self.ecapa)
        if self.ecapa.feat_dim != self.wavlm.encoder_embed_dim:
            raise ValueError(
                f"SpeakerEncoderConfig: ecapa.feat_dim ({self.ecapa.feat_dim}) must equal the WavLM width "
                f"wavlm.encoder_embed_dim ({self.wavlm.encoder_embed_dim})"
            )

    @classmethod
    def tiny(cls) -> SpeakerEncoderConfig:
        return cls(WavLMConfig.tiny(), EcapaConfig.tiny())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeakerEncoderConfig:
        """From ``{"wavlm": {...}, "ecapa": {...}}``; a missing part takes the release values."""
        unknown = sorted(set(data) - {"wavlm", "ecapa"})
        if unknown:
            raise ValueError(f"SpeakerEncoderConfig: unknown field(s) {unknown}; expected 'wavlm' and 'ecapa'")
        wavlm = WavLMConfig.from_dict(data.get("wavlm", {}))
        ecapa = EcapaConfig.from_dict(data.get("ecapa", {}))
        return cls(wavlm, ecapa)

    def to_dict(self) -> dict[str, Any]:
        return {"wavlm": self.wavlm.to_dict(), "ecapa": self.ecapa.to_dict()}


class _Upstream(nn.Module):
    """Holds WavLM as ``model`` so that its keys read ``feature_extract.model.*``."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.model = WavLM(config)


class SpeakerEncoder(EcapaTdnn):
    """16 kHz waveform → speaker embedding; module keys are the published ones (less ``SPEAKER_IGNORED``)."""

    def __init__(self, config: SpeakerEncoderConfig | None = None):
        config = config or SpeakerEncoderConfig()
        super().__init__(config.ecapa)
        self.config = config
        self.feature_extract = _Upstream(config.wavlm)
        self.feature_weight = nn.Parameter(torch.zeros(config.wavlm.num_hidden_states))

    @property
    def wavlm(self) -> WavLM:
        return self.feature_extract.model

    def hidden_states(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(B, N) 16 kHz waveform → (L+1, B, T, D) WavLM hidden states, unweighted.

        Entry l < L is the input of WavLM layer l, entry L the normalised encoder
        output; the waveform is layer-normalised first when ``wavlm.normalize``.
        """
        return torch.stack(self.wavlm(wav16k), dim=0)

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(B, N) → (B, D, T): hidden states mixed by softmax(``feature_weight``), instance-normalised."""
        return mix_hidden_states(self.hidden_states(wav16k), self.feature_weight)

    def forward(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(B, N) float 16 kHz mono waveform → (B, E) speaker embedding (E = 256 in the release).

        Every row is used in full (no padding mask): batch clips of equal length
        only. The reference feeds the reference clip cut to whole 25 Hz frames.
        """
        return self.embed(self.features(wav16k))


# --------------------------------------------------------------------------- #
# Published file
# --------------------------------------------------------------------------- #


def state_dict_from_file(obj: Any, source: str = "the speaker-verification file") -> dict[str, torch.Tensor]:
    """The state dict inside what ``torch.load`` returns for ``wavlm_large_finetune.pth``.

    The file holds ``{"model": {name: tensor}}``; anything else is a
    :class:`CheckpointError` naming ``source``. Other top-level entries are ignored.
    """
    if not isinstance(obj, Mapping) or "model" not in obj:
        kind = f"a mapping with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{source} is not a speaker-verification checkpoint: expected {{'model': state_dict}}, found {kind}. "
            "Use the WavLM-Large speaker-verification checkpoint of Microsoft UniSpeech "
            "(downstreams/speaker_verification)."
        )
    state = obj["model"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: the 'model' entry is not a non-empty state dict ({type(state).__name__}).")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: the 'model' entry holds non-tensor values under {bad[:8]}.")
    extra = sorted(str(k) for k in obj if k != "model")
    if extra:
        log.debug("%s: ignoring top-level entries %s", source, extra)
    return dict(state)


def _shape(sd: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{source} does not look like a WavLM + ECAPA-TDNN speaker encoder: no key {key!r}.")
    return tuple(sd[key].shape)


def _indices(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.fullmatch(k))})


def config_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    base: SpeakerEncoderConfig | None = None,
    source: str = "speaker encoder state dict",
) -> SpeakerEncoderConfig:
    """Sizes of a published speaker-encoder state dict; what shapes do not fix comes from ``base``.

    From the shapes: the feature-extractor channels and kernels, its norm mode and
    conv bias, the WavLM width, FFN width, layer count, position-convolution
    kernel and groups, the relative-position bucket count and whether the bias
    is gated, the head count (from the bucket table or ``grep_a``), and every
    ECAPA size. From ``base`` (default: the release): conv strides (the layer
    count must agree), ``max_distance``, ``normalize``, ``layer_norm_first``,
    ``activation_fn``, and the head count when no position table is stored.
    """
    base = base or SpeakerEncoderConfig()
    w = base.wavlm.to_dict()

    conv_ids = _indices(sd, re.escape(_WAVLM) + r"feature_extractor\.conv_layers\.(\d+)\.0\.weight")
    if not conv_ids or conv_ids != list(range(len(conv_ids))):
        raise CheckpointError(f"{source}: WavLM feature-extractor convolutions missing or not numbered 0..n-1.")
    base_convs = base.wavlm.conv_layers
    if len(conv_ids) != len(base_convs):
        raise CheckpointError(
            f"{source}: {len(conv_ids)} feature-extractor convolutions, but the base config has "
            f"{len(base_convs)}; strides are not stored in the file, pass a base config with matching layers."
        )
    convs = []
    for i in conv_ids:
        out_ch, _, kernel = _shape(sd, f"{_WAVLM}feature_extractor.conv_layers.{i}.0.weight", source)
        convs.append((out_ch, kernel, base_convs[i][2]))
    w["conv_feature_layers"] = format_conv_layers(convs)
    w["conv_bias"] = f"{_WAVLM}feature_extractor.conv_layers.0.0.bias" in sd
    if f"{_WAVLM}feature_extractor.conv_layers.0.2.1.weight" in sd:
        w["extractor_mode"] = "layer_norm"
    elif f"{_WAVLM}feature_extractor.conv_layers.0.2.weight" in sd:
        w["extractor_mode"] = "default"
    else:
        raise CheckpointError(f"{source}: no normalisation found in the first feature-extractor block.")

    width = _shape(sd, f"{_WAVLM}encoder.layer_norm.weight", source)[0]
    w["encoder_embed_dim"] = width
    layer_ids = _indices(sd, re.escape(_WAVLM) + r"encoder\.layers\.(\d+)\..+")
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"{source}: WavLM encoder layers missing or not numbered 0..n-1.")
    w["encoder_layers"] = len(layer_ids)
    w["encoder_ffn_embed_dim"] = _shape(sd, f"{_WAVLM}encoder.layers.0.fc1.weight", source)[0]
    _, per_group, kernel = _shape(sd, f"{_WAVLM}encoder.pos_conv.0.weight_v", source)
    w["conv_pos"] = kernel
    w["conv_pos_groups"] = width // per_group

    table = f"{_WAVLM}encoder.layers.0.self_attn.relative_attention_bias.weight"
    gate = f"{_WAVLM}encoder.layers.0.self_attn.grep_a"
    w["relative_position_embedding"] = table in sd
    w["gru_rel_pos"] = gate in sd
    if table in sd:
        w["num_buckets"], w["encoder_attention_heads"] = _shape(sd, table, source)
    elif gate in sd:
        w["encoder_attention_heads"] = _shape(sd, gate, source)[1]

    channels, feat_dim, _ = _shape(sd, "layer1.conv.weight", source)
    res2 = _indices(sd, r"layer2\.Res2Conv1dReluBn\.convs\.(\d+)\.weight")
    ecapa = EcapaConfig(
        feat_dim=feat_dim,
        channels=channels,
        emb_dim=_shape(sd, "linear.weight", source)[0],
        scale=len(res2) + 1,
        se_bottleneck_dim=_shape(sd, "layer2.SE_Connect.linear1.weight", source)[0],
        attention_channels=_shape(sd, "pooling.linear1.weight", source)[0],
        mfa_channels=_shape(sd, "conv.weight", source)[0],
    )
    try:
        config = SpeakerEncoderConfig(WavLMConfig.from_dict(w), ecapa)
    except ValueError as exc:
        raise CheckpointError(f"{source}: inconsistent speaker-encoder sizes ({exc}).") from exc
    mixed = _shape(sd, "feature_weight", source)
    if mixed != (config.wavlm.num_hidden_states,):
        raise CheckpointError(
            f"{source}: feature_weight has shape {mixed}, expected ({config.wavlm.num_hidden_states},) "
            f"for {config.wavlm.encoder_layers} WavLM layers."
        )
    return config
