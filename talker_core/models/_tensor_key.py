"""Identity of a tensor's current values, for caches built from weights (LIA-X basis, fast path)."""

from __future__ import annotations

import torch

__all__ = ["tensor_key"]


def tensor_key(t: torch.Tensor) -> tuple:
    """Identity of a tensor's current values for caches: storage, version, dtype, device, shape.

    Inference tensors keep no version counter; their version reads as -1."""
    try:
        version = t._version
    except RuntimeError:  # "Inference tensors do not track version counter"
        version = -1
    return (t.data_ptr(), version, t.dtype, t.device, tuple(t.shape))
