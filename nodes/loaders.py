"""Loader nodes: the four released model files → models managed by ComfyUI.

Files live in ``models/talker_t2av`` (or any folder registered as ``talker_t2av`` in
``extra_model_paths.yaml``) in the release layout of the component registry
(:mod:`talker_core.weights.components`: names, file endings offered, download sources).
Names are resolved inside those folders by :func:`talker_core.weights.loaders.resolve_in_folder`
(no ``..``, no absolute paths, no symbolic link out of the folder).

Nothing is downloaded unless a loader's ``download_if_missing`` switch is on.
"""

from __future__ import annotations

from comfy_api.latest import io

from . import host
from .compat import schema_extras
from .sockets import (
    CATEGORY,
    SEARCH_ALIASES,
    TalkerCodec,
    TalkerFaceModel,
    TalkerModel,
    TalkerSpeakerEncoder,
)


def _release_name(kind: str) -> str:
    """Where the release puts a component, relative to the model folder."""
    from talker_core.weights.components import component

    return component(kind).release


def _has_weights(kind: str, folder: str) -> bool:
    """A model folder counts when it holds its weights file."""
    from pathlib import Path

    from talker_core.weights.components import component

    return (Path(folder) / (component(kind).weights_file or "")).is_file()


def _precision_input(auto_text: str) -> io.Combo.Input:
    return io.Combo.Input(
        "precision",
        options=host.PRECISIONS,
        default="auto",
        tooltip=f"Weight precision. auto: {auto_text}. fp16/bf16 halve memory on a GPU; keep fp32 on the CPU.",
    )


def _device_input() -> io.Combo.Input:
    return io.Combo.Input(
        "device",
        options=host.DEVICES,
        default="auto",
        tooltip="Where the model runs. auto/gpu: ComfyUI's device (it moves the model back to the CPU "
        "when other models need the memory); cpu: always the CPU.",
    )


def _download_input() -> io.Boolean.Input:
    return io.Boolean.Input(
        "download_if_missing",
        default=False,
        tooltip="If the release file is missing, fetch it from its public source (Hugging Face) into the "
        "talker_t2av model folder, with progress. Off: never download; a missing file is an error "
        "that says what to do.",
    )


def _find(kind: str, name: str, folder: bool, input_name: str):
    path = host.resolve_model(name, input_name, folder=folder)
    if folder and path is not None and not _has_weights(kind, path):
        return None
    return path


def _locate(kind: str, name: str, download_if_missing: bool, folder: bool, what: str, input_name: str) -> str:
    release = _release_name(kind)
    path = _find(kind, name, folder, input_name)
    if path is None and download_if_missing and name == release:
        host.download(kind)
        path = _find(kind, name, folder, input_name)
    if path is None:
        raise host.missing_model_error(name, what, release)
    return path


def _check_choice(kind: str, name: str, download_if_missing: bool, folder: bool, what: str, input_name: str):
    """validate_inputs helper: True, or the message ComfyUI shows before the run starts."""
    try:
        if _find(kind, name, folder, input_name) is not None:
            return True
    except ValueError as exc:
        return str(exc)
    if download_if_missing and name == _release_name(kind):
        return True
    return str(host.missing_model_error(name, what, _release_name(kind)))


