"""Stateless tensor operations of the LIA-X generator (pure PyTorch, no extension).

The LIA-X renderer (Wang et al., "LIA-X", reference code ``wyhsirius/LIA-X``,
vendored by ``zhenye234/Talker-T2AV`` under ``lia_x/networks/``) is built from
StyleGAN2 parts. The reference ships CUDA kernels for two of them (FIR
resampling and the fused bias + leaky ReLU) and falls back to slow native code on
CPU; here both are plain ``torch.nn.functional`` calls that give the same numbers
on every device.

Fast variants (the renderer's fast mode, see ``LiaXGenerator.fast_render``):
``modulated_conv2d(..., fused=False)`` scales the activations by the style and
the output by the demodulation factor instead of building one weight set per
frame (the same function, a standard batched convolution: cuDNN/oneDNN at full
speed, no per-frame weights); ``bias_leaky_relu(..., inplace=True)`` works in
the convolution's fresh output. ``upfirdn2d`` builds its padded zero-inserted
grid in one buffer.

Legend: N batch, C channels, H/W height/width, K filter taps, B frames sharing
one identity, S style width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "LEAKY_SLOPE",
    "LEAKY_GAIN",
    "upfirdn2d",
    "bias_leaky_relu",
    "modulated_conv2d",
    "identity_grid",
    "warp_features",
]

LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)  # keeps the activation's second moment at 1 (StyleGAN2)


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with a 2-D FIR kernel, downsample.

    x: (N, C, H, W); kernel: (Kh, Kw), applied to every channel as a true
    convolution (flipped taps), so asymmetric kernels behave as in StyleGAN2's
    ``upfirdn2d``. pad = (left, right, top, bottom) on the zero-inserted grid of
    size (H·up, W·up); negative values crop. Returns
    (N, C, (H·up + top + bottom − Kh) // down + 1, (W·up + left + right − Kw) // down + 1).

    The zero-inserted grid is built explicitly and filtered by a depthwise
    convolution: summing the taps in that order keeps the result bit-identical
    to the reference's native path (a transposed convolution skips the zeros but
    rounds differently, and the random stand-in kernels of the fixtures amplify
    that far past their tolerance).
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    px0, px1, py0, py1 = pad
    k = kernel.to(dtype=x.dtype, device=x.device)
    weight = torch.flip(k, [0, 1]).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    if up > 1 and min(pad) >= 0:
        # zero-inserted and padded grid in one buffer: the same values as inserting, then padding
        grid = torch.empty(
            (n, c, h * up + py0 + py1, w * up + px0 + px1),
            dtype=x.dtype,
            device=x.device,
            memory_format=_memory_format(x),
        ).zero_()
        grid[:, :, py0 : py0 + h * up : up, px0 : px0 + w * up : up] = x
        return F.conv2d(grid, weight, stride=down, groups=c)
    if up > 1:
        grid = x.new_zeros(n, c, h * up, w * up)
        grid[:, :, ::up, ::up] = x
        x = grid
    if any(pad):
        x = F.pad(x, [px0, px1, py0, py1])
    return F.conv2d(x, weight, stride=down, groups=c)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def bias_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    slope: float = LEAKY_SLOPE,
    gain: float = LEAKY_GAIN,
    inplace: bool = False,
) -> torch.Tensor:
    """gain · leaky_relu(x + bias) with the bias broadcast over channel dim 1. x: (N, C, …); bias: (C,).

    inplace: overwrite ``x`` (a temporary nobody else holds) with the result; same numbers."""
    if inplace:
        if bias is not None:
            x.add_(bias.reshape(1, -1, *([1] * (x.ndim - 2))))
        return F.leaky_relu_(x, negative_slope=slope).mul_(gain)
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=slope) * gain


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    transposed_stride: int = 1,
    eps: float = 1e-8,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, one weight set per sample, run as one grouped conv.

    x: (N, Cin, H, W); weight: (Cout, Cin, K, K) with its equalised-lr scale
    already applied; styles: (N, Cin) per-input-channel gains. With
    ``demodulate`` every output filter is rescaled to unit L2 norm
    (rsqrt(Σ w² + eps)). ``transposed_stride`` = 2 runs a stride-2 transposed
    convolution without padding ((N, Cout, 2H+K−2, 2W+K−2); the caller blurs);
    otherwise a same-padded convolution (N, Cout, H, W).

    fused=False computes the same function without per-sample weights:
    conv(x · styles, weight) · rsqrt(styles² · Σ_k weight² + eps) (the factor in
    float32); it keeps ``x``'s memory format (channels-last stays channels-last).
    """
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    if not fused:
        xs = x * styles.reshape(n, cin, 1, 1).to(x.dtype)
        if transposed_stride > 1:
            out = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=transposed_stride)
        else:
            out = F.conv2d(xs, weight, padding=kh // 2)
        if demodulate:
            acc = torch.promote_types(weight.dtype, torch.float32)
            power = weight.to(acc).pow(2).sum(dim=(2, 3))  # (Cout, Cin)
            d = torch.rsqrt(styles.to(acc).pow(2) @ power.t() + eps)  # (N, Cout)
            out = out.mul_(d.to(out.dtype).reshape(n, cout, 1, 1))
        return out
    wts = weight.unsqueeze(0) * styles.reshape(n, 1, cin, 1, 1)  # (N, Cout, Cin, K, K)
    if demodulate:
        wts = wts * torch.rsqrt(wts.pow(2).sum(dim=(2, 3, 4)) + eps).reshape(n, cout, 1, 1, 1)
    folded = x.reshape(1, n * cin, h, w)
    if transposed_stride > 1:
        wts = wts.transpose(1, 2).reshape(n * cin, cout, kh, kw)
        out = F.conv_transpose2d(folded, wts, stride=transposed_stride, groups=n)
    else:
        out = F.conv2d(folded, wts.reshape(n * cout, cin, kh, kw), padding=kh // 2, groups=n)
    return out.reshape(n, cout, out.shape[-2], out.shape[-1])


def identity_grid(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size, size, 2) sampling grid of the unwarped image: [..., 0] = x, [..., 1] = y, both in [−1, 1]."""
    axis = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack((gx, gy), dim=-1)


def warp_features(feat: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` (zeros outside, corner-aligned) of feat at grid.

    feat: (1, C, Hf, Wf) shared by every row, or (B, C, Hf, Wf); grid: (B, H, W, 2).
    Returns (B, C, H, W). A shared feature map is sampled once for all B grids
    (the grids are stacked along the height), so it is never copied B times.
    """
    b, h, w, _ = grid.shape
    if feat.shape[0] == b:
        return F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if feat.shape[0] != 1:
        raise ValueError(f"feature batch {feat.shape[0]} fits neither the {b} motion rows nor a shared identity (1)")
    stacked = F.grid_sample(
        feat, grid.reshape(1, b * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )  # (1, C, B·H, W)
    return stacked.reshape(feat.shape[1], b, h, w).transpose(0, 1)
