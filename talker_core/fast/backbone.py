"""The Qwen3 backbone over a preallocated key/value cache (fast path).

:func:`run_backbone_static` runs the same function as ``TalkerModel.llm.model`` (same
weights, same rotary tables, same normalisation order; transformers' ``Qwen3DecoderLayer``)
over a :class:`StaticKVCache`, with an optional fixed-shape single-token step (position
given as a device tensor, attention over the whole buffer under a mask) that a CUDA graph
can capture. It equals ``TalkerModel.run_backbone`` on transformers' dynamic cache up to
float rounding (tests/test_fast_path.py).

Legend: L sequence length, D backbone width, K key/value heads, E head width, M cache
capacity (positions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from talker_core.fast.kernels import Linear, plain_linear

if TYPE_CHECKING:
    from talker_core.models.talker import TalkerModel

__all__ = ["StaticKVCache", "supports_static_cache", "run_backbone_static"]


class StaticKVCache:
    """Preallocated keys and values of every backbone layer, for :func:`run_backbone_static`.

    keys, values: (layers, 1, K, M, E) in the model dtype (each layer's slice is updated in place);
    cos, sin:     (M, E) rotary tables of positions 0…M−1, computed as transformers does
                  (float32 angles, then the model dtype);
    positions:    (M,) int64, 0…M−1 (the fixed-shape step's mask);
    length:       positions filled by the eager (variable-shape) calls.
    """

    def __init__(
        self,
        model: TalkerModel,
        capacity: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"static cache capacity must be positive, got {capacity}")
        cfg = model.llm.config
        device = torch.device(device) if device is not None else model.device
        dtype = dtype or model.dtype
        self.capacity = int(capacity)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        kv_heads = int(cfg.num_key_value_heads or cfg.num_attention_heads)
        shape = (int(cfg.num_hidden_layers), 1, kv_heads, self.capacity, self.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        rotary = model.llm.model.rotary_emb
        inv_freq = rotary.inv_freq.to(device=device, dtype=torch.float32)
        self.positions = torch.arange(self.capacity, device=device)
        freqs = self.positions[:, None].float() * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        scaling = getattr(rotary, "attention_scaling", 1.0)
        self.cos = (emb.cos() * scaling).to(dtype)
        self.sin = (emb.sin() * scaling).to(dtype)
        self.length = 0

    def reset(self) -> None:
        """Forget the cached positions (the buffers are reused)."""
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Memory of the buffers (keys, values, rotary tables, positions)."""
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.cos, self.sin, self.positions))


def supports_static_cache(model: TalkerModel) -> bool:
    """True when :func:`run_backbone_static` reproduces ``model.llm.model`` (full attention in
    every layer, default rotary embedding)."""
    cfg = model.llm.config
    types = getattr(cfg, "layer_types", None) or ["full_attention"]
    rope = getattr(model.llm.model.rotary_emb, "rope_type", "default")
    return all(t == "full_attention" for t in types) and rope == "default"


def run_backbone_static(
    model: TalkerModel,
    embeds: torch.Tensor,
    cache: StaticKVCache,
    linear: Linear = plain_linear,
    position: torch.Tensor | None = None,
) -> torch.Tensor:
    """The backbone over a :class:`StaticKVCache`: embeds (1, L, D) → final-norm hidden
    state at the last position (1, D), the function of ``model.run_backbone``.

    Without ``position``: the tokens take positions ``cache.length`` … and
    ``cache.length`` grows by L (attention over the filled part only).
    With ``position`` ((1,) int64 on the cache's device, L must be 1): a
    fixed-shape step that writes that position and attends over the whole
    buffer under a mask; ``cache.length`` is not used or changed (the caller
    advances ``position``). Nothing in it synchronises with the host.
    ``linear`` is the linear kernel (:class:`talker_core.fast.kernels.LinearKernels`).
    """
    x = embeds.to(model.dtype)
    b, length, _ = x.shape
    if b != 1:
        raise ValueError(f"the backbone runs one sequence at a time, got batch {b}")
    start: int | None
    if position is None:
        start = cache.length
        if start + length > cache.capacity:
            raise ValueError(f"static cache full: {start} + {length} positions exceed its capacity {cache.capacity}")
        cos, sin = cache.cos[start : start + length], cache.sin[start : start + length]
    else:
        if length != 1:
            raise ValueError("a fixed-shape backbone step takes one token")
        cos, sin = cache.cos.index_select(0, position), cache.sin.index_select(0, position)
        start = None
    for i, layer in enumerate(model.llm.model.layers):
        x = _qwen3_layer(layer, x, cos, sin, cache, i, start, position, linear)
    if position is None:
        cache.length += length
    return model.llm.model.norm(x[:, -1:])[:, 0]


def _hf_rms(norm, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """transformers' ``Qwen3RMSNorm``; ``fused`` runs it as ``F.rms_norm`` (one kernel on CUDA)."""
    if fused:
        return F.rms_norm(x.float(), (x.shape[-1],), norm.weight.float(), norm.variance_epsilon).to(x.dtype)
    return norm(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _qwen3_layer(
    layer,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: StaticKVCache,
    index: int,
    start: int | None,
    position: torch.Tensor | None,
    linear: Linear,
) -> torch.Tensor:
    """One Qwen3 decoder layer (transformers' ``Qwen3DecoderLayer`` function) over a static cache.

    x (1, L, D); cos/sin (L, E). ``start`` (int): eager mode; ``position`` (tensor): fixed shape."""
    attn = layer.self_attn
    _, length, _ = x.shape
    e = cache.head_dim
    fused = x.is_cuda and hasattr(F, "rms_norm")
    h = _hf_rms(layer.input_layernorm, x, fused)
    q = _hf_rms(attn.q_norm, linear(attn.q_proj, h).view(1, length, -1, e), fused).transpose(1, 2)  # (1, N, L, E)
    k = _hf_rms(attn.k_norm, linear(attn.k_proj, h).view(1, length, -1, e), fused).transpose(1, 2)  # (1, K, L, E)
    v = linear(attn.v_proj, h).view(1, length, -1, e).transpose(1, 2)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    keys, values = cache.keys[index], cache.values[index]  # (1, K, M, E)
    n_heads, n_kv = q.shape[1], k.shape[1]
    groups = n_heads // n_kv
    if position is not None:
        keys.index_copy_(2, position, k)
        values.index_copy_(2, position, v)
        # the heads sharing a key/value head attend together: (1, K, groups, E) queries
        mask = (cache.positions <= position).view(1, 1, 1, -1)
        y = F.scaled_dot_product_attention(q.reshape(1, n_kv, groups, e), keys, values, attn_mask=mask)
    else:
        assert start is not None
        end = start + length
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        kk, vv = keys[:, :, :end], values[:, :, :end]
        if length == 1:
            y = F.scaled_dot_product_attention(q.reshape(1, n_kv, groups, e), kk, vv)
        else:
            kk = kk.repeat_interleave(groups, dim=1)
            vv = vv.repeat_interleave(groups, dim=1)
            if start == 0:
                y = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            else:
                allowed = torch.arange(end, device=x.device) <= (start + torch.arange(length, device=x.device))[:, None]
                y = F.scaled_dot_product_attention(q, kk, vv, attn_mask=allowed)
    y = y.reshape(1, n_heads, length, e).transpose(1, 2).reshape(1, length, n_heads * e)
    x = x + linear(attn.o_proj, y)
    h = _hf_rms(layer.post_attention_layernorm, x, fused)
    mlp = layer.mlp
    return x + linear(mlp.down_proj, F.silu(linear(mlp.gate_proj, h)) * linear(mlp.up_proj, h))
