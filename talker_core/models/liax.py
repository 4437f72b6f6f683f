"""LIA-X generator: identity encoder, motion code, orthonormal directions, flow renderer.

Implements the face renderer used by Talker-T2AV (arXiv 2604.23586, §"video
representation"; spec/MODEL.md §7): LIA-X (``wyhsirius/LIA-X``, vendored by the
authors' repository as ``lia_x/networks/{generator,encoder,decoder,ops}.py``).
Module attribute names reproduce the published parameter names of ``lia-x.pt``
(keys ``enc.*`` and ``dec.*``), so :data:`LIAX_KEYS` renames nothing.

Pipeline of one frame::

    z, feats = enc.enc_2r(image)          # identity code and 7-level feature pyramid
    alpha    = enc.enc_r2t(z)             # 40-d motion code of an image
    frame    = dec(z + direction(alpha_t), feats)

``direction`` orthonormalises its (S, 40) weight by QR and maps α to α·Qᵀ. The
decoder starts from a learned 4×4 constant, runs StyleGAN2 modulated
convolutions up to 512×512 and, at each of the 7 levels, predicts a flow field
and a mask that warp the encoder feature of that level into the frame.

Fast rendering (``LiaXGenerator.fast_render``, on by default; ``render_settings``
switches it for a block): modulated convolutions scale activations instead of
building per-frame weights (one batched standard convolution per layer), the
activations run in place on fresh convolution outputs, and the decoder runs
channels-last (the fast layout of cuDNN and oneDNN; about twice as fast on a CPU). The function is the same; the
numbers differ from the reference-style path by float rounding only.

Legend: B frames (motion rows), S style width (= style_dim·scale), M motion
dimension (40), C channels, H/W height/width (512 at the output).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from talker_core.checkpoint import CheckpointError, KeyMap
from talker_core.models._tensor_key import tensor_key
from talker_core.models.liax_ops import (
    bias_leaky_relu,
    identity_grid,
    modulated_conv2d,
    upfirdn2d,
    warp_features,
)

__all__ = ["LiaXConfig", "LiaXGenerator", "LIAX_KEYS", "state_dict_from_file"]

log = logging.getLogger(__name__)

# The binomial filter every resampling step of the release uses. The filters are
# stored in lia-x.pt as buffers (`*.kernel`) and loaded from the file.
_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)

# Published names only; the kernels are real entries of the file (the reference
# loads lia-x.pt with strict=True, buffers included), so nothing is derived.
LIAX_KEYS = KeyMap()

# Number of decoder levels (8×8 … 512×512) and of residual blocks per level:
# fixed by the published layout.
_LEVELS = 7
_BLOCKS_PER_LEVEL = 4


# --------------------------------------------------------------------------- config


@dataclass
class LiaXConfig:
    """Sizes of a LIA-X generator (names follow the reference ``Generator`` arguments).

    style_dim:  base style width; the identity code and the directions have
                ``style_dim * scale`` entries (1024 in the release).
    motion_dim: motion code size M (40 in the release).
    scale:      channel multiplier of the encoder (64…512 × scale) and decoder
                (512…64 × scale). The release uses 2; the reference code takes
                integers. Fractions 1/2^k (down to 1/8) are accepted too, so that
                debug models stay cheap: every width 64·scale … 512·scale and the
                style width must be whole numbers.
    resolution: image side. The layout fixes it at 512 (seven stride-2 stages
                down to a 4×4 map, then a 4×4 valid convolution).
    """

    style_dim: int = 512
    motion_dim: int = 40
    scale: float = 2
    resolution: int = 512

    def __post_init__(self):
        for name in ("style_dim", "motion_dim", "resolution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LiaXConfig.{name} must be a positive integer, got {value!r}")
        scale = self.scale
        fraction = scale in (0.5, 0.25, 0.125)
        whole = isinstance(scale, (int, float)) and float(scale).is_integer() and scale >= 1
        if (
            isinstance(scale, bool)
            or not (fraction or whole)
            or (self.style_dim * scale) != int(self.style_dim * scale)
        ):
            raise ValueError(
                f"LiaXConfig.scale must be a positive integer or a fraction 1/2, 1/4, 1/8 that keeps every width "
                f"whole, got {scale!r}"
            )
        if float(scale).is_integer():
            self.scale = int(scale)
        if self.resolution != 512:
            raise ValueError(
                f"LiaXConfig.resolution must be 512 (the LIA-X layout encodes and renders 512×512 images), "
                f"got {self.resolution}"
            )
        if self.motion_dim > self.style_width:
            raise ValueError(
                f"LiaXConfig.motion_dim ({self.motion_dim}) cannot exceed the style width "
                f"{self.style_width}: the directions are orthonormal columns of a {self.style_width}-d space"
            )

    @property
    def style_width(self) -> int:
        """S, the width of the identity code and of the motion directions."""
        return int(self.style_dim * self.scale)

    def width(self, base: int) -> int:
        """A layer width of the reference layout (``base`` × scale) at these sizes."""
        return int(base * self.scale)

    @property
    def encoder_channels(self) -> tuple[int, int, int, int]:
        return (self.width(64), self.width(128), self.width(256), self.width(512))

    @classmethod
    def tiny(cls) -> LiaXConfig:
        """Debug layout: scale 1/8 (widths 8…64, style width 64). Same keys as the release,
        cheap enough to render test clips on a CPU; the resolution stays 512."""
        return cls(style_dim=512, motion_dim=40, scale=0.125)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiaXConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LiaXConfig field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_state_dict_shapes(cls, sd: Mapping[str, torch.Tensor], source: str = "LIA-X state dict") -> LiaXConfig:
        """Infer the sizes from a published state dict (keys ``enc.*``/``dec.*``).

        scale from the first encoder convolution (64·scale filters), style width
        and motion dimension from ``dec.direction.weight`` (S, M).
        """
        first, direction = "enc.enc_2r.block1.0.weight", "dec.direction.weight"
        absent = [k for k in (first, direction) if k not in sd]
        if absent:
            raise CheckpointError(
                f"{source} is not a LIA-X generator: key(s) {', '.join(absent)} not found. "
                "Use the published LIA-X generator file."
            )
        width0 = int(sd[first].shape[0])
        scale = width0 / 64
        if sd[direction].ndim != 2:
            raise CheckpointError(f"{source}: {direction} must be 2-d, got shape {tuple(sd[direction].shape)}")
        style_width, motion_dim = (int(s) for s in sd[direction].shape)
        style_dim = style_width / scale if scale else 0
        if not float(style_dim).is_integer():
            raise CheckpointError(f"{source}: style width {style_width} does not fit scale {scale:g}")
        try:
            return cls(style_dim=int(style_dim), motion_dim=motion_dim, scale=scale)
        except ValueError as exc:
            raise CheckpointError(f"{source}: inconsistent LIA-X sizes ({exc})") from exc


# --------------------------------------------------------------------------- layers


def _binomial_kernel(gain: float) -> torch.Tensor:
    taps = torch.tensor(_BLUR_TAPS)
    k = torch.outer(taps, taps)
    return k / k.sum() * gain


class FirResample(nn.Module):
    """FIR filtering with optional ×2 zero-insertion upsampling; ``kernel`` is a stored buffer.

    (N, C, H, W) → upfirdn2d(x, kernel, up, 1, pad). Downsampling by 2 is done by
    the strided convolution that follows it, as in the reference.
    """

    def __init__(self, pad: tuple[int, int], up: int = 1, gain: float = 1.0):
        super().__init__()
        self.up = up
        self.pad = (pad[0], pad[1], pad[0], pad[1])
        self.kernel: torch.Tensor
        self.register_buffer("kernel", _binomial_kernel(gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.up, pad=self.pad)


def _upsampler() -> FirResample:
    """×2 upsampling with the 4-tap filter (gain 4 keeps the mean); (N,C,H,W) → (N,C,2H,2W)."""
    return FirResample(pad=(2, 1), up=2, gain=4.0)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate: weight·1/sqrt(fan_in) at run time."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1.0 / math.sqrt(cin * k * k)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (lr multiplier 1): (…, Din) → (…, Dout)."""

    def __init__(self, din: int, dout: int, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din))
        self.bias = nn.Parameter(torch.full((dout,), float(bias_init)))
        self.gain = 1.0 / math.sqrt(din)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.gain, self.bias)


