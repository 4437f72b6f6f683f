"""Stand-in for ``comfy_api.latest``: ``ComfyExtension``, ``io`` and ``ui``."""
from __future__ import annotations

from abc import ABC, abstractmethod

from . import _io as io
from . import _ui as ui


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when the extension is loaded."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes this extension provides."""


__all__ = ["ComfyExtension", "io", "ui"]
