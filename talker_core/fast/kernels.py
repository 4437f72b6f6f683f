"""Kernels of the fast path: prepacked linear layers and the transformer block's function.

:class:`LinearKernels` runs the linear layers of small batches with weights prepacked once
for oneDNN on the CPU; :func:`block_forward` is the function of
:class:`talker_core.models.blocks.TransformerBlock` with a choice of linear kernel and of
the positions whose output is needed (the last block of a DiT head only needs the last T
positions, the last block of a patch encoder only the CLS position), and, on CUDA, RMSNorm
and the rotary embedding in fewer kernels. Each equals the module it replaces up to float
rounding (tests/test_fast_path.py).

Legend: B batch, L sequence length, H width, N heads, E head_dim (H = N·E).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from talker_core.models._tensor_key import tensor_key
from talker_core.models.blocks import AdjacentPairRotary, RMSNorm, TransformerBlock

__all__ = ["Linear", "LinearKernels", "plain_linear", "tensor_key", "rms_norm", "rotate_complex", "block_forward"]

log = logging.getLogger(__name__)

Linear = Callable[[nn.Linear, torch.Tensor], torch.Tensor]
"""A linear kernel: ``linear(module, x)`` computes ``module(x)``."""


def plain_linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` as a function of (module, x): the kernel :func:`block_forward` uses by default."""
    return F.linear(x, module.weight, module.bias)


def _onednn_packing_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class LinearKernels:
    """Linear layers for repeated small batches: (…, Din) → (…, Dout), like ``module(x)``.

    On the CPU, float32 and bfloat16 weights are reordered once into oneDNN's
    blocked layout (``torch.ops.mkldnn._reorder_linear_weight``) and run with
    ``torch.ops.mkldnn._linear_pointwise``; for the 10–20-row products of the flow
    heads this is about twice as fast as the default BLAS call. Elsewhere (CUDA,
    other dtypes, oneDNN missing) it is ``F.linear``. Results equal ``module(x)``
    up to float rounding (a different summation order).

    The packed copies live in this object (one per module, checked against the
    weight's storage, version, dtype and device on every call and rebuilt when
    the weights change); they cost as much memory as the weights they copy, so
    pack only the modules that run many times per patch. ``clear()`` frees them.

    pack:       None = on when the CPU has oneDNN; False = always ``F.linear``.
    batch_hint: the row count the packed layout is tuned for.
    min_numel:  smaller weights stay on ``F.linear`` (the packed call's fixed cost, some
                tens of microseconds, outweighs its gain on debug-sized layers).
    """

    def __init__(self, pack: bool | None = None, batch_hint: int = 32, min_numel: int = 1 << 16):
        self.pack = _onednn_packing_available() if pack is None else bool(pack and _onednn_packing_available())
        self.batch_hint = int(batch_hint)
        self.min_numel = int(min_numel)
        self._packed: dict[int, tuple[tuple, torch.Tensor]] = {}

    def clear(self) -> None:
        """Drop every packed copy."""
        self._packed.clear()

    @property
    def packed_bytes(self) -> int:
        """Memory held by the packed copies."""
        return sum(t.numel() * t.element_size() for _, t in self._packed.values())

    def _packed_weight(self, module: nn.Linear) -> torch.Tensor | None:
        w = module.weight
        if (
            w.device.type != "cpu"
            or w.dtype not in (torch.float32, torch.bfloat16)
            or w.numel() < self.min_numel
            or (w.requires_grad and torch.is_grad_enabled())
        ):
            return None
        key = tensor_key(w)
        entry = self._packed.get(id(module))
        if entry is not None and entry[0] == key:
            return entry[1]
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), self.batch_hint)
        except (RuntimeError, NotImplementedError) as exc:  # a build without the op for this dtype
            log.debug("oneDNN weight packing unavailable (%s); using F.linear", exc)
            self.pack = False
            self._packed.clear()
            return None
        self._packed[id(module)] = (key, packed)
        return packed

    def __call__(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self.pack and x.device.type == "cpu" and x.dtype == module.weight.dtype:
            packed = self._packed_weight(module)
            if packed is not None:
                shape = x.shape
                out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), packed, module.bias, "none", [], "")
                return out.view(*shape[:-1], out.shape[-1])
        return F.linear(x, module.weight, module.bias)


