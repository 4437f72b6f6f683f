"""The four published model files → ready models, plus a converter to safetensors.

One loader per published file (spec: MODEL.md §2), each accepting the file as
published or its safetensors conversion, judged by content rather than by name.
What each file is called, where its sidecar goes, its key map and which reader
and loader handle it is written once, in :mod:`talker_core.weights.components`.

A converted file holds the tensors under their published names (known-unused
entries dropped) and, in the safetensors metadata, ``talker_kind`` (one of the
kinds above) and ``talker_config`` (the component config as JSON, the
``to_dict()`` of its dataclass). :func:`find_models` prefers a converted sidecar
over the pickle beside it.

Pickles are read with ``torch.load(weights_only=True)`` only; the Lightning
checkpoint's OmegaConf config is rebuilt by the inert stand-ins of
:mod:`talker_core.safe_pickle`. Every key is checked by
:func:`talker_core.checkpoint.load_strict`: missing keys, wrong shapes or dtypes
and keys of another component are errors; a key no list names is reported in one
log line and skipped, or is an error under the strict switch (``strict=True`` or
``TALKER_STRICT_LOADING=1``). The talker folder's ``config.json`` (when
present) is checked against the sizes built (:func:`check_backbone_config`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

import torch

from talker_core.checkpoint import (
    COMPONENT_KEYS,
    CheckpointError,
    KeyMap,
    component_of_key,
    describe_keys,
    load_strict,
    read_state_file,
)
from talker_core.safe_pickle import LIGHTNING_GLOBALS, to_plain
from talker_core.weights import components as _components
from talker_core.weights.components import COMPONENTS, component

__all__ = [
    "KINDS",
    "MODEL_LAYOUT",
    "CONVERTED_LAYOUT",
    "DOWNLOAD_COMMAND",
    "TalkerBundle",
    "load_talker",
    "load_whisperx_vae",
    "load_liax",
    "load_speaker_encoder",
    "load_component",
    "convert_to_safetensors",
    "identify",
    "sniff_kind",
    "resolve_in_folder",
    "find_models",
    "missing_models_message",
    "check_backbone_config",
    "BACKBONE_CONFIG",
    "read_component",
    "key_map",
    "build_module",
]

log = logging.getLogger(__name__)

KINDS = _components.KINDS

#: The documented folder layout: kind → path relative to the models folder.
MODEL_LAYOUT: dict[str, str] = {c.kind: c.release for c in COMPONENTS.values()}

#: Where ``convert`` puts the safetensors sidecar of each pickle (the talker file is safetensors already).
CONVERTED_LAYOUT: dict[str, str] = {c.kind: c.converted for c in COMPONENTS.values()}

DOWNLOAD_COMMAND = _components.DOWNLOAD_COMMAND

_TALKER = COMPONENTS["talker"]
_TALKER_WEIGHTS = _TALKER.weights_file or ""
#: The backbone's config file in the talker folder (Qwen3 ``config.json`` field names).
BACKBONE_CONFIG = "config.json"

_META_KIND = "talker_kind"
_META_CONFIG = "talker_config"


# --------------------------------------------------------------------------- paths


def resolve_in_folder(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``root/name`` as a resolved path, refusing any name that leaves ``root``.

    Refused (``ValueError``): empty names, absolute paths or drive-qualified
    names, ``..`` components, and names that resolve outside ``root`` through a
    symbolic link. The target need not exist.
    """
    text = os.fspath(name)
    if not text or not text.strip():
        raise ValueError(f"Empty model file name given for the folder {root}.")
    if "\x00" in text:
        raise ValueError(f"Model file name {text!r} contains a NUL character.")
    pure = Path(text)
    parts = re.split(r"[\\/]+", text)
    if pure.is_absolute() or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
        raise ValueError(
            f"Model file name {text!r} is an absolute path; give a name relative to the models folder {root}."
        )
    if ".." in parts:
        raise ValueError(f"Model file name {text!r} contains '..'; names must stay inside the models folder {root}.")
    root_resolved = Path(root).resolve()
    target = (root_resolved / text).resolve()
    try:
        target.relative_to(root_resolved)
    except ValueError:
        raise ValueError(
            f"Model file name {text!r} points outside the models folder {root} (to {target}, through a symbolic "
            "link); move the file into the folder instead."
        ) from None
    return target


