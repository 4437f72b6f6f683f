"""Talker-T2AV as a plain PyTorch library (arXiv 2604.23586).

Text, a reference voice and a reference face in; speech and a talking-face video
out. Also audio-driven video (A2V), video dubbing (V2A), speech only and style
cloning from a reference prefix. Nothing here imports ComfyUI.

Importing this package is cheap and has no side effects: submodules are loaded
on first use.
"""

from __future__ import annotations

# Short names kept for the public Python API (``from talker_core import loaders``).
_ALIASES = {
    "loaders": "talker_core.weights.loaders",
    "download": "talker_core.weights.download",
    "debug_models": "talker_core.weights.debug_models",
}


def _version() -> str:
    """The version in pyproject.toml (the one place it is written), or the installed metadata's."""
    import re
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        found = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', pyproject.read_text("utf-8"), re.M | re.S)
        if found:
            return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comfyui-talker-t2av")
    except PackageNotFoundError:
        return "unknown"


def __getattr__(name: str):
    if name == "__version__":
        return _version()
    target = _ALIASES.get(name)
    if target is None:
        raise AttributeError(f"module 'talker_core' has no attribute {name!r}")
    import importlib

    return importlib.import_module(target)
