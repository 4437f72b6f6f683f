"""Stand-in for ``comfy.model_management`` on a CPU-only host.

``load_models_gpu`` moves each patcher's model to its load device and records it, as
ComfyUI does with ``force_full_load=True``; ``unload_all_models`` moves them back to the
offload device. The interruption flag behaves as ComfyUI's.
"""
from __future__ import annotations

import threading

import torch

current_loaded_models: list = []
load_calls: list = []  # every list passed to load_models_gpu, for tests


class InterruptProcessingException(Exception):
    pass


_interrupt_lock = threading.RLock()
interrupt_processing = False


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def text_encoder_offload_device():
    return torch.device("cpu")


def vae_device():
    return torch.device("cpu")


def vae_offload_device():
    return torch.device("cpu")


def is_device_cpu(device):
    return torch.device(device).type == "cpu"


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    return False


def soft_empty_cache(force=False):
    pass


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_calls.append(list(models))
    for m in models:
        m.patch_model(m.load_device)
        if m not in current_loaded_models:
            current_loaded_models.insert(0, m)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    while current_loaded_models:
        current_loaded_models.pop().unpatch_model(None)


def interrupt_current_processing(value=True):
    global interrupt_processing
    with _interrupt_lock:
        interrupt_processing = value


def processing_interrupted():
    with _interrupt_lock:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with _interrupt_lock:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