class TalkerLoadModel(io.ComfyNode):
    """Backbone (Qwen3), speech/motion DiT heads, stop head and tokenizer."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from talker_core.models.talker import ATTN_HELP, ATTN_IMPLEMENTATIONS
        from talker_core.weights.components import component

        talker = component("talker")
        release = talker.release
        return io.Schema(
            node_id="TalkerLoadModel",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadModel"]),
            display_name="Load Model",
            category=f"{CATEGORY}/loaders",
            description=f"Loads the Talker-T2AV backbone and heads (a folder with {talker.weights_file} and the "
            "tokenizer) from models/talker_t2av.",
            inputs=[
                io.Combo.Input(
                    "model_folder",
                    options=[release] + [f for f in host.backbone_folders() if f != release],
                    default=release,
                    tooltip=f"Sub-folder of models/talker_t2av holding {talker.weights_file} and the tokenizer files.",
                ),
                _precision_input("bf16 on a GPU that supports it, else fp32"),
                io.Combo.Input(
                    "attention",
                    options=list(ATTN_IMPLEMENTATIONS),
                    default=ATTN_IMPLEMENTATIONS[0],
                    tooltip="Backbone attention kernel. " + "; ".join(f"{k}: {v}" for k, v in ATTN_HELP.items()) + ".",
                ),
                _device_input(),
                _download_input(),
            ],
            outputs=[TalkerModel.Output("model", display_name="model", tooltip="The Talker-T2AV generator.")],
        )

    @classmethod
    def validate_inputs(cls, model_folder, attention, download_if_missing):
        from talker_core.models.talker import ATTN_IMPLEMENTATIONS

        if attention not in ATTN_IMPLEMENTATIONS:
            return f"attention must be one of {list(ATTN_IMPLEMENTATIONS)}, got {attention!r}"
        return _check_choice(
            "talker", model_folder, download_if_missing, True, "Talker-T2AV model folder", "model_folder"
        )

    @classmethod
    def execute(cls, model_folder, precision, attention, device, download_if_missing) -> io.NodeOutput:
        from talker_core.weights.loaders import load_talker

        host.check_attention(attention)
        path = _locate("talker", model_folder, download_if_missing, True, "Talker-T2AV model folder", "model_folder")
        dev = host.load_device(device)
        dtype = host.resolve_dtype(precision, dev, auto_half=True)
        bundle = load_talker(path, device=host.offload_device(dev), dtype=dtype, attn_implementation=attention)
        return io.NodeOutput(host.manage("talker", bundle.model, bundle, dev, dtype, path))


class _SingleFileLoader(io.ComfyNode):
    KIND = ""
    WHAT = ""

    @classmethod
    def _file_input(cls, what: str) -> io.Combo.Input:
        """The file combo; the tooltip names the release file and its conversion (registry)."""
        from talker_core.weights.components import component

        c = component(cls.KIND)
        return io.Combo.Input(
            "file",
            options=host.weight_files(cls.KIND),
            default=c.release,
            tooltip=f"{what} (the release's {c.release}, or its safetensors conversion {c.converted}).",
        )

    @classmethod
    def validate_inputs(cls, file, download_if_missing):
        return _check_choice(cls.KIND, file, download_if_missing, False, cls.WHAT, "file")

    @classmethod
    def _load(cls, loader, file, precision, device, download_if_missing):
        path = _locate(cls.KIND, file, download_if_missing, False, cls.WHAT, "file")
        dev = host.load_device(device)
        dtype = host.resolve_dtype(precision, dev, auto_half=False)
        module = loader(path, device=host.offload_device(dev), dtype=dtype)
        return io.NodeOutput(host.manage(cls.KIND, module, module, dev, dtype, path))


class TalkerLoadCodec(_SingleFileLoader):
    KIND, WHAT = "whisperx_vae", "WhisperX-VAE checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadCodec",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadCodec"]),
            display_name="Load Speech Codec (WhisperX-VAE)",
            category=f"{CATEGORY}/loaders",
            description="Loads the WhisperX-VAE speech codec: audio ↔ 25 Hz speech latents, 24 kHz output.",
            inputs=[
                cls._file_input("WhisperX-VAE checkpoint"),
                _precision_input("fp32"),
                _device_input(),
                _download_input(),
            ],
            outputs=[TalkerCodec.Output("codec", display_name="codec", tooltip="The speech codec.")],
        )

    @classmethod
    def execute(cls, file, precision, device, download_if_missing) -> io.NodeOutput:
        from talker_core.weights.loaders import load_whisperx_vae

        return cls._load(load_whisperx_vae, file, precision, device, download_if_missing)


class TalkerLoadFaceModel(_SingleFileLoader):
    KIND, WHAT = "liax", "LIA-X checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadFaceModel",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadFaceModel"]),
            display_name="Load Face Model (LIA-X)",
            category=f"{CATEGORY}/loaders",
            description="Loads LIA-X, which encodes faces and motion and renders 512×512 frames from motion.",
            inputs=[
                cls._file_input("LIA-X generator weights"),
                _precision_input("fp32"),
                _device_input(),
                _download_input(),
            ],
            outputs=[
                TalkerFaceModel.Output(
                    "face_model", display_name="face_model", tooltip="The LIA-X face encoder and renderer."
                )
            ],
        )

    @classmethod
    def execute(cls, file, precision, device, download_if_missing) -> io.NodeOutput:
        from talker_core.weights.loaders import load_liax

        return cls._load(load_liax, file, precision, device, download_if_missing)


class TalkerLoadSpeakerEncoder(_SingleFileLoader):
    KIND, WHAT = "speaker", "speaker encoder checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadSpeakerEncoder",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadSpeakerEncoder"]),
            display_name="Load Speaker Encoder (WavLM)",
            category=f"{CATEGORY}/loaders",
            description="Loads the WavLM-Large + ECAPA-TDNN speaker encoder (the voice's 256-d timbre embedding).",
            inputs=[
                cls._file_input("Speaker-verification checkpoint (WavLM-Large + ECAPA-TDNN)"),
                _precision_input("fp32"),
                _device_input(),
                _download_input(),
            ],
            outputs=[
                TalkerSpeakerEncoder.Output(
                    "speaker_encoder", display_name="speaker_encoder", tooltip="The speaker encoder."
                )
            ],
        )

    @classmethod
    def execute(cls, file, precision, device, download_if_missing) -> io.NodeOutput:
        from talker_core.weights.loaders import load_speaker_encoder

        return cls._load(load_speaker_encoder, file, precision, device, download_if_missing)
