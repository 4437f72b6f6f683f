"""Loader nodes: the four released model files → models managed by ComfyUI.

Files live in ``models/talker_t2av`` (or any folder registered as ``talker_t2av`` in
``extra_model_paths.yaml``) in the release layout::

    talker_t2av/
      talker-t2av/            model.safetensors + tokenizer files (backbone and heads)
      whisperx-vae/model.ckpt speech codec
      lia-x.pt                face renderer
      wavlm_large_finetune.pth  speaker encoder

Nothing is downloaded unless a loader's ``download_if_missing`` switch is on.
"""

from __future__ import annotations

import os

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
    from talker_core.weights.loaders import MODEL_LAYOUT

    return MODEL_LAYOUT[kind]


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


def _locate(kind: str, name: str, download_if_missing: bool, folder: bool, what: str) -> str:
    release = _release_name(kind)
    path = host.find_model_path(name, folder=folder)
    if folder and path is not None and not os.path.isfile(os.path.join(path, "model.safetensors")):
        path = None
    if path is None and download_if_missing and name == release:
        host.download(kind)
        path = host.find_model_path(name, folder=folder)
    if path is None:
        raise host.missing_model_error(name, what, release)
    return path


def _check_choice(kind: str, name: str, download_if_missing: bool, folder: bool, what: str):
    """validate_inputs helper: True, or the message ComfyUI shows before the run starts."""
    try:
        if host.find_model_path(name, folder=folder) is not None:
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
        release = _release_name("talker")
        return io.Schema(
            node_id="TalkerLoadModel",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadModel"]),
            display_name="Load Model",
            category=f"{CATEGORY}/loaders",
            description="Loads the Talker-T2AV backbone and heads (a folder with model.safetensors and the "
            "tokenizer) from models/talker_t2av.",
            inputs=[
                io.Combo.Input(
                    "model_folder",
                    options=[release] + [f for f in host.backbone_folders() if f != release],
                    default=release,
                    tooltip="Sub-folder of models/talker_t2av holding model.safetensors and the tokenizer files.",
                ),
                _precision_input("bf16 on a GPU that supports it, else fp32"),
                io.Combo.Input(
                    "attention",
                    options=host.ATTENTIONS,
                    default="sdpa",
                    tooltip="Backbone attention kernel. sdpa: PyTorch's fused attention (default); eager: plain "
                    "matmuls (debugging); flash_attention_2: needs the flash-attn package.",
                ),
                _device_input(),
                _download_input(),
            ],
            outputs=[TalkerModel.Output("model", display_name="model", tooltip="The Talker-T2AV generator.")],
        )

    @classmethod
    def validate_inputs(cls, model_folder, attention, download_if_missing):
        if attention not in host.ATTENTIONS:
            return f"attention must be one of {host.ATTENTIONS}"
        return _check_choice("talker", model_folder, download_if_missing, True, "Talker-T2AV model folder")

    @classmethod
    def execute(cls, model_folder, precision, attention, device, download_if_missing) -> io.NodeOutput:
        from talker_core.weights.loaders import load_talker

        host.check_attention(attention)
        path = _locate("talker", model_folder, download_if_missing, True, "Talker-T2AV model folder")
        dev = host.load_device(device)
        dtype = host.resolve_dtype(precision, dev, auto_half=True)
        bundle = load_talker(path, device=host.offload_device(dev), dtype=dtype, attn_implementation=attention)
        return io.NodeOutput(host.manage("talker", bundle.model, bundle, dev, dtype, path))


class _SingleFileLoader(io.ComfyNode):
    KIND = ""
    WHAT = ""
    EXTENSIONS: tuple[str, ...] = ()

    @classmethod
    def _file_input(cls, tooltip: str) -> io.Combo.Input:
        release = _release_name(cls.KIND)
        return io.Combo.Input(
            "file", options=host.weight_files(cls.KIND, release, cls.EXTENSIONS), default=release, tooltip=tooltip
        )

    @classmethod
    def validate_inputs(cls, file, download_if_missing):
        return _check_choice(cls.KIND, file, download_if_missing, False, cls.WHAT)

    @classmethod
    def _load(cls, loader, file, precision, device, download_if_missing):
        path = _locate(cls.KIND, file, download_if_missing, False, cls.WHAT)
        dev = host.load_device(device)
        dtype = host.resolve_dtype(precision, dev, auto_half=False)
        module = loader(path, device=host.offload_device(dev), dtype=dtype)
        return io.NodeOutput(host.manage(cls.KIND, module, module, dev, dtype, path))


class TalkerLoadCodec(_SingleFileLoader):
    KIND, WHAT, EXTENSIONS = "whisperx_vae", "WhisperX-VAE checkpoint", (".ckpt", ".safetensors")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadCodec",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadCodec"]),
            display_name="Load Speech Codec (WhisperX-VAE)",
            category=f"{CATEGORY}/loaders",
            description="Loads the WhisperX-VAE speech codec: audio ↔ 25 Hz speech latents, 24 kHz output.",
            inputs=[
                cls._file_input(
                    "WhisperX-VAE checkpoint (the release's whisperx-vae/model.ckpt, or its safetensors conversion)."
                ),
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
    KIND, WHAT, EXTENSIONS = "liax", "LIA-X checkpoint", (".pt", ".pth", ".safetensors")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadFaceModel",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadFaceModel"]),
            display_name="Load Face Model (LIA-X)",
            category=f"{CATEGORY}/loaders",
            description="Loads LIA-X, which encodes faces and motion and renders 512×512 frames from motion.",
            inputs=[
                cls._file_input(
                    "LIA-X generator weights (lia-x.pt from the LIA-X release, or its safetensors conversion)."
                ),
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
    KIND, WHAT, EXTENSIONS = "speaker", "speaker encoder checkpoint", (".pth", ".pt", ".safetensors")

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerLoadSpeakerEncoder",
            **schema_extras(search_aliases=SEARCH_ALIASES["TalkerLoadSpeakerEncoder"]),
            display_name="Load Speaker Encoder (WavLM)",
            category=f"{CATEGORY}/loaders",
            description="Loads the WavLM-Large + ECAPA-TDNN speaker encoder (the voice's 256-d timbre embedding).",
            inputs=[
                cls._file_input(
                    "Speaker-verification checkpoint (wavlm_large_finetune.pth, or its safetensors conversion)."
                ),
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