class BiasLeakyReLU(nn.Module):
    """√2 · leaky_relu(x + bias, 0.2) per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.fast = False  # set by LiaXGenerator: x is always a fresh convolution output here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = self.fast and not (x.requires_grad and torch.is_grad_enabled())
        return bias_leaky_relu(x, self.bias, inplace=inplace)


def _conv_block(
    cin: int, cout: int, k: int, *, down: bool = False, up: bool = False, act: bool = True
) -> nn.Sequential:
    """[resample] → equalised conv (no bias) → [bias + leaky ReLU], indexed like the published keys.

    down: blur then stride-2 valid convolution (H → H/2); up: ×2 FIR upsampling
    then a same-padded convolution (H → 2H); otherwise same-padded (H → H).
    """
    layers: list[nn.Module] = []
    if down:
        extra = 2 + (k - 1)  # filter taps beyond the stride, plus the conv support
        layers.append(FirResample(pad=((extra + 1) // 2, extra // 2)))
        layers.append(EqualConv2d(cin, cout, k, stride=2, padding=0))
    else:
        if up:
            layers.append(_upsampler())
        layers.append(EqualConv2d(cin, cout, k, padding=k // 2))
    if act:
        layers.append(BiasLeakyReLU(cout))
    return nn.Sequential(*layers)


class DownResBlock(nn.Module):
    """Encoder residual block: (B, Cin, H, W) → (B, Cout, H/2, W/2), (main + skip)/√2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv_block(cin, cout, 3)
        self.conv2 = _conv_block(cout, cout, 3, down=True)
        self.skip = _conv_block(cin, cout, 1, down=True, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class PlainResBlock(nn.Module):
    """Decoder residual block on the warped features: two 3×3 convs, identity skip, /√2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv_block(channels, channels, 3)
        self.conv2 = _conv_block(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + x) / math.sqrt(2.0)


class ModulatedConv(nn.Module):
    """StyleGAN2 modulated convolution: style (B, S) scales the input channels per sample.

    ``up`` doubles the resolution (stride-2 transposed conv, then the stored
    blur, gain 4): (B, Cin, H, W) → (B, Cout, 2H, 2W); otherwise same size.
    """

    def __init__(self, cin: int, cout: int, k: int, style_width: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
        self.modulation = EqualLinear(style_width, cin, bias_init=1.0)
        self.gain = 1.0 / math.sqrt(cin * k * k)
        self.demodulate = demodulate
        self.up = up
        self.fast = False  # set by LiaXGenerator: modulate activations, not weights
        if up:
            # after the transposed conv (size 2H + k − 2) the blur trims back to 2H
            extra = 2 - (k - 1)
            self.blur = FirResample(pad=((extra + 1) // 2 + 1, extra // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        styles = self.modulation(style)
        weight = self.weight[0] * self.gain
        out = modulated_conv2d(
            x, weight, styles, self.demodulate, transposed_stride=2 if self.up else 1, fused=not self.fast
        )
        return self.blur(out) if self.up else out


class StyledConv(nn.Module):
    """Modulated conv + bias + leaky ReLU: (B, Cin, H, W), (B, S) → (B, Cout, H or 2H, …)."""

    def __init__(self, cin: int, cout: int, k: int, style_width: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, k, style_width, up=up)
        self.activate = BiasLeakyReLU(cout)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv(x, style))


class FlowResBlock(nn.Module):
    """conv1 → skip; GroupNorm(32) → conv2 → ·gamma; sum. (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int, style_width: int):
        super().__init__()
        # 32 groups as in the reference; narrower debug layouts (scale < 1/2) use as many as divide.
        self.norm = nn.GroupNorm(math.gcd(32, channels), channels)
        self.conv1 = StyledConv(channels, channels, 3, style_width)
        self.conv2 = StyledConv(channels, channels, 3, style_width)
        self.gamma = nn.Parameter(torch.full((1, channels, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        skip = self.conv1(x, style)
        return self.gamma * self.conv2(self.norm(skip), style) + skip


class ToRGB(nn.Module):
    """1×1 conv + bias + leaky ReLU, plus ``bias``, plus the upsampled coarser RGB (if any) → (B, 3, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.up = _upsampler()
        self.conv = _conv_block(channels, 3, 1)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, coarser: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x) + self.bias
        return out if coarser is None else out + self.up(coarser)


class ToFlow(nn.Module):
    """Predicts flow (2 ch, tanh offsets) and mask (1 ch, sigmoid) and warps one encoder level.

    h: (B, C, H, W) decoder state; feat: (1 or B, Cf, H, W) encoder feature of
    the same size; coarser: (B, 3, H/2, W/2) previous raw prediction or None.
    Returns (warped (B, Cf, H, W), blended h (B, C, H, W), raw prediction (B, 3, H, W)).
    """

    def __init__(self, channels: int, style_width: int):
        super().__init__()
        self.up = _upsampler()
        self.conv = ModulatedConv(channels, 3, 1, style_width, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, h: torch.Tensor, style: torch.Tensor, feat: torch.Tensor, coarser: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = self.conv(h, style) + self.bias
        if coarser is not None:
            raw = raw + self.up(coarser)
        size = raw.shape[-1]
        grid = torch.tanh(raw[:, 0:2]).permute(0, 2, 3, 1) + identity_grid(size, raw.device, raw.dtype)
        mask = torch.sigmoid(raw[:, 2:3])
        warped = warp_features(feat, grid) * mask
        return warped, warped + (1 - mask) * h, raw


class Direction(nn.Module):
    """Motion directions: QR-orthonormalised columns Q of ``weight`` (S, M); α (B, M) → α·Qᵀ (B, S)."""

    def __init__(self, style_width: int, motion_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(style_width, motion_dim))

    def basis(self) -> torch.Tensor:
        """Q (S, M), computed in float32 (QR has no half-precision kernels; float64 weights stay float64).

        Without gradients Q is computed once per weight version and reused (QR on a GPU
        waits for the device; rendering calls this for every chunk of frames)."""
        w = self.weight
        acc = torch.promote_types(w.dtype, torch.float32)
        grad = torch.is_grad_enabled() and w.requires_grad
        key = tensor_key(w)
        cached = self.__dict__.get("_basis")
        if not grad and cached is not None and cached[0] == key:
            return cached[1]
        q, _ = torch.linalg.qr(w.to(acc) + 1e-8)
        if not grad:
            self.__dict__["_basis"] = (key, q)
        return q

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        q = self.basis()
        return (alpha.to(q.dtype) @ q.T).to(self.weight.dtype)


class LearnedConstant(nn.Module):
    """The decoder's 4×4 starting map ``input`` (1, C, 4, 4), broadcast to the batch."""

    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


# --------------------------------------------------------------------------- encoder / decoder


class IdentityEncoder(nn.Module):
    """Image (B, 3, 512, 512) in [−1, 1] → z (B, S) and the feature pyramid.

    The pyramid is ordered coarse to fine, as the decoder consumes it:
    (B, 512s, 8, 8), (B, 512s, 16, 16), (B, 512s, 32, 32), (B, 512s, 64, 64),
    (B, 256s, 128, 128), (B, 128s, 256, 256), (B, 64s, 512, 512) for scale s.
    """

    def __init__(self, cfg: LiaXConfig):
        super().__init__()
        c0, c1, c2, c3 = cfg.encoder_channels
        self.block1 = _conv_block(3, c0, 1)
        widths = [(c0, c1), (c1, c2), (c2, c3), (c3, c3), (c3, c3), (c3, c3)]
        for i, (cin, cout) in enumerate(widths, start=2):
            self.add_module(f"block{i}", nn.Sequential(DownResBlock(cin, cout)))
        self.block_512 = DownResBlock(c3, c3)
        self.block8 = EqualConv2d(c3, cfg.style_width, 4)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.block1(image)
        pyramid = [h]
        for i in range(2, 8):
            h = getattr(self, f"block{i}")(h)
            pyramid.append(h)
        z = self.block8(self.block_512(h)).flatten(1)
        return z, pyramid[::-1]


class Encoder(nn.Module):
    """``enc``: ``enc_2r`` (identity encoder) and ``enc_r2t`` (z → motion code α)."""

    def __init__(self, cfg: LiaXConfig):
        super().__init__()
        self.enc_2r = IdentityEncoder(cfg)
        self.enc_r2t = nn.Sequential(EqualLinear(cfg.style_width, cfg.motion_dim))


def _level_names(level: int) -> tuple[str, str]:
    """(prefix of the conv modules, suffix of rgb/flow) of decoder level 0…6 (8×8 … 512×512)."""
    return ("conv_512", "_512") if level == 0 else (f"conv{level + 1}", str(level + 1))


def _no_check() -> None:
    return None


class Decoder(nn.Module):
    """``dec``: style (B, S) and the pyramid → frame (B, 3, 512, 512), unclamped (≈[−1, 1] when trained).

    Level ℓ (0…6, output 2^(ℓ+3) px) holds ``<p>_1`` (upsampling styled conv),
    ``<p>_2`` (4 flow residual blocks), ``<p>_2_up`` (ℓ ≥ 1: upsampling conv of the
    previous warped features), ``<p>_2_rgb`` (4 residual blocks on the warped
    features), ``rgb<q>`` and ``flow<q>``; see :func:`_level_names`.
    """

    def __init__(self, cfg: LiaXConfig):
        super().__init__()
        sw = cfg.style_width
        # decoder widths per level: 512s for the four coarse levels, then 256s, 128s, 64s
        widths = [cfg.width(512)] * 4 + [cfg.width(256), cfg.width(128), cfg.width(64)]
        self.direction = Direction(sw, cfg.motion_dim)
        self.input = LearnedConstant(widths[0])
        self.conv1 = StyledConv(widths[0], widths[0], 3, sw)
        prev = widths[0]
        for level, width in enumerate(widths):
            p, q = _level_names(level)
            self.add_module(f"{p}_1", StyledConv(prev, width, 3, sw, up=True))
            self.add_module(f"{p}_2", nn.ModuleList(FlowResBlock(width, sw) for _ in range(_BLOCKS_PER_LEVEL)))
            if level > 0:
                self.add_module(f"{p}_2_up", _conv_block(prev, width, 3, up=True))
            self.add_module(f"{p}_2_rgb", nn.ModuleList(PlainResBlock(width) for _ in range(_BLOCKS_PER_LEVEL)))
            self.add_module(f"rgb{q}", ToRGB(width))
            self.add_module(f"flow{q}", ToFlow(width, sw))
            prev = width

    def forward(
        self,
        style: torch.Tensor,
        feats: Sequence[torch.Tensor],
        channels_last: bool = False,
        check: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """``check`` (optional) is called between the blocks (about 70 per frame) and may raise to stop."""
        if len(feats) != _LEVELS:
            raise ValueError(f"the LIA-X decoder needs {_LEVELS} feature maps, got {len(feats)}")
        start = self.input(style.shape[0])
        if channels_last:  # every convolution then keeps the layout
            start = start.contiguous(memory_format=torch.channels_last)
        h = self.conv1(start, style)
        warped = rgb = flow = None
        tick = check if check is not None else _no_check
        for level in range(_LEVELS):
            p, q = _level_names(level)
            tick()
            h = getattr(self, f"{p}_1")(h, style)
            for block in getattr(self, f"{p}_2"):
                tick()
                h = block(h, style)
            tick()
            new_warped, h, flow = getattr(self, f"flow{q}")(h, style, feats[level], flow)
            if warped is not None:
                new_warped = new_warped + getattr(self, f"{p}_2_up")(warped)
            warped = new_warped
            for block in getattr(self, f"{p}_2_rgb"):
                tick()
                warped = block(warped)
            rgb = getattr(self, f"rgb{q}")(warped, rgb)
        assert rgb is not None  # _LEVELS >= 1
        return rgb


# --------------------------------------------------------------------------- generator


class LiaXGenerator(nn.Module):
    """The published ``Generator``: ``enc`` and ``dec`` under the names of lia-x.pt."""

    def __init__(self, cfg: LiaXConfig | None = None, fast_render: bool = True):
        super().__init__()
        self.cfg = cfg or LiaXConfig()
        self.enc = Encoder(self.cfg)
        self.dec = Decoder(self.cfg)
        self.fast_render = fast_render

    @property
    def fast_render(self) -> bool:
        """Fast rendering (see the module docstring); False renders as the reference does."""
        return self._fast_render

    @fast_render.setter
    def fast_render(self, value: bool) -> None:
        self._fast_render = bool(value)
        for m in self.dec.modules():
            if isinstance(m, (ModulatedConv, BiasLeakyReLU)):
                m.fast = self._fast_render

    @contextlib.contextmanager
    def render_settings(self, fast: bool):
        """``with gen.render_settings(fast=False): ...`` renders with that setting inside the block."""
        before = self.fast_render
        self.fast_render = fast
        try:
            yield self
        finally:
            self.fast_render = before

    def _check_images(self, img: torch.Tensor, what: str) -> None:
        r = self.cfg.resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (3, r, r):
            raise ValueError(f"{what} must have shape (B, 3, {r}, {r}) with values in [-1, 1], got {tuple(img.shape)}")

    def encode_identity(self, img: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """img (B, 3, 512, 512) in [−1, 1] → (z (B, S), feats: 7 maps coarse → fine, see IdentityEncoder)."""
        self._check_images(img, "identity image")
        return self.enc.enc_2r(img)

    def motion_code(self, z: torch.Tensor) -> torch.Tensor:
        """Identity code z (B, S) → motion code α (B, M) (``enc.enc_r2t``)."""
        return self.enc.enc_r2t(z)

    def encode_motion(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (T, 3, 512, 512) in [−1, 1] → raw motion codes α (T, M), one per frame."""
        self._check_images(frames, "video frames")
        z, _ = self.enc.enc_2r(frames)
        return self.motion_code(z)

    def direction(self, alpha: torch.Tensor) -> torch.Tensor:
        """Motion code α (B, M) → style offset α·Qᵀ (B, S)."""
        if alpha.ndim != 2 or alpha.shape[1] != self.cfg.motion_dim:
            raise ValueError(f"motion codes must have shape (B, {self.cfg.motion_dim}), got {tuple(alpha.shape)}")
        return self.dec.direction(alpha)

    def render(
        self,
        z: torch.Tensor,
        feats: Sequence[torch.Tensor],
        alpha: torch.Tensor,
        check: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Frames of one or more motion rows.

        z: (1, S) shared identity or (B, S); feats: the 7 maps of
        :meth:`encode_identity`, batch 1 (shared, never copied per row) or B;
        alpha: (B, M) raw (de-normalised) motion codes. Returns (B, 3, 512, 512),
        unclamped, in the reference's output range (≈[−1, 1]; clamp before
        converting to pixels). Rows are independent: rendering them together or
        one by one gives the same frames. ``check`` (optional) is called between the
        decoder's blocks and may raise to stop mid-batch (cancellation within a frame).
        """
        b = alpha.shape[0]
        if z.ndim != 2 or z.shape[1] != self.cfg.style_width or z.shape[0] not in (1, b):
            raise ValueError(
                f"identity code must have shape (1, {self.cfg.style_width}) or ({b}, …), got {tuple(z.shape)}"
            )
        for f in feats:
            if f.shape[0] not in (1, b):
                raise ValueError(f"feature maps must have batch 1 or {b}, got {tuple(f.shape)}")
        style = z + self.direction(alpha)
        return self.dec(style, feats, channels_last=self.fast_render, check=check)


# --------------------------------------------------------------------------- files


def state_dict_from_file(obj: Any, source: str = "the LIA-X file") -> dict[str, torch.Tensor]:
    """The generator state dict inside what ``torch.load`` (weights only) returns for lia-x.pt.

    The published file is a flat state dict ``{"enc.…": tensor, "dec.…": tensor}``
    (both reference loaders pass it straight to ``Generator.load_state_dict``).
    A ``{"gen": state dict}`` wrapper (LIA training checkpoints) is unwrapped.
    Anything else raises :class:`CheckpointError`.
    """
    if isinstance(obj, Mapping) and "gen" in obj and isinstance(obj["gen"], Mapping):
        log.debug("%s: using the 'gen' entry of a training checkpoint", source)
        obj = obj["gen"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{source} does not hold a LIA-X state dict (found {type(obj).__name__}). "
            "Expected the published LIA-X generator file: a mapping of 'enc.*'/'dec.*' names to tensors."
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{source} does not look like a LIA-X state dict: entries {', '.join(sorted(not_tensors)[:8])} "
            "are not tensors. Expected the published LIA-X generator file."
        )
    keys = [str(k) for k in obj]
    if not any(k.startswith("enc.") for k in keys) or not any(k.startswith("dec.") for k in keys):
        raise CheckpointError(
            f"{source} does not look like a LIA-X generator: no 'enc.*' and 'dec.*' keys "
            f"(first keys: {', '.join(sorted(keys)[:6])}). Expected the published LIA-X generator file."
        )
    return dict(obj)
