"""The component registry: every fact about the four model files, written once.

One :class:`Component` per kind, in :data:`COMPONENTS`; the loaders, the converter,
the downloader, the debug model set, ``check-models``, the command line and the
ComfyUI loader nodes' file lists all read it (``tests/test_one_source.py`` checks
that no copy of these names reappears elsewhere):

| kind             | published (in the models folder)        | converted sidecar                    | public source (Hugging Face)                                  |
|------------------|-----------------------------------------|--------------------------------------|---------------------------------------------------------------|
| ``talker``       | ``talker-t2av/`` (model.safetensors + tokenizer files) | the folder's model.safetensors, with ``talker_config`` | ``HKUSTAudio/Talker-T2AV``: ``talker-t2av/*``  |
| ``whisperx_vae`` | ``whisperx-vae/model.ckpt`` (Lightning pickle) | ``whisperx-vae/model.safetensors`` | ``HKUSTAudio/Talker-T2AV``: ``whisperx-vae/model.ckpt``        |
| ``liax``         | ``lia-x.pt`` (state-dict pickle)        | ``lia-x.safetensors``                | ``YaohuiW/LIA-X``: ``lia-x.pt``                                |
| ``speaker``      | ``wavlm_large_finetune.pth`` (``{"model": sd}``) | ``wavlm_large_finetune.safetensors`` | ``yfyeung/wavlm-large-speaker-verification``: ``wavlm-large.pt`` (a mirror of Microsoft UniSpeech's WavLM-Large + ECAPA-TDNN speaker-verification checkpoint) |

The debug model set (:mod:`talker_core.weights.debug_models`) uses the published
names and formats. The cheap content test that tells a file's kind from its header
(:func:`talker_core.weights.loaders.sniff_kind`) reads each component's key
signature (:data:`talker_core.checkpoint.COMPONENT_KEYS`, which strict loading
also uses) and, where the header cannot tell, its :attr:`Component.name_hints`.

Code is named here by ``"module:attribute"`` and imported on first use, so reading
the registry imports nothing (``install.py`` reads it before torch may be installed).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["HubFile", "Component", "COMPONENTS", "KINDS", "component", "DOWNLOAD_COMMAND"]

#: The command that fetches every released file into a models folder.
DOWNLOAD_COMMAND = "python -m talker_core download --models {models_dir}"


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class HubFile:
    """Where a component is published on the Hugging Face Hub; sizes and SHA-256 are the hub's listing."""

    repo_id: str
    remote: str  # path in the repository; may be a glob ("folder/*")

    @property
    def is_glob(self) -> bool:
        return any(c in self.remote for c in "*?[")


@dataclass(frozen=True)
class Component:
    """One model file (or folder) of the release and the code that reads it."""

    kind: str
    title: str  # what it is, for messages ("the LIA-X face generator")
    release: str  # path under the models folder as published (a folder for the talker)
    converted: str  # where ``convert`` puts the safetensors form (the talker's is its own file)
    published_format: str  # "safetensors" or "pickle" (read with weights_only=True + safe_pickle)
    source: HubFile
    key_map_ref: str  # the KeyMap, living with its network
    module_ref: str  # the module class the file loads into
    reader_ref: str  # (path) -> (state dict under the published names, config)
    loader_ref: str  # (path, device, dtype, strict) -> ready model
    debug_writer_ref: str  # (path, seed) -> writes the tiny debug file under the release name
    expect: str  # the keys a file of this kind must have (for "this is another component" errors)
    name_hints: tuple[str, ...] = ()  # file-name fragments, when the header cannot tell
    extensions: tuple[str, ...] = ()  # file endings offered by the loader node's list
    weights_file: Optional[str] = None  # for a folder component: its weights file
    folder_files: tuple[str, ...] = ()  # for a folder component: the files it must hold
    holder: str = ""  # class name the ComfyUI model patcher logs ("Requested to load ...")

    @property
    def is_folder(self) -> bool:
        return self.weights_file is not None

    @property
    def description(self) -> str:
        """``title (release path)``, as messages name it."""
        where = f"{self.release}/{self.weights_file}" if self.is_folder else self.release
        return f"{self.title} ({where})"

    @property
    def file_names(self) -> tuple[str, ...]:
        """The names a folder given for this component is searched for, preferred first (sidecar, published)."""
        if self.is_folder:
            assert self.weights_file is not None
            return (self.weights_file,)
        return (self.converted.rsplit("/", 1)[-1], self.release.rsplit("/", 1)[-1])

    @property
    def signature(self) -> tuple[str, ...]:
        """Published key patterns that mark a tensor as this component's (strict loading and sniffing)."""
        from talker_core.checkpoint import COMPONENT_KEYS

        return tuple(COMPONENT_KEYS[self.kind])

    def key_map(self):
        return _resolve(self.key_map_ref)

    def module_class(self):
        return _resolve(self.module_ref)

    def reader(self):
        return _resolve(self.reader_ref)

    def loader(self):
        return _resolve(self.loader_ref)

    def debug_writer(self):
        return _resolve(self.debug_writer_ref)


