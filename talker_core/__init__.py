"""Talker-T2AV as a plain PyTorch library (arXiv 2604.23586).

Text, a reference voice and a reference face in; speech and a talking-face video
out. Also audio-driven video (A2V), video dubbing (V2A), speech only and style
cloning from a reference prefix. Nothing here imports ComfyUI.

Importing this package is cheap and has no side effects: submodules are loaded
on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Short names kept for the public Python API (``from talker_core import loaders``).
_ALIASES = {
    "loaders": "talker_core.weights.loaders",
    "download": "talker_core.weights.download",
    "debug_models": "talker_core.weights.debug_models",
}


def __getattr__(name: str):
    target = _ALIASES.get(name)
    if target is None:
        raise AttributeError(f"module 'talker_core' has no attribute {name!r}")
    import importlib

    return importlib.import_module(target)