def find_models(models_dir: str | os.PathLike) -> dict[str, Optional[Path]]:
    """kind → path of each model file present in ``models_dir`` (``None`` if absent).

    A folder component (the talker) is found when its folder holds every one of its
    ``folder_files`` (weights and tokenizer). For the pickles, a converted ``.safetensors``
    sidecar (:data:`CONVERTED_LAYOUT`) is preferred over the published file.
    """
    root = Path(models_dir)
    found: dict[str, Optional[Path]] = {}
    for c in COMPONENTS.values():
        found[c.kind] = None
        if c.is_folder:
            folder = root / c.release
            if all((folder / name).is_file() for name in c.folder_files):
                found[c.kind] = folder
            continue
        for rel in (c.converted, c.release):
            p = root / rel
            if p.is_file():
                found[c.kind] = p
                break
    return found


def missing_models_message(models_dir: str | os.PathLike, found: Optional[Mapping[str, Optional[Path]]] = None) -> str:
    """A message naming each missing model file and the command that fetches it ('' if none is missing)."""
    found = find_models(models_dir) if found is None else found
    root = Path(models_dir)
    missing = [k for k in KINDS if found.get(k) is None]
    if not missing:
        return ""
    if root.exists() and not root.is_dir():
        return (
            f"The models path {root} is a file, not a folder: give the folder that holds the model files "
            f"(layout in the README); fetch them with: {DOWNLOAD_COMMAND.format(models_dir='<folder>')}"
        )
    if not root.exists():
        lines = [f"The models folder {root} does not exist; it must hold:"]
    else:
        lines = [f"Model files missing in {root}:"]
    for kind in missing:
        c = COMPONENTS[kind]
        if c.is_folder:
            folder = root / c.release
            absent = [n for n in c.folder_files if not (folder / n).is_file()]
            lines.append(f"  - {folder}/ ({', '.join(absent)} not found): {c.description} plus its tokenizer")
        else:
            lines.append(f"  - {root / c.release}: {c.description}")
    lines.append("Fetch them with: " + DOWNLOAD_COMMAND.format(models_dir=_quote(str(root))))
    return "\n".join(lines)


def _quote(text: str) -> str:
    return f'"{text}"' if any(c.isspace() for c in text) else text


# --------------------------------------------------------------------------- identification


