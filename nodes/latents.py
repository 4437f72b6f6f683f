"""Save and load speech latents and motion codes as .safetensors files.

Keep a take's motion and re-roll its voice (load the motion into the sampler's
``forced_motion``: V2A), or keep its speech and re-roll the face (``forced_speech``:
A2V). Files are written to ComfyUI's output folder and listed from the input and
output folders (the latter marked ``[output]``), recognised by their metadata:

- tensor ``latents`` (frames, 32) for speech, ``codes`` (frames, 40) for motion, float32;
- metadata ``talker_t2av`` = ``speech`` | ``motion``, ``fps`` = ``25``, and (unless ComfyUI
  runs with ``--disable-metadata``) the ``prompt`` and ``workflow`` that made it.
"""

from __future__ import annotations

import json
import logging
import os
import struct

import folder_paths
from comfy_api.latest import io

from .compat import schema_extras
from .plot import summary_ui
from .sockets import CATEGORY, SEARCH_ALIASES, TalkerMotion, TalkerSpeech

log = logging.getLogger(__name__)

FORMAT_KEY = "talker_t2av"
TENSOR_NAME = {"speech": "latents", "motion": "codes"}


def read_kind(path: str) -> str | None:
    """The ``talker_t2av`` metadata value of a .safetensors file (header only), or None."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000:
                return None
            header = json.loads(f.read(size))
        return (header.get("__metadata__") or {}).get(FORMAT_KEY)
    except (OSError, ValueError, struct.error):
        return None


def list_files(kind: str) -> list[str]:
    """Latents files of ``kind`` in the input folder, then the output folder (annotated ``[output]``)."""
    found = []
    for base, tag in ((folder_paths.get_input_directory(), ""), (folder_paths.get_output_directory(), " [output]")):
        if not os.path.isdir(base):
            continue
        names = []
        for dirpath, subdirs, files in os.walk(base):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            for name in files:
                if name.endswith(".safetensors"):
                    full = os.path.join(dirpath, name)
                    if read_kind(full) == kind:
                        names.append(os.path.relpath(full, base).replace(os.sep, "/") + tag)
        found += sorted(names)
    return found


def _metadata(kind: str, frames: int, prompt, extra_pnginfo) -> dict:
    meta = {FORMAT_KEY: kind, "fps": "25", "frames": str(frames)}
    try:
        from comfy.cli_args import args

        disable = bool(getattr(args, "disable_metadata", False))
    except ImportError:
        disable = False
    if not disable:
        if prompt is not None:
            meta["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            meta[key] = json.dumps(value)
    return meta


def save(kind: str, tensor, filename_prefix: str, prompt, extra_pnginfo) -> tuple[str, str]:
    from safetensors.torch import save as save_bytes

    out_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
    data = {TENSOR_NAME[kind]: tensor.detach().float().cpu().contiguous()}
    meta = _metadata(kind, int(tensor.shape[0]), prompt, extra_pnginfo)
    while os.path.lexists(os.path.join(folder, f"{name}_{counter:05}_.safetensors")):
        counter += 1  # never replace a file, whatever the counter found
    file = f"{name}_{counter:05}_.safetensors"
    target = os.path.join(folder, file)
    _refuse_input_target(target)
    # Written under a hidden temporary name and renamed when complete: a failed or cancelled save
    # leaves nothing. A plain open() gives the file the mode ComfyUI's own outputs get (the umask's),
    # where safetensors' save_file would make it 0600.
    tmp = os.path.join(folder, f".{file}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(save_bytes(data, metadata=meta))
        if os.path.lexists(target):  # pragma: no cover - a race with another writer
            raise FileExistsError(f"{target} appeared while saving; run again")
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return file, subfolder


def _refuse_input_target(target: str) -> None:
    """Nodes never write into ComfyUI's input folder (where the files they read live)."""
    inputs = os.path.realpath(folder_paths.get_input_directory())
    real = os.path.realpath(target)
    if os.path.commonpath([inputs, real]) == inputs:
        raise ValueError(
            f"the save path {target} lies in ComfyUI's input folder ({inputs}); nodes never write there, so files "
            "you load are never replaced. Choose a filename_prefix under the output folder"
        )


def load(kind: str, name: str):
    from safetensors import safe_open

    path = folder_paths.get_annotated_filepath(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"latents file {name!r} not found ({path})")
    found = read_kind(path)
    if found != kind:
        raise ValueError(f"{name} holds {found or 'no Talker-T2AV data'}, not {kind}; pick a {kind} file")
    with safe_open(path, framework="pt") as f:
        if TENSOR_NAME[kind] not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
            raise ValueError(f"{name} has no {TENSOR_NAME[kind]!r} tensor; it was not written by this pack")
        return f.get_tensor(TENSOR_NAME[kind]).float()


