"""WhisperX-VAE: the 24 kHz ↔ 25 Hz × 32 speech autoencoder of Talker-T2AV.

Published definition: the reference repository's ``whisperx_vae.py`` (a DAC-style
convolutional codec whose encoder output is summed with a Whisper large-v3 encoder
branch, around a 1×1-convolution VAE bottleneck), weights in ``whisperx-vae/model.ckpt``
of the HF repo ``HKUSTAudio/Talker-T2AV``; MODEL.md §2 and §6. Written from that
description; parameter names reproduce the published keys:

  ``CodecEnc.block.*``   acoustic encoder (weight-norm convs, Snake activations)
  ``semantic_model.encoder.*``  Whisper audio encoder (openai-whisper names)
  ``vae.in_proj`` / ``vae.out_proj``  bottleneck (k1 convs; the mean half is the latent)
  ``CodecDec.model.*``   decoder (transposed weight-norm convs)

Legend: B batch, T waveform samples, L latent frames (25 Hz), S Whisper positions
(50 Hz, S = 2·L after cropping), M mel bins, F mel frames (3000 = 30 s), C channels,
Z latent width (32), H acoustic width (= Whisper width).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from talker_core.checkpoint import CheckpointError, KeyMap
from talker_core.models.audio_frontend import (
    WHISPER_SAMPLE_RATE,
    WHISPER_SECONDS,
    resample,
    to_mono,
    whisper_log_mel,
)
from talker_core.types import FPS, SAMPLE_RATE

__all__ = [
    "CodecEncoderConfig",
    "CodecDecoderConfig",
    "WhisperEncoderConfig",
    "WhisperXVAEConfig",
    "LATENT_RATE",
    "MAX_SECONDS",
    "WhisperXVAE",
    "WNConv1d",
    "WNConvTranspose1d",
    "Snake1d",
    "WhisperAudioEncoder",
    "WHISPERX_VAE_IGNORED_KEYS",
    "WHISPERX_VAE_KEYS",
    "state_dict_from_lightning",
]

log = logging.getLogger(__name__)

LATENT_RATE = FPS  # latent frames per second; the Whisper branch (50 Hz) is pair-averaged to it
MAX_SECONDS = WHISPER_SECONDS  # one Whisper window


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def _int_tuple(values: Sequence[Any], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a list of integers, got {values!r}") from exc
    if not out or any(v <= 0 for v in out):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {list(out)}")
    return out


@dataclass
class CodecEncoderConfig:
    """``model.codec_encoder`` of the checkpoint's cfg."""

    in_dim: int = 64  # width of the first conv; doubled by every stride block (cfg value wins)
    ratios: tuple[int, ...] = (4, 5, 6, 8)  # strides, product = hop (960 at 24 kHz → 25 Hz)
    hidden_dim: int = 1280  # acoustic feature width, equal to the Whisper width it is summed with

    def __post_init__(self):
        self.ratios = _int_tuple(self.ratios, "codec_encoder.ratios")
        if self.in_dim <= 0 or self.hidden_dim <= 0:
            raise ValueError(
                f"codec_encoder widths must be positive, got in_dim={self.in_dim}, hidden_dim={self.hidden_dim}"
            )


@dataclass
class CodecDecoderConfig:
    """``model.codec_decoder`` of the checkpoint's cfg."""

    hidden_dim: int = 1536  # width after the first conv; halved by every upsampling block (cfg value wins)
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # upsampling strides, product = hop
    z_dim: int = 32  # latent width

    def __post_init__(self):
        self.ratios = _int_tuple(self.ratios, "codec_decoder.ratios")
        if self.hidden_dim <= 0 or self.z_dim <= 0:
            raise ValueError(
                f"codec_decoder widths must be positive, got hidden_dim={self.hidden_dim}, z_dim={self.z_dim}"
            )
        if self.hidden_dim % (2 ** len(self.ratios)):
            raise ValueError(
                f"codec_decoder.hidden_dim ({self.hidden_dim}) must be divisible by 2**len(ratios) "
                f"({2 ** len(self.ratios)}): every upsampling block halves the width"
            )