def identify(payload: Any, metadata: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Which component a loaded file holds, from its metadata or key names (``None`` if unknown)."""
    if metadata and metadata.get(_META_KIND) in KINDS:
        return metadata[_META_KIND]
    if not isinstance(payload, Mapping):
        return None
    for inner in ("state_dict", "model", "gen"):  # Lightning / UniSpeech / LIA training wrappers
        if isinstance(payload.get(inner), Mapping):
            payload = payload[inner]
            break
    counts = dict.fromkeys(COMPONENT_KEYS, 0)
    for k in payload:
        kind = component_of_key(str(k))
        if kind is not None:
            counts[kind] += 1
    best = max(counts, key=counts.__getitem__)  # most signature keys; ties in table order
    return best if counts[best] else None


_SNIFF_LIMIT = 64 * 1024 * 1024  # a header or data.pkl larger than this is not read


def sniff_kind(path: str | os.PathLike) -> Optional[str]:
    """Which component a weights file holds, read from its header only (no tensor data is read).

    safetensors: the header's metadata and key names (as :func:`identify`); a zip checkpoint
    (``torch.save``): the strings of its pickle, read opcode by opcode without unpickling, as
    key names (as :func:`identify`); anything else, or a file that cannot be read: a hint in
    the file name (the registry's ``name_hints``). ``None`` when nothing tells.
    """
    import struct
    import zipfile

    p = Path(path)
    kind: Optional[str] = None
    try:
        if p.suffix.lower() == ".safetensors":
            with open(p, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                if size <= _SNIFF_LIMIT:
                    header = json.loads(f.read(size))
                    meta = header.pop("__metadata__", None) or {}
                    kind = identify(header, meta)
        elif zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                pkl = next((i for i in z.infolist() if i.filename.endswith("/data.pkl")), None)
                if pkl is not None and pkl.file_size <= _SNIFF_LIMIT:
                    kind = identify(dict.fromkeys(_pickle_strings(z.read(pkl))))
    except (OSError, ValueError, struct.error, zipfile.BadZipFile):
        kind = None
    if kind is None:
        name = f"{p.parent.name}/{p.name}".lower()
        kind = next((c.kind for c in COMPONENTS.values() if any(h in name for h in c.name_hints)), None)
    return kind


def _pickle_strings(data: bytes) -> list[str]:
    """The text strings a pickle holds (its dict keys among them), read from the opcodes: nothing is executed."""
    import pickletools

    return [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str) and "UNICODE" in op.name]


def _names_release(kind: str):
    """Reader decorator: a file error that does not name the release file gets it (the networks' own checks
    describe the file, the registry knows its name and source)."""
    import functools

    c = COMPONENTS[kind]

    def wrap(read):
        @functools.wraps(read)
        def reader(path: Path):
            try:
                return read(path)
            except CheckpointError as exc:
                if c.release in str(exc):
                    raise
                raise CheckpointError(
                    f"{exc} (The release file is {c.release}, from {c.source.repo_id}; see README: Model files.)"
                ) from exc

        return reader

    return wrap


def _tensor_keys(payload: Any) -> list[str]:
    if isinstance(payload, Mapping):
        for inner in ("state_dict", "model", "gen"):
            if isinstance(payload.get(inner), Mapping):
                return [str(k) for k in payload[inner]]
        return [str(k) for k in payload]
    return []


def _refuse_other_kind(kind: str, payload: Any, metadata: Mapping[str, str], path: Path) -> None:
    other = identify(payload, metadata)
    if other is None or other == kind:
        return
    keys = _tensor_keys(payload)
    raise CheckpointError(
        f"{path} looks like {COMPONENTS[other].description}, not {COMPONENTS[kind].description}: missing the "
        "expected keys "
        f"(such as {COMPONENTS[kind].expect}); unexpected keys: {describe_keys(keys, 6)}. Check which file is selected for which "
        "loader."
    )


# --------------------------------------------------------------------------- common


def check_precision(device, dtype) -> None:
    """Refuse a precision that cannot work on ``device``, the device the model *runs* on (it would render NaN
    frames or fail mid-run). Front ends call it before loading; ComfyUI loads to the CPU and runs on the GPU.

    fp16 on the CPU: PyTorch's CPU kernels overflow in half precision and the face renderer returns NaN
    (a black video). bf16 on a CUDA GPU without bf16 support (before Ampere) is emulated or fails.
    """
    device = torch.device(device)
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError(
            "fp16 does not work on the CPU (half-precision CPU kernels overflow and the frames come out as NaN, "
            "a black video); use fp32, or bf16 to save memory"
        )
    if dtype == torch.bfloat16 and device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
        if major < 8:
            raise ValueError(
                f"bf16 needs a GPU of the Ampere generation or newer; {torch.cuda.get_device_name(index)} does not "
                "support it: use fp16 or fp32"
            )


def _finish(model: torch.nn.Module, device, dtype) -> torch.nn.Module:
    model.requires_grad_(False)
    model.eval()
    return model.to(device=device, dtype=dtype)


def _instantiate(factory, key_map: KeyMap) -> torch.nn.Module:
    """Build a module whose every state entry will be loaded, skipping its random initialisation.

    The module is built on the meta device and given uninitialised CPU storage,
    which :func:`load_strict` then fills completely. That is only done when
    nothing would be left unfilled: no non-persistent buffers, no entries kept
    from the module (``key_map.derived``) and no tensors held outside parameters
    and buffers; otherwise the module is built normally.
    """
    with torch.device("meta"):
        probe = factory()
    state = set(probe.state_dict())
    safe = not any(key_map.is_derived(k) for k in state)
    safe = safe and all(name in state for name, _ in probe.named_buffers())
    safe = safe and not any(isinstance(v, torch.Tensor) for m in probe.modules() for v in vars(m).values())
    if not safe:
        return factory()
    return probe.to_empty(device="cpu")


def _config_from_meta(meta: Mapping[str, str], cls, path: Path):
    text = meta.get(_META_CONFIG)
    if not text:
        return None
    try:
        data = json.loads(text)
        return cls.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: the '{_META_CONFIG}' entry of its metadata is not a valid {cls.__name__} ({exc}). "
            "Convert the published file again (python -m talker_core convert)."
        ) from exc


def _only_tensors(sd: Mapping[str, Any], path: Path, what: str) -> dict[str, torch.Tensor]:
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {what} holds non-tensor entries ({describe_keys(bad, 6)}).")
    return {str(k): v for k, v in sd.items()}


def _as_file(path: str | os.PathLike, kind: str) -> Path:
    """The file of ``kind`` at ``path``: ``path`` itself, or in a folder its sidecar or published name."""
    desc = COMPONENTS[kind].description
    candidates = COMPONENTS[kind].file_names
    path = Path(path)
    if path.is_dir():
        for name in candidates:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} is a folder without {' or '.join(candidates)}; give the path of {desc}.")
    if not path.exists():
        raise CheckpointError(f"Model file not found: {path} (expected {desc}).")
    return path


# --------------------------------------------------------------------------- talker


@dataclass
class TalkerBundle:
    """What :func:`load_talker` returns: the model, its tokenizer, its config and the weights file."""

    model: Any  # talker_core.models.talker.TalkerModel
    tokenizer: Any  # transformers fast tokenizer
    config: Any  # talker_core.models.talker.TalkerConfig
    source: Path


def _read_talker(path: Path):
    from talker_core.models.talker import TalkerConfig

    fmt, payload, meta = read_state_file(path, LIGHTNING_GLOBALS)
    _refuse_other_kind("talker", payload, meta, path)
    if fmt == "pickle":  # not the published form, but a plain pickled state dict is accepted
        if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
            payload = payload["state_dict"]
        if not isinstance(payload, Mapping):
            raise CheckpointError(
                f"{path} holds a {type(payload).__name__}, not a state dict; the Talker-T2AV weights are "
                f"published as {_TALKER.release}/{_TALKER_WEIGHTS}."
            )
        payload = _only_tensors(payload, path, "the state dict")
    config = _config_from_meta(meta, TalkerConfig, path) or TalkerConfig()
    return payload, config


# Where a config.json may keep the backbone's fields: at the top (a Qwen3 config.json) or nested.
_BACKBONE_SECTIONS = ("llm", "llm_config", "text_config", "backbone")


def check_backbone_config(path: str | os.PathLike, config) -> None:
    """Check the ``talker-t2av/config.json`` at ``path`` (if present) against ``config`` (a TalkerConfig).

    Fields are compared by name: the backbone's (``hidden_size``, ``num_hidden_layers``, … as in
    a Qwen3 ``config.json``; at the top level or under ``llm``/``llm_config``/``text_config``/
    ``backbone``; ``rope_theta`` also inside ``rope_parameters``), the top-level Talker sizes
    (``speech_dim``, ``patch_size``, …) and the ``patch_encoder``/``dit`` sections. Fields the
    code does not build (``architectures``, ``torch_dtype``, …) are not compared. Raises
    :class:`CheckpointError` naming the file and every differing field.
    """
    import dataclasses

    path = Path(path)
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not readable JSON ({exc}); download the {_TALKER.release} folder again."
        ) from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object of config fields.")

    def scalars(obj) -> dict[str, Any]:
        return {
            f.name: getattr(obj, f.name)
            for f in dataclasses.fields(obj)
            if not dataclasses.is_dataclass(getattr(obj, f.name))
        }

    sections: list[tuple[str, Mapping[str, Any], dict[str, Any]]] = []
    backbone = next((data[k] for k in _BACKBONE_SECTIONS if isinstance(data.get(k), dict)), data)
    prefix = next((f"{k}." for k in _BACKBONE_SECTIONS if isinstance(data.get(k), dict)), "")
    llm = dict(backbone)
    rope = llm.get("rope_parameters")
    if "rope_theta" not in llm and isinstance(rope, dict) and "rope_theta" in rope:
        llm["rope_theta"] = rope["rope_theta"]
    sections.append((prefix, llm, scalars(config.llm)))
    sections.append(("", data, scalars(config)))
    for name in ("patch_encoder", "dit"):
        if isinstance(data.get(name), dict):
            sections.append((f"{name}.", data[name], scalars(getattr(config, name))))

    differing = []
    model_type = llm.get("model_type")
    if model_type is not None and model_type != "qwen3" and prefix:
        differing.append(f"{prefix}model_type: config.json {model_type!r}, built 'qwen3'")
    for where, found, built in sections:
        for name, want in built.items():
            if name not in found:
                continue
            got = found[name]
            same = (
                math.isclose(float(got), float(want), rel_tol=1e-9)
                if _is_number(got) and _is_number(want)
                else got == want
            )
            if not same:
                differing.append(f"{where}{name}: config.json {got!r}, built {want!r}")
    if differing:
        raise CheckpointError(
            f"{path} does not match the sizes this model is built with: " + "; ".join(differing) + ". The "
            "config.json and model.safetensors in this folder come from different releases, or the file was "
            f"edited: download the {_TALKER.release} folder again."
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_talker(
    folder: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    strict: Optional[bool] = None,
) -> TalkerBundle:
    """Load ``talker-t2av/`` (model.safetensors + tokenizer files) → :class:`TalkerBundle`.

    Sizes are the release's unless the file's metadata carries ``talker_config``
    (debug sets and converted files do); the folder's ``config.json``, when
    present, must agree with them (:func:`check_backbone_config`), and every
    tensor is checked against them. ``strict``: see :func:`talker_core.checkpoint.load_strict`.
    ``folder`` may also be the model.safetensors path.
    """
    from talker_core.models.talker import TalkerModel
    from talker_core.tokenizer import MOTION_TOKEN, SPEECH_TOKEN, load_tokenizer

    folder = Path(folder)
    weights = folder if folder.is_file() else folder / _TALKER_WEIGHTS
    folder = weights.parent
    if not weights.is_file():
        raise CheckpointError(
            f"{weights} not found: the Talker-T2AV folder must hold model.safetensors and the tokenizer files. "
            f"Fetch them with: {DOWNLOAD_COMMAND.format(models_dir='DIR')}"
        )
    sd, config = _read_talker(weights)
    check_backbone_config(folder / BACKBONE_CONFIG, config)
    tokenizer = load_tokenizer(folder)
    vocab = config.llm.vocab_size
    for token in (SPEECH_TOKEN, MOTION_TOKEN):
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid >= vocab:
            raise CheckpointError(
                f"The tokenizer in {folder} gives {token} the id {tid}, beyond the model's vocabulary of {vocab}: "
                "the tokenizer files do not belong to this model.safetensors."
            )
    model = TalkerModel(config, attn_implementation=attn_implementation)
    model.load_published(sd, weights, strict=strict)
    del sd
    return TalkerBundle(_finish(model, device, dtype), tokenizer, config, weights)


# --------------------------------------------------------------------------- whisperx-vae


def _whisper_from_shapes(sd: Mapping[str, torch.Tensor], path: Path):
    from talker_core.models.whisperx_vae import WhisperEncoderConfig

    prefix = "semantic_model.encoder."
    conv1 = sd.get(prefix + "conv1.weight")
    if conv1 is None or conv1.ndim != 3:
        raise CheckpointError(
            f"{path} has no Whisper encoder ({prefix}conv1.weight); it is not a WhisperX-VAE checkpoint."
        )
    width, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    layers = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise CheckpointError(f"{path}: the Whisper encoder blocks are missing or not numbered 0..n-1.")
    pos = sd.get(prefix + "positional_embedding")
    n_ctx = int(pos.shape[0]) if pos is not None and pos.ndim == 2 else WhisperEncoderConfig().n_audio_ctx
    if width % 64:
        raise CheckpointError(
            f"{path}: Whisper width {width} is not a multiple of 64, so its head count cannot be inferred "
            "(openai-whisper uses 64-wide heads). Convert a file that carries its config."
        )
    try:
        return WhisperEncoderConfig(
            n_mels=n_mels, n_audio_ctx=n_ctx, n_audio_state=width, n_audio_head=width // 64, n_audio_layer=len(layers)
        )
    except ValueError as exc:
        raise CheckpointError(f"{path}: inconsistent Whisper sizes ({exc}).") from exc


def _whisperx_config_from_shapes(sd: Mapping[str, torch.Tensor], path: Path):
    """Every WhisperX-VAE size from the tensor shapes (used when a file has no config)."""
    from talker_core.models.whisperx_vae import (
        LATENT_RATE,
        CodecDecoderConfig,
        CodecEncoderConfig,
        WhisperXVAEConfig,
    )

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointError(f"{path} has no {key}; it is not a WhisperX-VAE checkpoint.")
        return tuple(int(s) for s in sd[key].shape)

    enc = sorted({int(m.group(1)) for k in sd if (m := re.match(r"CodecEnc\.block\.(\d+)\.block\.4\.weight_v$", k))})
    dec = sorted({int(m.group(1)) for k in sd if (m := re.match(r"CodecDec\.model\.(\d+)\.block\.1\.weight_v$", k))})
    if not enc or not dec:
        raise CheckpointError(f"{path}: no codec encoder/decoder blocks found; it is not a WhisperX-VAE checkpoint.")
    enc_ratios = tuple(shape(f"CodecEnc.block.{i}.block.4.weight_v")[2] // 2 for i in enc)
    dec_ratios = tuple(shape(f"CodecDec.model.{i}.block.1.weight_v")[2] // 2 for i in dec)
    hidden = shape(f"CodecEnc.block.{enc[-1] + 2}.weight_v")[0]
    try:
        return WhisperXVAEConfig(
            codec_encoder=CodecEncoderConfig(
                in_dim=shape("CodecEnc.block.0.weight_v")[0], ratios=enc_ratios, hidden_dim=hidden
            ),
            codec_decoder=CodecDecoderConfig(
                hidden_dim=shape("CodecDec.model.0.weight_v")[0],
                ratios=dec_ratios,
                z_dim=shape("vae.out_proj.weight_v")[1],
            ),
            sample_rate=LATENT_RATE * math.prod(enc_ratios),
            whisper=_whisper_from_shapes(sd, path),
        )
    except ValueError as exc:
        raise CheckpointError(f"{path}: inconsistent WhisperX-VAE sizes ({exc}).") from exc


@_names_release("whisperx_vae")
def _read_whisperx(path: Path):
    from talker_core.models.whisperx_vae import (
        WhisperXVAEConfig,
        state_dict_from_lightning,
    )

    fmt, payload, meta = read_state_file(path, LIGHTNING_GLOBALS)
    _refuse_other_kind("whisperx_vae", payload, meta, path)
    if fmt == "safetensors":
        sd = cast("dict[str, torch.Tensor]", payload)
        config = _config_from_meta(meta, WhisperXVAEConfig, path) or _whisperx_config_from_shapes(sd, path)
        return sd, config
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, not a Lightning checkpoint dict; use the published "
            f"{COMPONENTS['whisperx_vae'].release}."
        )
    try:
        sd = state_dict_from_lightning(payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    hp = payload.get("hyper_parameters")
    cfg = hp.get("cfg") if isinstance(hp, Mapping) else None
    if cfg is None:
        log.warning("%s has no hyper_parameters.cfg; taking the codec sizes from the tensor shapes", path)
        return sd, _whisperx_config_from_shapes(sd, path)
    try:
        config = WhisperXVAEConfig.from_lightning_cfg(to_plain(cfg), whisper=_whisper_from_shapes(sd, path))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return sd, config


def load_whisperx_vae(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    fold_weight_norm: bool = True,
    strict: Optional[bool] = None,
):
    """Load ``whisperx-vae/model.ckpt`` (or its .safetensors conversion) → ``WhisperXVAE`` in eval mode.

    Codec sizes come from the checkpoint's ``hyper_parameters.cfg`` (or the
    converted file's ``talker_config``); the Whisper branch sizes from the
    tensor shapes. With ``fold_weight_norm`` the weight-norm kernels are baked
    (in float32, before the cast to ``dtype``).
    """
    from talker_core.models.whisperx_vae import WHISPERX_VAE_KEYS, WhisperXVAE

    path = _as_file(path, "whisperx_vae")
    sd, config = _read_whisperx(path)
    model = WhisperXVAE(config)
    load_strict(model, sd, WHISPERX_VAE_KEYS, path, "WhisperX-VAE", kind="whisperx_vae", strict=strict)
    del sd
    if fold_weight_norm:
        model.fold_weight_norm()
    return _finish(model, device, dtype)


# --------------------------------------------------------------------------- lia-x


@_names_release("liax")
def _read_liax(path: Path):
    from talker_core.models.liax import LiaXConfig, state_dict_from_file

    fmt, payload, meta = read_state_file(path, LIGHTNING_GLOBALS)
    _refuse_other_kind("liax", payload, meta, path)
    sd = (
        state_dict_from_file(payload, source=str(path)) if fmt == "pickle" else cast("dict[str, torch.Tensor]", payload)
    )
    config = _config_from_meta(meta, LiaXConfig, path) or LiaXConfig.from_state_dict_shapes(sd, source=str(path))
    return sd, config


def load_liax(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    strict: Optional[bool] = None,
):
    """Load ``lia-x.pt`` (or its .safetensors conversion) → ``LiaXGenerator`` in eval mode (scale from the shapes)."""
    from talker_core.models.liax import LIAX_KEYS, LiaXGenerator

    path = _as_file(path, "liax")
    sd, config = _read_liax(path)
    # hundreds of millions of parameters: skip the random initialisation they would get
    model = _instantiate(lambda: LiaXGenerator(config), LIAX_KEYS)
    load_strict(model, sd, LIAX_KEYS, path, "LIA-X generator", kind="liax", strict=strict)
    del sd
    return _finish(model, device, dtype)


# --------------------------------------------------------------------------- speaker encoder


@_names_release("speaker")
def _read_speaker(path: Path):
    from talker_core.models.speaker_encoder import (
        SpeakerEncoderConfig,
        config_from_state_dict,
        state_dict_from_file,
    )

    fmt, payload, meta = read_state_file(path, LIGHTNING_GLOBALS)
    _refuse_other_kind("speaker", payload, meta, path)
    sd = (
        state_dict_from_file(payload, source=str(path)) if fmt == "pickle" else cast("dict[str, torch.Tensor]", payload)
    )
    config = _config_from_meta(meta, SpeakerEncoderConfig, path) or config_from_state_dict(sd, source=str(path))
    return sd, config


def load_speaker_encoder(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    strict: Optional[bool] = None,
):
    """Load ``wavlm_large_finetune.pth`` (or its .safetensors conversion) → ``SpeakerEncoder`` in eval mode."""
    from talker_core.models.speaker_encoder import SPEAKER_KEYS, SpeakerEncoder

    path = _as_file(path, "speaker")
    sd, config = _read_speaker(path)
    model = SpeakerEncoder(config)
    load_strict(model, sd, SPEAKER_KEYS, path, "speaker encoder (WavLM + ECAPA-TDNN)", kind="speaker", strict=strict)
    del sd
    return _finish(model, device, dtype)


def load_component(kind: str, path: str | os.PathLike, device="cpu", dtype=torch.float32, strict=None):
    """Dispatch to the loader of ``kind`` (one of :data:`KINDS`; the registry names it)."""
    return component(kind).loader()(path, device=device, dtype=dtype, strict=strict)


# --------------------------------------------------------------------------- conversion


def read_component(kind: str, path: str | os.PathLike):
    """``(state dict under the published names, config)`` of one file, read as its loader reads it.

    No model is built and nothing is checked against one (see ``python -m talker_core check-models``).
    """
    return component(kind).reader()(Path(path))


def key_map(kind: str) -> KeyMap:
    """The :class:`KeyMap` of one component kind."""
    return component(kind).key_map()


def build_module(kind: str, config, device: str | torch.device = "meta") -> torch.nn.Module:
    """The module one component's file loads into, built on ``device`` (by default without memory)."""
    cls = component(kind).module_class()
    with torch.device(device):
        return cls(config)


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".gguf"}


