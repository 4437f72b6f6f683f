"""Talker-T2AV as a plain PyTorch library (arXiv 2604.23586).

Text, a reference voice and a reference face in; speech and a talking-face video
out. Also audio-driven video (A2V), video dubbing (V2A), speech only and style
cloning from a reference prefix. Nothing here imports ComfyUI.

Importing this package is cheap and has no side effects: submodules are loaded
on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"