@dataclass
class WhisperEncoderConfig:
    """Whisper audio encoder sizes (openai-whisper ``ModelDimensions`` names); large-v3 by default."""

    n_mels: int = 128
    n_audio_ctx: int = 1500  # positions after the stride-2 conv: 3000 mel frames = 30 s
    n_audio_state: int = 1280
    n_audio_head: int = 20
    n_audio_layer: int = 32

    def __post_init__(self):
        for name in ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"whisper.{name} must be positive, got {getattr(self, name)}")
        if self.n_audio_state % self.n_audio_head:
            raise ValueError(
                f"whisper.n_audio_state ({self.n_audio_state}) must be divisible by n_audio_head ({self.n_audio_head})"
            )
        if self.n_audio_state % 2:
            raise ValueError(f"whisper.n_audio_state must be even (sinusoidal positions), got {self.n_audio_state}")


@dataclass
class WhisperXVAEConfig:
    """Sizes of the WhisperX-VAE. Release values are defaults except where marked "cfg value wins":
    those are not stated in the reference code, so the real loader must build the config from the
    checkpoint's own ``hyper_parameters.cfg`` with :meth:`from_lightning_cfg`."""

    codec_encoder: CodecEncoderConfig = field(default_factory=CodecEncoderConfig)
    codec_decoder: CodecDecoderConfig = field(default_factory=CodecDecoderConfig)
    sample_rate: int = SAMPLE_RATE  # waveform rate of the codec (cfg ``dataset.sr``)
    whisper: WhisperEncoderConfig = field(default_factory=WhisperEncoderConfig)

    def __post_init__(self):
        if isinstance(self.codec_encoder, Mapping):
            self.codec_encoder = CodecEncoderConfig(**self.codec_encoder)
        if isinstance(self.codec_decoder, Mapping):
            self.codec_decoder = CodecDecoderConfig(**self.codec_decoder)
        if isinstance(self.whisper, Mapping):
            self.whisper = WhisperEncoderConfig(**self.whisper)
        enc, dec, wh = self.codec_encoder, self.codec_decoder, self.whisper
        hop = math.prod(enc.ratios)
        if math.prod(dec.ratios) != hop:
            raise ValueError(
                f"codec_decoder.ratios {list(dec.ratios)} (product {math.prod(dec.ratios)}) must undo "
                f"codec_encoder.ratios {list(enc.ratios)} (product {hop})"
            )
        if self.sample_rate != hop * LATENT_RATE:
            raise ValueError(
                f"sample_rate {self.sample_rate} / hop {hop} must be {LATENT_RATE} Hz: the Whisper branch is "
                f"averaged to {LATENT_RATE} Hz and added frame by frame"
            )
        if enc.hidden_dim != wh.n_audio_state:
            raise ValueError(
                f"codec_encoder.hidden_dim ({enc.hidden_dim}) must equal whisper.n_audio_state ({wh.n_audio_state}): "
                "the Whisper features are added to the acoustic features"
            )

    @property
    def hop(self) -> int:
        """Waveform samples per latent frame."""
        return math.prod(self.codec_encoder.ratios)

    @classmethod
    def tiny(cls) -> WhisperXVAEConfig:
        """Test-sized model (same layout and rates as the release)."""
        return cls(
            codec_encoder=CodecEncoderConfig(in_dim=4, ratios=(4, 5, 6, 8), hidden_dim=64),
            codec_decoder=CodecDecoderConfig(hidden_dim=64, ratios=(8, 6, 5, 4), z_dim=32),
            sample_rate=SAMPLE_RATE,
            whisper=WhisperEncoderConfig(
                n_mels=128, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2
            ),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WhisperXVAEConfig:
        """Inverse of :meth:`to_dict` (the layout of the parity fixtures' ``config``)."""
        known = {"codec_encoder", "codec_decoder", "sample_rate", "whisper"}
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown WhisperX-VAE config field(s): {sorted(extra)} (known: {sorted(known)})")
        kwargs: dict[str, Any] = {}
        if "codec_encoder" in data:
            kwargs["codec_encoder"] = CodecEncoderConfig(**dict(data["codec_encoder"]))
        if "codec_decoder" in data:
            kwargs["codec_decoder"] = CodecDecoderConfig(**dict(data["codec_decoder"]))
        if "whisper" in data:
            kwargs["whisper"] = WhisperEncoderConfig(**dict(data["whisper"]))
        if "sample_rate" in data:
            kwargs["sample_rate"] = int(data["sample_rate"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["codec_encoder"]["ratios"] = list(self.codec_encoder.ratios)
        out["codec_decoder"]["ratios"] = list(self.codec_decoder.ratios)
        return out

    @classmethod
    def from_lightning_cfg(
        cls, cfg: Mapping[str, Any], whisper: WhisperEncoderConfig | None = None
    ) -> WhisperXVAEConfig:
        """Config from the checkpoint's ``hyper_parameters.cfg`` given as a plain nested mapping.

        Reads ``model.codec_encoder.{in_dim, ratios, hidden_dim}``,
        ``model.codec_decoder.{hidden_dim, ratios, z_dim}`` and ``dataset.sr`` (other fields of
        the training config are ignored). The cfg does not describe the Whisper branch: the
        reference hard-codes large-v3, which is the default of ``whisper``.
        """

        def get(path: str):
            node: Any = cfg
            for part in path.split("."):
                try:
                    node = node[part]
                except (KeyError, TypeError, IndexError):
                    raise ValueError(
                        f"the WhisperX-VAE checkpoint config has no `{path}`; is this the published "
                        "WhisperX-VAE checkpoint?"
                    ) from None
            return node

        try:
            sr = get("dataset.sr")
        except ValueError:
            # The X-Codec-2.0 training configs this codec descends from keep the rate under preprocess.
            try:
                sr = get("preprocess.audio.sr")
            except ValueError:
                raise ValueError(
                    "the WhisperX-VAE checkpoint config has no `dataset.sr`; is this the published WhisperX-VAE "
                    "checkpoint?"
                ) from None
        return cls(
            codec_encoder=CodecEncoderConfig(
                in_dim=int(get("model.codec_encoder.in_dim")),
                ratios=tuple(get("model.codec_encoder.ratios")),
                hidden_dim=int(get("model.codec_encoder.hidden_dim")),
            ),
            codec_decoder=CodecDecoderConfig(
                hidden_dim=int(get("model.codec_decoder.hidden_dim")),
                ratios=tuple(get("model.codec_decoder.ratios")),
                z_dim=int(get("model.codec_decoder.z_dim")),
            ),
            sample_rate=int(sr),
            whisper=whisper or WhisperEncoderConfig(),
        )


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


_weight_norm_op = getattr(torch, "_weight_norm", None)


class _WeightNormConv(nn.Module):
    """A 1-D (transposed) convolution whose kernel is ``g · v / ‖v‖``, the norm taken over
    every dim but 0 (``torch.nn.utils.weight_norm(dim=0)`` semantics, keys ``weight_g``,
    ``weight_v``, ``bias``). :meth:`fold` replaces ``g``/``v`` by a plain ``weight``."""

    transposed = False

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        output_padding: int = 0,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_ch, out_ch
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.output_padding = dilation, output_padding
        shape = (in_ch, out_ch, kernel_size) if self.transposed else (out_ch, in_ch, kernel_size)
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(self._norm(v).detach().clone())
        fan_in = (out_ch if self.transposed else in_ch) * kernel_size
        bound = 1.0 / math.sqrt(fan_in)
        self.bias = nn.Parameter(torch.empty(out_ch).uniform_(-bound, bound))
        self.folded = False

    @staticmethod
    def _norm(v: torch.Tensor) -> torch.Tensor:
        # (C0, 1, 1): L2 norm of each slice along dim 0, in float32.
        return v.float().flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))

    def kernel(self) -> torch.Tensor:
        """The effective kernel, in the parameters' dtype."""
        if self.folded:
            return self.weight
        v, g = self.weight_v, self.weight_g
        # torch._weight_norm is the op behind torch.nn.utils.weight_norm; using it keeps the
        # kernel bit-identical to the reference (its fused CPU/CUDA reduction rounds differently
        # from a plain norm, and the decoder amplifies last-bit differences).
        v32, g32 = v.float(), g.float()
        # without the op: the same function, possibly different last bits
        w = _weight_norm_op(v32, g32, 0) if _weight_norm_op is not None else v32 * (g32 / self._norm(v32))
        return w.to(v.dtype)

    @torch.no_grad()
    def fold(self) -> None:
        """Bake ``g · v / ‖v‖`` into a plain ``weight`` parameter (faster; changes the state-dict keys)."""
        if self.folded:
            return
        w = self.kernel().detach().clone()
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(w, requires_grad=False)
        self.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.kernel()
        if self.transposed:
            return F.conv_transpose1d(x, w, self.bias, self.stride, self.padding, self.output_padding, 1, self.dilation)
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, folded={self.folded}"
        )