def convert_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike, kind: Optional[str] = None) -> Path:
    """Write ``src`` (a published file, any of the four) as safetensors at ``dst``; returns the file written.

    The tensors keep their published names and dtypes; keys the component is
    known not to use are dropped; the metadata gets ``talker_kind`` and
    ``talker_config`` (JSON). No pickle is written. For the talker, ``src`` may
    be the ``talker-t2av`` folder: ``dst`` is then a folder that receives
    model.safetensors and a copy of the tokenizer files. ``kind`` is detected
    from the content when not given.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    src_file = src / _TALKER_WEIGHTS if src.is_dir() else src
    if not src_file.is_file():
        raise CheckpointError(f"Nothing to convert: {src_file} not found.")
    if kind is None:
        fmt, payload, meta = read_state_file(src_file, LIGHTNING_GLOBALS)
        kind = identify(payload, meta)
        del payload
        if kind is None:
            raise CheckpointError(f"Cannot tell which model {src_file} holds; give --kind ({', '.join(KINDS)}).")
    c = component(kind)

    if dst.is_dir() or not dst.suffix:
        out_file = dst / (c.weights_file or src_file.with_suffix(".safetensors").name)
    else:
        out_file = dst
    if out_file.suffix != ".safetensors":
        raise ValueError(f"The converted file must end in .safetensors, got {out_file}.")
    if out_file.exists() and out_file.resolve() == src_file.resolve():
        raise ValueError(f"Refusing to convert {src_file} onto itself; choose another destination.")

    sd, config = c.reader()(src_file)
    keys = c.key_map()
    kept: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for name, tensor in sd.items():
        if keys.is_ignored(name):
            dropped.append(name)
            continue
        kept[name] = tensor.detach().contiguous()
    _unshare(kept)
    meta = {
        "format": "pt",
        _META_KIND: kind,
        _META_CONFIG: json.dumps(config.to_dict(), sort_keys=True),
        "talker_source": src_file.name,
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".partial")
    try:
        save_file(kept, str(tmp), metadata=meta)
        _default_permissions(tmp)
        os.replace(tmp, out_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    if dropped:
        log.info("convert: dropped %d unused tensor(s) of %s: %s", len(dropped), src_file, describe_keys(dropped, 6))
    if c.is_folder and src_file.parent != out_file.parent:
        for f in sorted(src_file.parent.iterdir()):
            if f.is_file() and f.suffix.lower() not in _WEIGHT_SUFFIXES and not f.name.endswith(".partial"):
                shutil.copy2(f, out_file.parent / f.name)
    log.info("convert: wrote %s (%d tensors, kind %s)", out_file, len(kept), kind)
    return out_file


def _default_permissions(path: Path) -> None:
    """Give a written file the usual permissions (rw for the owner, r for others); the writer makes it 0600."""
    with contextlib.suppress(OSError):  # e.g. a file system without permissions
        os.chmod(path, 0o644)


def _unshare(tensors: dict[str, torch.Tensor]) -> None:
    """Clone tensors that share storage with another one (safetensors refuses shared memory)."""
    seen: dict[tuple, str] = {}
    for name in list(tensors):
        t = tensors[name]
        if t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.device.type)
        if key in seen:
            tensors[name] = t.clone()
        else:
            seen[key] = name
