"""Strict, explicit checkpoint loading shared by every component.

Every loader in this package goes through :func:`load_strict`: published keys are
renamed by an explicit, ordered rule list, keys known to be unused are dropped by
a named pattern list, and anything else that does not fit (a missing key, an
unexpected key, a wrong shape, a non-float tensor where a float is expected) is a
:class:`CheckpointError` that names the file and the keys. Nothing is loaded
with ``strict=False``.

Files are read without executing code: safetensors directly, pickles only through
``torch.load(weights_only=True)`` (see :func:`read_pickle`).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "KeyMap",
    "load_strict",
    "read_safetensors",
    "read_pickle",
    "read_state_file",
    "sniff_format",
    "describe_keys",
]

log = logging.getLogger(__name__)

_MAX_LISTED = 12


class CheckpointError(RuntimeError):
    """A model file is unreadable, unsafe, or does not fit the model it is loaded into."""


@dataclass(frozen=True)
class KeyMap:
    """How one published file's keys relate to a module's ``state_dict`` keys.

    rename:   ordered ``(regex, replacement)`` rules applied to each published key
              (first match wins; keys matching no rule keep their name).
    ignore:   regexes (full match, on the *published* name) of keys the file is
              known to carry but this model does not use: training-only modules,
              an unused decoder, recomputed buffers.
    derived:  regexes (full match, on the *module* name) of module entries that are
              not stored in files because they are functions of the sizes
              (rotary tables, sinusoidal positions) or tied to another weight.
              They keep the module's own value.
    """

    rename: Sequence[tuple[str, str]] = ()
    ignore: Sequence[str] = ()
    derived: Sequence[str] = ()
    _compiled: dict = field(default_factory=dict, compare=False, repr=False)

    def _rx(self, pattern: str) -> re.Pattern:
        rx = self._compiled.get(pattern)
        if rx is None:
            rx = self._compiled[pattern] = re.compile(pattern)
        return rx

    def to_module(self, key: str) -> str:
        for pattern, repl in self.rename:
            rx = self._rx(pattern)
            if rx.match(key):
                return rx.sub(repl, key, count=1)
        return key

    def is_ignored(self, key: str) -> bool:
        return any(self._rx(p).fullmatch(key) for p in self.ignore)

    def is_derived(self, module_key: str) -> bool:
        return any(self._rx(p).fullmatch(module_key) for p in self.derived)


def describe_keys(keys: Iterable[str], limit: int = _MAX_LISTED) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    if len(keys) > limit:
        shown += f", … ({len(keys) - limit} more)"
    return shown


def load_strict(
    module: nn.Module,
    published: Mapping[str, torch.Tensor],
    key_map: KeyMap,
    source: str | os.PathLike,
    component: str,
) -> None:
    """Load ``published`` (a state dict under the published names) into ``module``.

    Raises :class:`CheckpointError` naming ``source`` when a required key is
    missing, an unknown key is present, a shape differs, or a tensor has a
    non-floating dtype where the model holds floats. Floating tensors are cast to
    the dtype of the module's entry.
    """
    expected = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in published.items():
        if key_map.is_ignored(key):
            continue
        target = key_map.to_module(key)
        if target not in expected or key_map.is_derived(target):
            unexpected.append(key)
            continue
        mapped[target] = tensor
    missing = [k for k in expected if k not in mapped and not key_map.is_derived(k)]

    problems: list[str] = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {describe_keys(unexpected)}")
    shapes = [
        f"{k}: file {tuple(t.shape)} vs model {tuple(expected[k].shape)}"
        for k, t in mapped.items()
        if tuple(t.shape) != tuple(expected[k].shape)
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:_MAX_LISTED]))
    dtypes = [
        f"{k}: {t.dtype}" for k, t in mapped.items() if expected[k].is_floating_point() and not t.is_floating_point()
    ]
    if dtypes:
        problems.append(f"{len(dtypes)} tensor(s) with a non-float dtype: " + "; ".join(dtypes[:_MAX_LISTED]))
    if problems:
        raise CheckpointError(
            f"{source} does not look like a {component} checkpoint: "
            + " | ".join(problems)
            + ". Check that the file is the published one for this component and is not truncated."
        )

    full = {}
    for k, ref in expected.items():
        if k in mapped:
            t = mapped[k]
            full[k] = t.to(dtype=ref.dtype)
        else:  # derived: keep the module's own value
            full[k] = ref
    module.load_state_dict(full, strict=True)
    log.debug("loaded %d tensors into %s from %s", len(mapped), component, source)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file into CPU tensors plus its string metadata."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _require_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}). It may be truncated or corrupted: download it again."
        ) from exc
    return tensors, meta


def read_pickle(path: str | os.PathLike, allowed_globals: Sequence = ()) -> object:
    """Read a PyTorch pickle (``.pt``/``.pth``/``.ckpt``) without running code.

    Uses ``torch.load(weights_only=True)``; ``allowed_globals`` extends the
    allow-list with exactly the extra types a format needs (classes, or
    ``(stand_in, "module.Name")`` pairs that rebuild a foreign type as an inert
    local one). Anything else the pickle asks to construct or call is refused,
    and the error names it. Zip-format files are memory-mapped, so tensors that
    are never used (training-only modules) are never read from disk.
    """
    path = Path(path)
    _require_file(path)
    kind = sniff_format(path)
    if kind == "safetensors":
        raise CheckpointError(
            f"{path} is a safetensors file, not a PyTorch pickle; load it as safetensors "
            "(give it the .safetensors suffix)."
        )
    if kind not in ("zip-pickle", "legacy-pickle"):
        raise CheckpointError(
            f"{path} is neither a PyTorch checkpoint nor a safetensors file (it starts with "
            f"{_head(path)!r}). It may be truncated, an HTML error page or another format: download it again."
        )
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=(kind == "zip-pickle"))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refused to load {path}: {_refusal_reason(exc)}. Only plain tensor data is accepted, because "
            "model files can execute code when unpickled; this one was not opened further. Use the "
            "published file, or a .safetensors conversion of it (python -m talker_core convert)."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({_first_line(exc)}). It may be truncated, "
            "corrupted or of another format: download it again."
        ) from exc


def sniff_format(path: str | os.PathLike) -> str:
    """What a model file holds, judged by its first bytes, never by its name.

    Returns ``"safetensors"`` (8-byte header length then a JSON header),
    ``"zip-pickle"`` (``torch.save`` archive), ``"legacy-pickle"`` (pre-1.6
    ``torch.save`` / plain pickle stream), or ``"unknown"``.
    """
    path = Path(path)
    _require_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
        size = path.stat().st_size
    if head[:4] == b"PK\x03\x04":
        return "zip-pickle"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= size - 8 and n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "legacy-pickle"
    return "unknown"


def read_state_file(path: str | os.PathLike, allowed_globals: Sequence = ()) -> tuple[str, object, dict[str, str]]:
    """Read a model file by its content: ``(format, payload, metadata)``.

    ``format`` is ``"safetensors"`` (payload: dict of tensors, metadata: the
    header's string metadata) or ``"pickle"`` (payload: the unpickled object
    through :func:`read_pickle`, metadata empty). A safetensors file with a
    ``.pt`` name is still read as safetensors; a pickle with a ``.safetensors``
    name is reported as such and never unpickled.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind == "safetensors":
        tensors, meta = read_safetensors(path)
        return "safetensors", tensors, meta
    if path.suffix.lower() == ".safetensors":
        what = "a PyTorch pickle" if kind != "unknown" else f"not safetensors (it starts with {_head(path)!r})"
        raise CheckpointError(
            f"{path} is named .safetensors but is {what}. It was not opened. Rename it to its real "
            "format (.pt/.pth/.ckpt) if you trust it, or download the file again."
        )
    return "pickle", read_pickle(path, allowed_globals), {}


def _refusal_reason(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"it asks to use {m.group(1)}, which is not on the allow-list for this file"
    m = re.search(r"(unrecognized function [^\n]*|Unsupported operand [^\n]*|new object for [^\n]*)", text)
    if m:
        return f"it asks for something that is not plain data ({m.group(1).strip()})"
    for line in text.splitlines():
        if "WeightsUnpickler error" in line:
            return line.split(":", 1)[-1].strip()
    return f"it is not plain tensor data ({_first_line(exc)})"


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