def _prefix_input(default: str) -> io.String.Input:
    return io.String.Input(
        "filename_prefix",
        default=default,
        tooltip="Path under ComfyUI's output folder; a counter and .safetensors are appended.",
    )


def empty_choice(kind: str) -> str:
    """The one entry of a Load Latents list while no file of ``kind`` exists (a fresh install)."""
    return f"(no {kind} latents saved yet)"


def _file_input(kind: str) -> io.Combo.Input:
    files = list_files(kind)
    return io.Combo.Input(
        "file",
        options=files or [empty_choice(kind)],
        default=files[0] if files else empty_choice(kind),
        tooltip=f"A {kind} file from the input folder, or one saved earlier from the output folder (marked [output]). "
        f"Files appear here after Save {kind.capitalize()} Latents has run (refresh the page or press R).",
    )


def _check_file(kind: str, file: str):
    if file == empty_choice(kind):
        return (
            f"no {kind} latents file yet: run a workflow with Save {kind.capitalize()} Latents first (it writes "
            f"to ComfyUI's output folder), then refresh (R) and pick the file here"
        )
    if not folder_paths.exists_annotated_filepath(file):
        return f"latents file not found: {file}"
    return True


def _fingerprint(file: str):
    path = folder_paths.get_annotated_filepath(file)
    return os.path.getmtime(path) if os.path.exists(path) else file


class TalkerSaveSpeechLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerSaveSpeechLatents",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerSaveSpeechLatents"]),
            display_name="Save Speech Latents",
            category=f"{CATEGORY}/latents",
            description="Saves speech latents to output/ as .safetensors (reload with Load Speech Latents).",
            inputs=[TalkerSpeech.Input("speech", tooltip="Speech latents to keep."), _prefix_input("talker/speech")],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, speech, filename_prefix) -> io.NodeOutput:
        if speech is None:
            raise ValueError("speech is empty: nothing to save")
        file, subfolder = save("speech", speech.latents, filename_prefix, cls.hidden.prompt, cls.hidden.extra_pnginfo)
        shown = f"{subfolder}/{file}" if subfolder else file
        return io.NodeOutput(ui=summary_ui(f"saved {shown} ({speech.seconds:.2f} s)"))


class TalkerSaveMotionLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerSaveMotionLatents",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerSaveMotionLatents"]),
            display_name="Save Motion Latents",
            category=f"{CATEGORY}/latents",
            description="Saves motion codes to output/ as .safetensors (reload with Load Motion Latents).",
            inputs=[TalkerMotion.Input("motion", tooltip="Motion codes to keep."), _prefix_input("talker/motion")],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion, filename_prefix) -> io.NodeOutput:
        if motion is None:
            raise ValueError("motion is empty (the sampler ran in speech-only mode): nothing to save")
        file, subfolder = save("motion", motion.codes, filename_prefix, cls.hidden.prompt, cls.hidden.extra_pnginfo)
        shown = f"{subfolder}/{file}" if subfolder else file
        return io.NodeOutput(ui=summary_ui(f"saved {shown} ({motion.seconds:.2f} s)"))


class TalkerLoadSpeechLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadSpeechLatents",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadSpeechLatents"]),
            display_name="Load Speech Latents",
            category=f"{CATEGORY}/latents",
            description="Loads speech latents saved by Save Speech Latents (input/ or output/).",
            inputs=[_file_input("speech")],
            outputs=[TalkerSpeech.Output("speech", display_name="speech", tooltip="Speech latents at 25 Hz.")],
        )

    @classmethod
    def validate_inputs(cls, file):
        return _check_file("speech", file)

    @classmethod
    def fingerprint_inputs(cls, file):
        return _fingerprint(file)

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        from talker_core.types import SpeechLatents

        return io.NodeOutput(SpeechLatents(load("speech", file)))


class TalkerLoadMotionLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadMotionLatents",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadMotionLatents"]),
            display_name="Load Motion Latents",
            category=f"{CATEGORY}/latents",
            description="Loads motion codes saved by Save Motion Latents (input/ or output/).",
            inputs=[_file_input("motion")],
            outputs=[TalkerMotion.Output("motion", display_name="motion", tooltip="Motion codes at 25 Hz.")],
        )

    @classmethod
    def validate_inputs(cls, file):
        return _check_file("motion", file)

    @classmethod
    def fingerprint_inputs(cls, file):
        return _fingerprint(file)

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        from talker_core.types import MotionCodes

        return io.NodeOutput(MotionCodes(load("motion", file)))
