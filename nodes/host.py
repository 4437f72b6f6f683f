"""What the nodes need from ComfyUI: model folder, devices, memory management, progress, cancel.

Everything host-specific lives here so that each node's ``execute`` stays a few lines
over :mod:`talker_core` (which never imports ComfyUI).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch

log = logging.getLogger(__name__)

MODELS_FOLDER = "talker_t2av"  # models/talker_t2av, or any path users add under this name in YAML

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
DEVICES = ["auto", "gpu", "cpu"]
ATTENTIONS = ["sdpa", "eager", "flash_attention_2"]
PREVIEW_SIZE = 256


# ----------------------------------------------------------------------------------------------
# model folder


def register_model_folder() -> None:
    """Add ``<models_dir>/talker_t2av`` to the ``talker_t2av`` folder list (paths users set stay first)."""
    folder_paths.add_model_folder_path(MODELS_FOLDER, os.path.join(folder_paths.models_dir, MODELS_FOLDER))


def model_roots() -> list[str]:
    """Every folder registered as ``talker_t2av``, in search order."""
    register_model_folder()
    return folder_paths.get_folder_paths(MODELS_FOLDER)


def model_files() -> list[str]:
    """Files under the model folders, relative to their root (posix separators)."""
    register_model_folder()
    return [f.replace(os.sep, "/") for f in folder_paths.get_filename_list(MODELS_FOLDER)]


def backbone_folders() -> list[str]:
    """Sub-folders that hold a backbone (``model.safetensors``), relative to the model roots."""
    folders = set()
    for f in model_files():
        head, tail = os.path.split(f)
        if tail == "model.safetensors" and head:
            folders.add(head)
    return sorted(folders)


def weight_files(default: str, extensions: tuple[str, ...]) -> list[str]:
    """Combo options for a single-file model: ``default`` first, then every other candidate.

    Files inside backbone folders are left out. ``default`` is always listed so that a
    fresh install shows the expected name (and ``download_if_missing`` can fetch it).
    """
    skip = tuple(folder + "/" for folder in backbone_folders())
    found = [f for f in model_files() if f.lower().endswith(extensions) and not f.startswith(skip)]
    return [default] + sorted(f for f in found if f != default)


def find_model_path(name: str, folder: bool = False) -> Optional[str]:
    """Absolute path of ``name`` in the first model root holding it (a file, or a folder if asked)."""
    rel = os.path.normpath(name)
    if rel.startswith("..") or os.path.isabs(rel):
        raise ValueError(f"{name!r} is not a path inside the {MODELS_FOLDER} model folder")
    for root in model_roots():
        candidate = os.path.join(root, rel)
        if os.path.isdir(candidate) if folder else os.path.isfile(candidate):
            return candidate
    return None


def missing_model_error(name: str, kind: str, default: str) -> FileNotFoundError:
    from talker_core.weights.loaders import DOWNLOAD_COMMAND

    roots = model_roots()
    command = DOWNLOAD_COMMAND.format(models_dir=f'"{roots[0]}"')
    hint = (
        f"Turn on download_if_missing on this node to fetch it from its public source, or run `{command}`"
        if name == default
        else f"Pick an existing entry, or the release name {default!r} with download_if_missing on"
    )
    return FileNotFoundError(
        f"{kind} {name!r} was not found in the {MODELS_FOLDER} model folder(s): {', '.join(roots)}. {hint}. "
        "See the README's 'Model files' section for the layout."
    )


def download(kind: str) -> None:
    """Fetch one released component into the first model root, with a progress bar."""
    from talker_core.weights import download as dl

    root = model_roots()[0]
    os.makedirs(root, exist_ok=True)
    pbar = comfy.utils.ProgressBar(1)
    log.info("Talker-T2AV: downloading the %s files into %s (download_if_missing is on)", kind, root)

    def progress(done: int, total: int, name: str) -> None:
        log.info("Talker-T2AV download: %d/%d %s", done, total, name)
        pbar.update_absolute(done, max(total, 1))

    dl.download_models(root, kinds=[kind], progress=progress)


# ----------------------------------------------------------------------------------------------
# devices and precision


def load_device(choice: str) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    device = mm.get_torch_device()
    if choice == "gpu" and torch.device(device).type == "cpu":
        raise ValueError(
            "device is 'gpu' but ComfyUI runs on the CPU (no GPU found, or --cpu was given); choose 'auto' or 'cpu'"
        )
    return torch.device(device)


def offload_device(load: torch.device) -> torch.device:
    return load if load.type == "cpu" else torch.device(mm.unet_offload_device())


def resolve_dtype(choice: str, device: torch.device, auto_half: bool) -> torch.dtype:
    """fp32/bf16/fp16 as asked; 'auto' is bf16 where the GPU supports it (if ``auto_half``), else fp32."""
    if choice == "fp32":
        return torch.float32
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        return torch.float16
    if choice != "auto":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {choice!r}")
    if auto_half and device.type != "cpu" and mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


def check_attention(choice: str) -> None:
    if choice not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {choice!r}")
    if choice == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ValueError(
                "attention 'flash_attention_2' needs the flash-attn package, which is not installed; "
                "choose 'sdpa' (the default, as fast on most GPUs) or install flash-attn for your CUDA build"
            )


@dataclass(eq=False)
class ManagedModel:
    """A model on a ComfyUI socket: the module, its ModelPatcher, and what the pipeline calls.

    ``payload`` is what ``talker_core`` functions take (the module itself, or a
    ``TalkerBundle`` for the backbone). ``ready()`` asks ComfyUI to load it on its
    device (evicting others if memory is short) and returns the payload.
    """

    kind: str
    module: torch.nn.Module
    patcher: Any
    payload: Any
    dtype: torch.dtype
    source: str

    def ready(self) -> Any:
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.payload

    def __repr__(self) -> str:  # shown in errors and debug logs
        return f"ManagedModel({self.kind}, {self.source}, {self.dtype}, on {self.patcher.load_device})"


class _Holder(torch.nn.Module):
    """The module ComfyUI's ModelPatcher manages: it sets bookkeeping attributes on it (``device``,
    ``model_loaded_weight_memory``, ...), which must not land on (or clash with) the library's
    own modules, e.g. a read-only ``device`` property."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


