"""The fast path of generation: the same function as the plain path, computed faster.

Depends on the core (``talker_core.models``, ``talker_core.generation``); nothing in the
core imports it (tests/test_import_hygiene.py). Pieces:

- :mod:`talker_core.fast.program`: :class:`FastPatchStep`, the step object a
  :class:`~talker_core.generation.engine.TalkerGenerator` delegates one patch to, its options
  :class:`FastPath`, and the per-model resources (:func:`release_fast_path`,
  :func:`fast_path_nbytes`);
- :mod:`talker_core.fast.backbone`: the Qwen3 backbone over a :class:`StaticKVCache`;
- :mod:`talker_core.fast.heads`: prepared CFG-pair velocities and patch encoders;
- :mod:`talker_core.fast.kernels`: prepacked linear layers and the transformer block's function.
"""

from __future__ import annotations

from talker_core.fast.backbone import StaticKVCache, run_backbone_static, supports_static_cache
from talker_core.fast.heads import PatchVelocity, encode_patches, patch_tokens, sample_prepared
from talker_core.fast.kernels import LinearKernels, block_forward, plain_linear
from talker_core.fast.program import FastPatchStep, FastPath, fast_path_nbytes, release_fast_path

__all__ = [
    "FastPath",
    "FastPatchStep",
    "release_fast_path",
    "fast_path_nbytes",
    "StaticKVCache",
    "run_backbone_static",
    "supports_static_cache",
    "PatchVelocity",
    "sample_prepared",
    "encode_patches",
    "patch_tokens",
    "LinearKernels",
    "block_forward",
    "plain_linear",
]