class WNConv1d(_WeightNormConv):
    """Weight-norm ``Conv1d``: (B, C_in, T) → (B, C_out, T')."""


class WNConvTranspose1d(_WeightNormConv):
    """Weight-norm ``ConvTranspose1d`` (kernel stored (C_in, C_out, k)): (B, C_in, T) → (B, C_out, T')."""

    transposed = True


class Snake1d(nn.Module):
    """Snake activation ``x + sin²(αx) / (α + 1e-9)`` with a learned α per channel, shape (1, C, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        if torch.is_grad_enabled() and (x.requires_grad or a.requires_grad):
            return x + (a + 1e-9).reciprocal() * torch.sin(a * x).pow(2)
        # inference: the same operations in one temporary (products and sums commute exactly)
        return (a * x).sin_().pow_(2).mul_((a + 1e-9).reciprocal()).add_(x)


class ResidualUnit(nn.Module):
    """Snake → dilated k7 conv → Snake → k1 conv, plus the (centre-cropped) input: (B, C, T) → (B, C, T)."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units at width dim/2, Snake, strided conv to ``dim``: (B, dim/2, T) → (B, dim, T/stride)."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            ResidualUnit(half, 1),
            ResidualUnit(half, 3),
            ResidualUnit(half, 9),
            Snake1d(half),
            WNConv1d(half, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class CodecEncoder(nn.Module):
    """Waveform → acoustic features: (B, 1, T) → (B, H, T/hop)."""

    def __init__(self, cfg: CodecEncoderConfig):
        super().__init__()
        width = cfg.in_dim
        layers: list[nn.Module] = [WNConv1d(1, width, kernel_size=7, padding=3)]
        for stride in cfg.ratios:
            width *= 2
            layers.append(EncoderBlock(width, stride))
        layers += [Snake1d(width), WNConv1d(width, cfg.hidden_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, transposed conv (upsample by ``stride``), three residual units: (B, C_in, T) → (B, C_out, T·stride)."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            # output_padding keeps the length exactly T·stride for odd strides
            WNConvTranspose1d(
                in_dim,
                out_dim,
                kernel_size=2 * stride,
                stride=stride,
                padding=math.ceil(stride / 2),
                output_padding=stride % 2,
            ),
            ResidualUnit(out_dim, 1),
            ResidualUnit(out_dim, 3),
            ResidualUnit(out_dim, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class CodecDecoder(nn.Module):
    """Acoustic features → waveform in [−1, 1]: (B, H, L) → (B, 1, L·hop)."""

    def __init__(self, in_dim: int, cfg: CodecDecoderConfig):
        super().__init__()
        width = cfg.hidden_dim
        layers: list[nn.Module] = [WNConv1d(in_dim, width, kernel_size=7, padding=3)]
        for stride in cfg.ratios:
            layers.append(DecoderBlock(width, width // 2, stride))
            width //= 2
        layers += [Snake1d(width), WNConv1d(width, 1, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VAEBottleneck(nn.Module):
    """``in_proj`` (k1, H → 2Z: mean and scale) and ``out_proj`` (k1, Z → H)."""

    def __init__(self, hidden: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.in_proj = WNConv1d(hidden, 2 * z_dim, kernel_size=1)
        self.out_proj = WNConv1d(z_dim, hidden, kernel_size=1)


# ---------------------------------------------------------------------------
# Whisper audio encoder (openai-whisper parameter names)
# ---------------------------------------------------------------------------


def _sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """Whisper's fixed positions: (length, channels) = [sin | cos] of pos · exp(−ln(max)·i/(channels/2 − 1))."""
    half = channels // 2
    inv = torch.exp(-math.log(max_timescale) / (half - 1) * torch.arange(half, dtype=torch.float32))
    arg = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # Whisper normalises in float32 whatever the module dtype.
    w = ln.weight.float() if ln.weight is not None else None
    b = ln.bias.float() if ln.bias is not None else None
    return F.layer_norm(x.float(), ln.normalized_shape, w, b, ln.eps).to(x.dtype)


class WhisperAttention(nn.Module):
    """Bidirectional multi-head self-attention; ``key`` has no bias: (B, S, D) → (B, S, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (
            p(x).view(b, s, self.heads, d // self.heads).transpose(1, 2) for p in (self.query, self.key, self.value)
        )
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class WhisperBlock(nn.Module):
    """Pre-norm transformer layer: attention then GELU MLP (4·D): (B, S, D) → (B, S, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = WhisperAttention(dim, heads)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(_layer_norm(self.attn_ln, x))
        return x + self.mlp(_layer_norm(self.mlp_ln, x))


class WhisperAudioEncoder(nn.Module):
    """Whisper's audio encoder: (B, M, 2·S_max) log-mel → (B, S_max, D).

    Two GELU convs (the second with stride 2), fixed sinusoidal positions (computed, not
    loaded), pre-norm blocks, final ``ln_post``.
    """

    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        d = cfg.n_audio_state
        self.n_ctx = cfg.n_audio_ctx
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.positional_embedding: torch.Tensor
        self.register_buffer("positional_embedding", _sinusoids(cfg.n_audio_ctx, d), persistent=False)
        self.blocks = nn.ModuleList([WhisperBlock(d, cfg.n_audio_head) for _ in range(cfg.n_audio_layer)])
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or (mel.shape[-1] + 1) // 2 != self.n_ctx:
            raise ValueError(
                f"the Whisper encoder needs (batch, mels, {2 * self.n_ctx}) log-mel frames (30 s padded), "
                f"got {tuple(mel.shape)}"
            )
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = (x + self.positional_embedding).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return _layer_norm(self.ln_post, x)


class SemanticModel(nn.Module):
    """Holder that gives the Whisper encoder its published prefix ``semantic_model.encoder``
    (the text decoder of the published Whisper is not built)."""

    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.encoder = WhisperAudioEncoder(cfg)


# ---------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------


class WhisperXVAE(nn.Module):
    """WhisperX-VAE: 24 kHz waveform (+ its Whisper log-mel) ↔ 25 Hz latents of width Z.

    Load weights with ``checkpoint.load_strict(model, sd, WHISPERX_VAE_KEYS, path, "WhisperX-VAE")``;
    call :meth:`fold_weight_norm` afterwards for faster inference.
    """

    def __init__(self, cfg: WhisperXVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or WhisperXVAEConfig()
        self.CodecEnc = CodecEncoder(cfg.codec_encoder)
        self.CodecDec = CodecDecoder(cfg.codec_encoder.hidden_dim, cfg.codec_decoder)
        self.vae = VAEBottleneck(cfg.codec_encoder.hidden_dim, cfg.codec_decoder.z_dim)
        self.semantic_model = SemanticModel(cfg.whisper)

    # -- helpers -----------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def hop(self) -> int:
        return self.cfg.hop

    def _param(self) -> torch.Tensor:
        return self.vae.in_proj.bias

    @torch.no_grad()
    def fold_weight_norm(self) -> WhisperXVAE:
        """Replace every ``weight_g``/``weight_v`` pair by the plain kernel (same outputs, less work).

        Do it after loading: the folded model's state dict no longer has the published keys.
        """
        for m in self.modules():
            if isinstance(m, _WeightNormConv):
                m.fold()
        return self

    @property
    def weight_norm_folded(self) -> bool:
        return self.vae.in_proj.folded

    def decoder_context_frames(self) -> int:
        """Latent frames on each side that one output sample of :meth:`decode` depends on (rounded up).

        The codec decoder is convolutional only, so an output sample sees a bounded window of
        latents. Walking its layers at their sample rates (r output samples per latent frame):
        a convolution of kernel k and dilation d reaches d·(k−1)/2 samples each way, i.e.
        d·(k−1)/(2r) frames; an upsampling transposed convolution of kernel k and stride s
        reaches at most ⌈k/s⌉ of its input samples each way. The sum, rounded up, plus one
        frame for the position of a sample inside its frame, is returned: decoding a span with
        that many extra frames on each side gives exactly the samples a one-piece decode gives
        there (:class:`talker_core.pipeline.render.SpeechDecoder` relies on it).
        """
        reach, rate = 0.0, 1
        for m in self.CodecDec.modules():
            if not isinstance(m, _WeightNormConv):
                continue
            if m.transposed:
                reach += math.ceil(m.kernel_size / m.stride) / rate
                rate *= m.stride
            else:
                reach += m.dilation * (m.kernel_size - 1) / 2 / rate
        return math.ceil(reach) + 1

    # -- API ---------------------------------------------------------------

    def semantic_features(self, mel: torch.Tensor) -> torch.Tensor:
        """Whisper encoder output: (B, M, F) log-mel → (B, F/2, D) at 50 Hz."""
        p = self._param()
        return self.semantic_model.encoder(mel.to(device=p.device, dtype=p.dtype))

    @torch.no_grad()
    def encode(self, wav24k: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Posterior-mean latents: wav24k (B, 1, T) or (B, T), mel (B, M, F) or (B, 1, M, F) → (B, L, Z).

        ``mel`` is the Whisper log-mel of the *same* clip at 16 kHz, padded/trimmed to 30 s
        (:func:`audio_frontend.whisper_log_mel`). L is the length of the acoustic encoder
        output (T / hop for T a multiple of the hop); the Whisper output is cropped to 2·L
        positions and averaged in pairs, so L ≤ 750 (30 s).
        """
        if wav24k.ndim == 2:
            wav24k = wav24k.unsqueeze(1)
        if mel.ndim == 4 and mel.shape[1] == 1:
            mel = mel[:, 0]
        if wav24k.ndim != 3 or wav24k.shape[1] != 1:
            raise ValueError(f"wav24k must have shape (batch, 1, samples), got {tuple(wav24k.shape)}")
        wh = self.cfg.whisper
        if mel.ndim != 3 or mel.shape[1] != wh.n_mels or mel.shape[2] != 2 * wh.n_audio_ctx:
            raise ValueError(
                f"mel must have shape (batch, {wh.n_mels}, {2 * wh.n_audio_ctx}), got {tuple(mel.shape)}; "
                "compute it with audio_frontend.whisper_log_mel"
            )
        if mel.shape[0] != wav24k.shape[0]:
            raise ValueError(f"wav24k and mel batch sizes differ: {wav24k.shape[0]} vs {mel.shape[0]}")
        if wav24k.shape[-1] < self.hop:
            raise ValueError(
                f"the waveform is shorter than one latent frame ({self.hop} samples at {self.sample_rate} Hz)"
            )
        p = self._param()
        acoustic = self.CodecEnc(wav24k.to(device=p.device, dtype=p.dtype))  # (B, H, L)
        frames = acoustic.shape[-1]
        if 2 * frames > wh.n_audio_ctx:
            raise ValueError(
                f"the waveform gives {frames} latent frames, more than the {wh.n_audio_ctx // 2} one Whisper window covers "
                f"({MAX_SECONDS} s); encode at most {MAX_SECONDS} s at a time"
            )
        semantic = self.semantic_features(mel)[:, : 2 * frames]  # (B, 2L, H)
        semantic = semantic.unflatten(1, (frames, 2)).mean(dim=2)  # (B, L, H)
        stats = self.vae.in_proj(acoustic + semantic.transpose(1, 2))  # (B, 2Z, L)
        mean = stats[:, : self.vae.z_dim]
        return mean.transpose(1, 2).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → waveform: (B, L, Z) → (B, 1, L·hop) at the codec rate, in [−1, 1]."""
        z_dim = self.vae.z_dim
        if latents.ndim == 2:
            latents = latents.unsqueeze(0)
        if latents.ndim != 3 or latents.shape[-1] != z_dim:
            raise ValueError(f"latents must have shape (batch, frames, {z_dim}), got {tuple(latents.shape)}")
        if latents.shape[1] == 0:
            raise ValueError("latents are empty (0 frames)")
        p = self._param()
        z = latents.to(device=p.device, dtype=p.dtype).transpose(1, 2)
        return self.CodecDec(self.vae.out_proj(z))

    @torch.no_grad()
    def encode_waveform(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """Reference-clip encoding as ``infer.py`` does it: (C, T) or (T,) at ``sr`` → (1, L, Z).

        Mono mix; resample to 16 kHz and to the codec rate; keep at most 30 s;
        L = int(seconds at 16 kHz · 25) frames (≤ 750); the codec-rate signal is cut to L·hop
        samples; the log-mel is taken from the 16 kHz signal.
        """
        mono = to_mono(wav)
        p = self._param()
        mono = mono.to(device=p.device, dtype=torch.float32)
        wav16 = resample(mono, sr, WHISPER_SAMPLE_RATE)[:, : WHISPER_SAMPLE_RATE * MAX_SECONDS]
        wav24 = resample(mono, sr, self.sample_rate)[:, : self.sample_rate * MAX_SECONDS]
        frames = min(int(wav16.shape[-1] / float(WHISPER_SAMPLE_RATE) * LATENT_RATE), LATENT_RATE * MAX_SECONDS)
        if frames < 1 or wav24.shape[-1] < self.hop:
            raise ValueError(
                f"the clip is too short to encode ({wav.shape[-1]} samples at {sr} Hz); give at least "
                f"{1000 // LATENT_RATE} ms of audio"
            )
        wav24 = wav24[:, : frames * self.hop]
        mel = whisper_log_mel(wav16, n_mels=self.cfg.whisper.n_mels)
        return self.encode(wav24.unsqueeze(0).to(p.dtype), mel.unsqueeze(0).to(p.dtype))


# ---------------------------------------------------------------------------
# Checkpoint layout
# ---------------------------------------------------------------------------

# Entries the published Lightning checkpoint (``whisperx-vae/model.ckpt``) may carry
# besides the modules above. The training module (X-Codec-2.0's CodecLightningModule
# lineage, per the reference's docstring) also holds GAN discriminators, loss modules,
# a speaker-verification validator, auxiliary semantic encoders/decoders and
# projections; the published Whisper also has its text decoder and a stored copy of
# the sinusoidal positions, which this module recomputes.
WHISPERX_VAE_IGNORED_KEYS: tuple[str, ...] = (
    r"semantic_model\.encoder\.positional_embedding",  # recomputed sinusoids
    r"semantic_model\.decoder\..*",  # Whisper text decoder, unused
    r"discriminator\..*",  # multi-period discriminator (training)
    r"spec_discriminator\..*",  # multi-resolution STFT discriminator (training)
    r"criteria\..*",  # loss modules (training)
    r"model_spk\..*",  # WavLM speaker-similarity validator (training)
    r"SemanticDecoder_module\..*",  # auxiliary semantic reconstruction (training)
    r"SemanticEncoder_module\..*",
    r"fc_prior\..*",
    r"fc_post_a\..*",
    r"fc_post_s\..*",
)

WHISPERX_VAE_KEYS = KeyMap(
    rename=(),  # module names reproduce the published ones
    ignore=WHISPERX_VAE_IGNORED_KEYS,
    derived=(),  # the positional embedding is a non-persistent buffer
)

# Prefixes a wrapper may have put in front of the published module names.
_WRAPPER_PREFIXES = ("", "model.", "module.", "_orig_mod.")


def state_dict_from_lightning(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a loaded Lightning checkpoint, under the published names.

    The reference loads ``ckpt["state_dict"]`` directly into its WhisperX-VAE, so the
    weights are stored unprefixed (``CodecEnc.…``, ``CodecDec.…``, ``vae.…``,
    ``semantic_model.…``) next to the training-only entries that
    ``WHISPERX_VAE_KEYS`` ignores. A ``model.``/``module.``/``_orig_mod.`` wrapper
    prefix, if present, is removed. Non-tensor entries are dropped.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"a WhisperX-VAE checkpoint must be a dict, got {type(ckpt).__name__}")
    sd = ckpt.get("state_dict", None)
    if sd is None:
        if any(isinstance(v, torch.Tensor) for v in ckpt.values()):
            sd = ckpt  # already a bare state dict
        else:
            raise CheckpointError(
                f"the WhisperX-VAE checkpoint has no `state_dict` (top-level keys: {sorted(map(str, ckpt))[:12]}); "
                "use the published WhisperX-VAE checkpoint"
            )
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if any(k.startswith(prefix + "CodecEnc.") for k in tensors):
            if prefix:
                log.debug("stripping wrapper prefix %r from the WhisperX-VAE state dict", prefix)
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    raise CheckpointError(
        "the WhisperX-VAE checkpoint's state_dict has no `CodecEnc.*` weights; it is not a WhisperX-VAE checkpoint"
    )
