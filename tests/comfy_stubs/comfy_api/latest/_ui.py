"""Stand-in for ``comfy_api.latest._ui`` (the UI payload classes our nodes use)."""
from __future__ import annotations

from ._io import FolderType, _UIOutput


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type: FolderType):
        super().__init__(filename=filename, subfolder=subfolder, type=FolderType(type).value)


class PreviewText(_UIOutput):
    def __init__(self, value: str, **kwargs):
        self.value = value

    def as_dict(self):
        return {"text": (self.value,)}


class PreviewVideo(_UIOutput):
    def __init__(self, values: list, **kwargs):
        self.values = values

    def as_dict(self):
        return {"images": self.values, "animated": (True,)}
