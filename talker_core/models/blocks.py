"""Transformer pieces shared by the patch encoders and the DiT velocity heads.

Implements the small bidirectional pre-norm transformer of Talker-T2AV
(arXiv 2604.23586; reference ``llama4nar.py``: ``RMSNorm``, ``RoPE``, ``Block``),
see spec MODEL.md §3:

    x = x + attn.proj(SDPA(rope(q), rope(k), v))     with q, k, v = attn.qkv(norm1(x))
    x = x + mlp.proj(silu(mlp.fc1(y)) * mlp.fc2(y))  with y = norm2(x)

Attention is full (no causal mask), the MLP is SiLU-gated with hidden width
int(8·H/3), and no linear layer has a bias. Rotary embedding acts on adjacent
pairs of channels (2i, 2i+1) with θ_i = 10000^(−2i/head_dim) at positions
0..L−1 of the sequence handed to the stack.

Legend: B batch, L sequence length, H width, N heads, E head_dim (H = N·E).

Normalisation statistics and the rotary tables are computed in float32 whatever
the module dtype, so a bf16/fp16 copy of a stack stays close to float32.

Fast path (used by the generation engine, never by the modules' own ``forward``):
:class:`LinearKernels` runs the linear layers of small batches with weights
prepacked once for oneDNN on the CPU, and :func:`block_forward` is the block's
function with a choice of linear kernel and of the positions whose output is
needed (the last block of a DiT head only needs the last T positions, the last
block of a patch encoder only the CLS position).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RMSNorm",
    "AdjacentPairRotary",
    "SelfAttention",
    "GatedMLP",
    "TransformerBlock",
    "mlp_hidden_width",
    "LinearKernels",
    "plain_linear",
    "tensor_key",
    "rms_norm",
    "block_forward",
]

log = logging.getLogger(__name__)


def mlp_hidden_width(width: int) -> int:
    """Hidden width of the gated MLP for a block of ``width`` channels: int(8·width/3)."""
    return int(8 * width / 3)


class RMSNorm(nn.Module):
    """``x · rsqrt(mean(x²) + eps) · scale`` over the last dimension (parameter ``scale``)."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, H) → (…, H), same dtype as ``x``."""
        xf = x.float()
        inv = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xf * inv * self.scale.float()).to(x.dtype)


class AdjacentPairRotary(nn.Module):
    """Rotary position embedding on adjacent channel pairs (2i, 2i+1).

    Holds no state that a checkpoint stores: the cos/sin tables are functions of
    ``head_dim`` and the sequence length, computed in float32 on first use per
    (length, device) and cached (the published ``*.rope.w`` buffers are ignored
    when loading).
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self._tables: dict[tuple, object] = {}

    def tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin tables, each (L, E/2) float32 on ``device``."""
        key = (length, torch.device(device))
        cached = self._tables.get(key)
        if cached is None:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2) / self.head_dim))
            angles = torch.outer(torch.arange(length), inv_freq).float()
            cached = (angles.cos().to(device), angles.sin().to(device))
            self._tables[key] = cached
        return cached

    def rotate_complex(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """:meth:`forward` as one complex multiplication (fewer kernels; the fast path on CUDA).

        (B, N, L, E) → (B, N, L, E); equal to :meth:`forward` up to float rounding."""
        length = x.shape[-2]
        key = ("cis", start + length, torch.device(x.device))
        cis = self._tables.get(key)
        if cis is None:
            cos, sin = self.tables(start + length, x.device)
            cis = self._tables[key] = torch.complex(cos, sin)
        if start:
            cis = cis[start:]
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], self.head_dim // 2, 2).contiguous())
        return torch.view_as_real(pairs * cis).flatten(-2).to(x.dtype)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, N, L, E) → (B, N, L, E): channel pair i of position p rotated by p·θ_i.

        Positions are ``start``…``start+L−1`` (0… by default).
        """
        length = x.shape[-2]
        cos, sin = self.tables(start + length, x.device)
        if start:
            cos, sin = cos[start:], sin[start:]
        pairs = x.float().unflatten(-1, (self.head_dim // 2, 2))
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((cos * even - sin * odd, cos * odd + sin * even), dim=-1)
        return rotated.flatten(-2).to(x.dtype)


class SelfAttention(nn.Module):
    """Full (bidirectional) multi-head self-attention with rotary q/k; ``qkv`` and ``proj``, no biases."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        if width % n_head:
            raise ValueError(f"width {width} is not divisible by the number of heads {n_head}")
        self.n_head = n_head
        self.head_dim = width // n_head
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, rope: AdjacentPairRotary) -> torch.Tensor:
        """(B, L, H) → (B, L, H)."""
        b, length, _ = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, N, L, E)
        y = F.scaled_dot_product_attention(rope(q), rope(k), v)
        return self.proj(y.transpose(1, 2).reshape(b, length, -1))


class GatedMLP(nn.Module):
    """``proj(silu(fc1(x)) · fc2(x))`` with hidden width int(8·H/3), no biases."""

    def __init__(self, width: int):
        super().__init__()
        hidden = mlp_hidden_width(width)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(width, hidden, bias=False)
        self.proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, H) → (…, H)."""
        return self.proj(F.silu(self.fc1(x)) * self.fc2(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``norm1``, ``attn``, ``norm2``, ``mlp`` (published names)."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.norm1 = RMSNorm(width)
        self.attn = SelfAttention(width, n_head)
        self.norm2 = RMSNorm(width)
        self.mlp = GatedMLP(width)

    def forward(self, x: torch.Tensor, rope: AdjacentPairRotary) -> torch.Tensor:
        """(B, L, H) → (B, L, H)."""
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------- fast path


def tensor_key(t: torch.Tensor) -> tuple:
    """Identity of a tensor's current values for caches: storage, version, dtype, device, shape.

    Inference tensors keep no version counter; their version reads as -1."""
    try:
        version = t._version
    except RuntimeError:  # "Inference tensors do not track version counter"
        version = -1
    return (t.data_ptr(), version, t.dtype, t.device, tuple(t.shape))


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


def block_forward(
    block: TransformerBlock,
    x: torch.Tensor,
    rope: AdjacentPairRotary,
    linear=plain_linear,
    rows: slice | None = None,
    fused: bool | None = None,
) -> torch.Tensor:
    """``block(x, rope)`` with a choice of linear kernel and of output positions.

    x: (B, L, H). rows: the positions whose output is wanted (a slice of
    0…L−1, e.g. ``slice(L−T, L)``); keys and values still come from every
    position, so the result equals the same rows of ``block(x, rope)`` (up to
    float rounding). fused: RMSNorm and the rotary embedding in fewer kernels
    (:func:`rms_norm`, :meth:`AdjacentPairRotary.rotate_complex`); None = on CUDA,
    where each small kernel's launch is a large part of a head step.
    Returns (B, L, H), or (B, len(rows), H).
    """
    if fused is None:
        fused = x.is_cuda
    rotate = rope.rotate_complex if fused else rope
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