def rms_norm(norm: RMSNorm, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """``norm(x)``; ``fused`` uses ``F.rms_norm`` (one kernel on CUDA, same formula in float32)."""
    if fused and hasattr(F, "rms_norm"):
        return F.rms_norm(x.float(), (x.shape[-1],), norm.scale.float(), norm.eps).to(x.dtype)
    return norm(x)


# complex rotary tables per rotary module (and so per model): (length, device) -> (L, E/2) complex64
_CIS: weakref.WeakKeyDictionary[AdjacentPairRotary, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def rotate_complex(rope: AdjacentPairRotary, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """``rope(x, start)`` as one complex multiplication (fewer kernels; the fast path on CUDA).

    (B, N, L, E) → (B, N, L, E); equal to ``rope(x, start)`` up to float rounding."""
    length = x.shape[-2]
    tables = _CIS.setdefault(rope, {})
    key = (start + length, torch.device(x.device))
    cis = tables.get(key)
    if cis is None:
        cos, sin = rope.tables(start + length, x.device)
        cis = tables[key] = torch.complex(cos, sin)
    if start:
        cis = cis[start:]
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], rope.head_dim // 2, 2).contiguous())
    return torch.view_as_real(pairs * cis).flatten(-2).to(x.dtype)


def forget_rotary_tables(model: nn.Module) -> None:
    """Drop the complex rotary tables built for the rotary modules of ``model``."""
    for module in model.modules():
        if isinstance(module, AdjacentPairRotary):
            _CIS.pop(module, None)


def rotary_tables_nbytes(model: nn.Module) -> int:
    """Bytes of the complex rotary tables held for ``model``."""
    return sum(
        t.numel() * t.element_size()
        for module in model.modules()
        if isinstance(module, AdjacentPairRotary)
        for t in _CIS.get(module, {}).values()
    )


def block_forward(
    block: TransformerBlock,
    x: torch.Tensor,
    rope: AdjacentPairRotary,
    linear: Linear = plain_linear,
    rows: slice | None = None,
    fused: bool | None = None,
) -> torch.Tensor:
    """``block(x, rope)`` with a choice of linear kernel and of output positions.

    x: (B, L, H). rows: the positions whose output is wanted (a slice of
    0…L−1, e.g. ``slice(L−T, L)``); keys and values still come from every
    position, so the result equals the same rows of ``block(x, rope)`` (up to
    float rounding). fused: RMSNorm and the rotary embedding in fewer kernels
    (:func:`rms_norm`, :func:`rotate_complex`); None = on CUDA, where each small
    kernel's launch is a large part of a head step.
    Returns (B, L, H), or (B, len(rows), H).
    """
    if fused is None:
        fused = x.is_cuda

    def rotate(t: torch.Tensor, start: int = 0) -> torch.Tensor:
        return rotate_complex(rope, t, start) if fused else rope(t, start)

    attn = block.attn
    b, length, width = x.shape
    h = rms_norm(block.norm1, x, fused)
    qkv = linear(attn.qkv, h).view(b, length, 3, attn.n_head, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, N, L, E)
    if rows is not None:
        start, stop, _ = rows.indices(length)
        q = rotate(q[:, :, start:stop], start)
        x = x[:, start:stop]
    else:
        q = rotate(q)
    y = F.scaled_dot_product_attention(q, rotate(k), v)
    x = x + linear(attn.proj, y.transpose(1, 2).reshape(b, y.shape[2], width))
    m = block.mlp
    y = rms_norm(block.norm2, x, fused)
    return x + linear(m.proj, F.silu(linear(m.fc1, y)) * linear(m.fc2, y))
