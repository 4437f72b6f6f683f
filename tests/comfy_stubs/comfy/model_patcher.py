"""Stand-in for ``comfy.model_patcher.ModelPatcher``: a model plus its load/offload devices."""
from __future__ import annotations

import torch


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.parent = None
        if not hasattr(model, "device") or model.device is None:
            model.device = offload_device  # ComfyUI sets these bookkeeping attributes too
        for name, value in (("model_loaded_weight_memory", 0), ("lowvram_patch_counter", 0),
                            ("model_lowvram", False), ("current_weight_patches_uuid", None)):
            if not hasattr(model, name):
                setattr(model, name, value)
        self.model_size()

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())
        return self.size

    def model_patches_models(self):
        return []

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        if device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to  # as ComfyUI's load(): fails on a read-only ``device`` property
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        target = device_to or self.offload_device
        self.model.to(target)
        self.model.device = target

    def loaded_size(self):
        return self.model_size()
