"""What the nodes need from ComfyUI: model folder, devices, memory management, progress, cancel.

Everything host-specific lives here so that each node's ``execute`` stays a few lines
over :mod:`talker_core` (which never imports ComfyUI).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import weakref
from collections.abc import Callable, Iterator
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
    """Sub-folders that hold a model folder's weights file (the registry's ``weights_file``), relative to the roots."""
    from talker_core.weights.components import COMPONENTS

    names = {c.weights_file for c in COMPONENTS.values() if c.is_folder}
    folders = set()
    for f in model_files():
        head, tail = os.path.split(f)
        if tail in names and head:
            folders.add(head)
    return sorted(folders)


def weight_files(kind: str) -> list[str]:
    """Combo options for a single-file model: its release name first, then every other file of ``kind``.

    Offered: files ending in one of the component's ``extensions`` (registry), outside model
    folders, that the model folder's resolver accepts (a symbolic link out of the folder is not
    offered: it would be refused), and whose header (or, where the header cannot tell, name)
    does not show another component: the Face Model list offers no speaker encoder. Files
    nothing can be told about stay listed. The release name is always listed so that a fresh
    install shows the expected name (and ``download_if_missing`` can fetch it).
    """
    from talker_core.weights.components import component

    c = component(kind)
    skip = tuple(folder + "/" for folder in backbone_folders())
    found = []
    for f in model_files():
        if f == c.release or not f.lower().endswith(c.extensions) or f.startswith(skip):
            continue
        try:
            path = resolve_model(f, "file")
        except ValueError as exc:
            _warn_once(f, str(exc))
            continue
        other = _sniff(path, *_stat(path)) if path else None
        if other is None or other == kind:
            found.append(f)
    return [c.release] + sorted(found)


_WARNED: set[str] = set()


def _warn_once(name: str, message: str) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        log.warning("Talker-T2AV: %s is not offered in the loader lists: %s", name, message)


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=256)
def _sniff(path: str, size: int, mtime_ns: int) -> Optional[str]:
    """The component a file holds (cached per path, size and modification time: lists are rebuilt often)."""
    from talker_core.weights.loaders import sniff_kind

    return sniff_kind(path)


def resolve_model(name: str, input_name: str, folder: bool = False) -> Optional[str]:
    """Absolute path of ``name`` in the first model root holding it (a file, or a folder if asked); None if absent.

    Every root is asked through :func:`talker_core.weights.loaders.resolve_in_folder`: a name that
    is empty, absolute, holds ``..``, or resolves outside the root through a symbolic link is
    refused with a ``ValueError`` that names the node input ``input_name``.
    """
    from talker_core.weights.loaders import resolve_in_folder

    for root in model_roots():
        try:
            target = resolve_in_folder(root, name)
        except ValueError as exc:
            raise ValueError(
                f"{input_name} {name!r}: {exc} To use model files kept elsewhere, add their folder to "
                f"extra_model_paths.yaml under '{MODELS_FOLDER}'."
            ) from None
        if target.is_dir() if folder else target.is_file():
            return str(target)
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
    try:  # the demo voice and face (tiny) come with any download, so the example workflows run as opened
        dl.download_demo(root)
        install_demo_inputs()
    except dl.DownloadError as exc:
        log.warning("Talker-T2AV: the demo voice and face could not be fetched (%s); the models are in place", exc)


def install_demo_inputs() -> list:
    """Copy the downloaded demo media into ComfyUI's input folder under the example workflows' names.

    Existing files are never replaced; without a downloaded demo nothing happens.
    """
    from talker_core.weights.download import install_demo_inputs as install

    written = []
    for root in model_roots():
        try:
            written += install(root, folder_paths.get_input_directory())
        except OSError as exc:
            log.warning("Talker-T2AV: could not place the demo inputs from %s (%s)", root, exc)
    return written


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
    """fp32/bf16/fp16 as asked; 'auto' is bf16 where the GPU supports it (if ``auto_half``), else fp32.

    A precision that cannot work on ``device`` (fp16 on the CPU) is refused here, before anything loads.
    """
    dtype = _choose_dtype(choice, device, auto_half)
    check_precision(choice, device, dtype)
    return dtype


def _choose_dtype(choice: str, device: torch.device, auto_half: bool) -> torch.dtype:
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


def check_precision(choice: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before loading, a precision that cannot work where the model runs (fp16 on the CPU: NaN frames)."""
    from talker_core.weights.loaders import check_precision as check

    try:
        check(device, dtype)
    except ValueError as exc:
        raise ValueError(f"precision {choice} on {device}: {exc}") from exc