# ComfyUI logs "Requested to load <class name>": name the holder after what it holds.
_HOLDERS = {
    kind: type(name, (_Holder,), {"__doc__": _Holder.__doc__})
    for kind, name in (
        ("talker", "TalkerT2AV"),
        ("whisperx_vae", "TalkerWhisperXVAE"),
        ("liax", "TalkerLiaX"),
        ("speaker", "TalkerSpeakerEncoder"),
    )
}


def manage(
    kind: str, module: torch.nn.Module, payload: Any, device: torch.device, dtype: torch.dtype, source: str
) -> ManagedModel:
    from comfy.model_patcher import ModelPatcher

    module.eval()
    holder = _HOLDERS.get(kind, _Holder)(module)
    patcher = ModelPatcher(holder, load_device=device, offload_device=offload_device(device))
    return ManagedModel(kind, module, patcher, payload, dtype, str(source))


# ----------------------------------------------------------------------------------------------
# progress and cancellation


def _preview(frame: Optional[torch.Tensor]):
    """(H, W, 3) float [0, 1] → the ("JPEG", PIL image, max size) tuple ComfyUI's progress hook sends."""
    if frame is None:
        return None
    import numpy as np
    from PIL import Image

    array = (frame.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return ("JPEG", Image.fromarray(array), PREVIEW_SIZE)


def make_hooks(progress: bool = True):
    """``talker_core`` hooks wired to a ComfyUI progress bar and the interrupt flag."""
    from talker_core.pipeline import Hooks

    pbar = comfy.utils.ProgressBar(1) if progress else None

    def report(done: int, total: int, stage: str, preview: Optional[torch.Tensor]) -> None:
        if pbar is not None:
            pbar.update_absolute(done, max(int(total), 1), _preview(preview))

    return Hooks(progress=report, should_cancel=mm.processing_interrupted)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn the library's ``Cancelled`` into ComfyUI's interruption (no error shown, run stopped)."""
    from talker_core.pipeline import Cancelled

    try:
        yield
    except Cancelled:
        mm.throw_exception_if_processing_interrupted()
        raise mm.InterruptProcessingException() from None


# ----------------------------------------------------------------------------------------------
# core payloads


def audio_input(audio: dict, what: str) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO → (waveform (C, N) float CPU, sample rate); the first clip of a batch."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{what}: expected a ComfyUI AUDIO value (waveform and sample_rate)")
    wav = audio["waveform"]
    if wav.ndim == 3:
        if wav.shape[0] > 1:
            log.warning("%s: a batch of %d clips was given; using the first", what, wav.shape[0])
        wav = wav[0]
    return wav.detach().float().cpu(), int(audio["sample_rate"])


def audio_output(waveform: torch.Tensor, sample_rate: int) -> dict:
    """(C, N) or (N,) waveform → ComfyUI AUDIO {"waveform": (1, C, N), "sample_rate"} on the intermediate device."""
    if waveform.ndim == 1:
        waveform = waveform[None]
    return {"waveform": waveform[None].to(mm.intermediate_device(), torch.float32), "sample_rate": int(sample_rate)}


def identity_to_cpu(face):
    """An Identity with every tensor on the CPU in float32 (sockets carry CPU data)."""
    from dataclasses import replace

    return replace(
        face,
        z=face.z.detach().float().cpu(),
        feats=[f.detach().float().cpu() for f in face.feats],
        first_motion=face.first_motion.detach().float().cpu(),
        source=None if face.source is None else face.source.detach().float().cpu(),
    )