_LOADERS = "talker_core.weights.loaders"
_DEBUG = "talker_core.weights.debug_models"
_RELEASE_REPO = "HKUSTAudio/Talker-T2AV"

COMPONENTS: dict[str, Component] = {
    c.kind: c
    for c in (
        Component(
            kind="talker",
            title="the Talker-T2AV backbone+heads file",
            release="talker-t2av",
            converted="talker-t2av",
            published_format="safetensors",
            source=HubFile(_RELEASE_REPO, "talker-t2av/*"),
            key_map_ref="talker_core.models.talker:TALKER_KEYS",
            module_ref="talker_core.models.talker:TalkerModel",
            reader_ref=f"{_LOADERS}:_read_talker",
            loader_ref=f"{_LOADERS}:load_talker",
            debug_writer_ref=f"{_DEBUG}:_write_talker",
            expect="llm.model.embed_tokens.weight, speech_cfm.estimator.*",
            weights_file="model.safetensors",
            folder_files=("model.safetensors", "tokenizer.json"),
            holder="TalkerT2AV",
        ),
        Component(
            kind="whisperx_vae",
            title="the WhisperX-VAE codec checkpoint",
            release="whisperx-vae/model.ckpt",
            converted="whisperx-vae/model.safetensors",
            published_format="pickle",
            source=HubFile(_RELEASE_REPO, "whisperx-vae/model.ckpt"),
            key_map_ref="talker_core.models.whisperx_vae:WHISPERX_VAE_KEYS",
            module_ref="talker_core.models.whisperx_vae:WhisperXVAE",
            reader_ref=f"{_LOADERS}:_read_whisperx",
            loader_ref=f"{_LOADERS}:load_whisperx_vae",
            debug_writer_ref=f"{_DEBUG}:_write_whisperx",
            expect="CodecEnc.*, semantic_model.encoder.*",
            name_hints=("whisperx", "vae", "codec"),
            extensions=(".ckpt", ".safetensors"),
            holder="TalkerWhisperXVAE",
        ),
        Component(
            kind="liax",
            title="the LIA-X face generator",
            release="lia-x.pt",
            converted="lia-x.safetensors",
            published_format="pickle",
            source=HubFile("YaohuiW/LIA-X", "lia-x.pt"),
            key_map_ref="talker_core.models.liax:LIAX_KEYS",
            module_ref="talker_core.models.liax:LiaXGenerator",
            reader_ref=f"{_LOADERS}:_read_liax",
            loader_ref=f"{_LOADERS}:load_liax",
            debug_writer_ref=f"{_DEBUG}:_write_liax",
            expect="enc.enc_2r.*, dec.direction.weight",
            name_hints=("lia-x", "lia_x", "liax"),
            extensions=(".pt", ".pth", ".safetensors"),
            holder="TalkerLiaX",
        ),
        Component(
            kind="speaker",
            title="the WavLM + ECAPA-TDNN speaker encoder",
            release="wavlm_large_finetune.pth",
            converted="wavlm_large_finetune.safetensors",
            published_format="pickle",
            source=HubFile("yfyeung/wavlm-large-speaker-verification", "wavlm-large.pt"),
            key_map_ref="talker_core.models.speaker_encoder:SPEAKER_KEYS",
            module_ref="talker_core.models.speaker_encoder:SpeakerEncoder",
            reader_ref=f"{_LOADERS}:_read_speaker",
            loader_ref=f"{_LOADERS}:load_speaker_encoder",
            debug_writer_ref=f"{_DEBUG}:_write_speaker",
            expect="feature_extract.model.*, layer1.conv.weight",
            name_hints=("wavlm", "ecapa", "speaker"),
            extensions=(".pth", ".pt", ".safetensors"),
            holder="TalkerSpeakerEncoder",
        ),
    )
}

#: The component kinds, in the order files are listed and loaded.
KINDS: tuple[str, ...] = tuple(COMPONENTS)


def component(kind: str) -> Component:
    """The registry entry of ``kind``; ``ValueError`` naming the known kinds otherwise."""
    try:
        return COMPONENTS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}") from None