def check_attention(choice: str) -> None:
    """Refuse, before loading, an attention kernel the library does not know or cannot run here."""
    from talker_core.models.talker import check_attn_implementation

    try:
        check_attn_implementation(choice)
    except ValueError as exc:
        raise ValueError(f"attention: {exc}") from None


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


_HOLDERS: dict[str, type] = {}


def _holder_class(kind: str) -> type:
    """ComfyUI logs "Requested to load <class name>": the holder is named after what it holds (the registry's
    ``holder``); a kind outside the registry gets the plain holder."""
    from talker_core.weights.components import COMPONENTS

    c = COMPONENTS.get(kind)
    if c is None:
        return _Holder
    cls = _HOLDERS.get(kind)
    if cls is None:
        cls = _HOLDERS[kind] = type(c.holder, (_Holder,), {"__doc__": _Holder.__doc__})
    return cls


def manage(
    kind: str, module: torch.nn.Module, payload: Any, device: torch.device, dtype: torch.dtype, source: str
) -> ManagedModel:
    module.eval()
    holder = _holder_class(kind)(module)
    patcher = patcher_class()(holder, load_device=device, offload_device=offload_device(device))
    # A model replaced on the canvas (its loader re-run, or the node removed) is dropped from ComfyUI's
    # cache without an unload: free its fast-path resources when its patcher goes.
    release, _ = fast_path_hooks()
    weakref.finalize(patcher, release, module)
    return ManagedModel(kind, module, patcher, payload, dtype, str(source))


# ----------------------------------------------------------------------------------------------
# fast-path memory, owned by the managed model


def fast_path_hooks() -> tuple[Callable[[torch.nn.Module], None], Callable[[torch.nn.Module], int]]:
    """``(release_fast_path, fast_path_nbytes)`` of the library: the one place the nodes name them.

    The fast path keeps prepacked weights, static caches, captured programs (CUDA graphs) and
    worker threads per model; ``release`` frees them (rebuilt on the next run), ``nbytes`` is the
    memory they hold. The module is looked up, not imported: the patcher calls this from
    ``__del__``, also while the interpreter shuts down, and a fast path never imported has built
    nothing.
    """
    program = sys.modules.get("talker_core.fast.program")
    if program is None:
        return (lambda model: None), (lambda model: 0)
    return program.release_fast_path, program.fast_path_nbytes


class _FastPathOwner:
    """Patcher mix-in: the fast-path resources of the held module belong to the patcher. Their size is
    part of ``model_size``/``loaded_size`` (what ComfyUI plans memory with), and ``detach`` (a full
    unload) and ``partially_unload`` (memory wanted elsewhere) free them first."""

    def fast_path_bytes(self) -> int:
        return fast_path_hooks()[1](self.model.inner)

    def release_fast_path(self) -> int:
        freed = self.fast_path_bytes()
        fast_path_hooks()[0](self.model.inner)
        return freed

    def model_size(self):
        return super().model_size() + self.fast_path_bytes()

    def loaded_size(self):
        return super().loaded_size() + self.fast_path_bytes()

    def partially_unload(self, device_to, memory_to_free=0, *args, **kwargs):
        freed = self.release_fast_path()
        if memory_to_free and freed >= memory_to_free:
            return freed
        return freed + super().partially_unload(device_to, max(memory_to_free - freed, 0), *args, **kwargs)

    def detach(self, *args, **kwargs):
        self.release_fast_path()
        return super().detach(*args, **kwargs)


_PATCHER_CLASSES: dict[type, type] = {}


def patcher_class() -> type:
    """The host's current patcher with the fast-path mix-in: ``CoreModelPatcher`` where ComfyUI has it
    (the weight-streaming patcher of newer cores), the classic ``ModelPatcher`` otherwise. Read at
    call time, so that whatever the running ComfyUI offers is used."""
    import comfy.model_patcher as mp

    base = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
    cls = _PATCHER_CLASSES.get(base)
    if cls is None:
        cls = _PATCHER_CLASSES[base] = type("Talker" + base.__name__, (_FastPathOwner, base), {})
    return cls


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


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """The warnings talker_core logs while inside (truncated media, cut driving input, clipped audio...).

    They still go to the console; the list lets a node repeat them in its summary on the canvas.
    """
    handler = _Collect()
    logger = logging.getLogger("talker_core")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


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
