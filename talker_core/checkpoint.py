"""Strict, explicit checkpoint loading shared by every component.

Every loader in this package goes through :func:`load_strict`: published keys are
renamed by an explicit, ordered rule list, keys known to be unused are dropped by
a named pattern list, and anything that does not fit (a missing key, a wrong
shape, a non-float tensor where a float is expected, a key of another component)
is a :class:`CheckpointError` that names the file and the keys. A key nobody
listed is an error under the strict switch (``strict=True`` or the environment
variable ``TALKER_STRICT_LOADING=1``: the tests and ``check-models`` use it);
otherwise it is reported once, in one log line naming the file and the keys, and
loading goes on, so that a released file carrying one unlisted training-only
tensor does not strand a user. Nothing is loaded with ``strict=False``: every
weight the model needs must be in the file.

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
    "COMPONENT_KEYS",
    "STRICT_ENV",
    "component_of_key",
    "strict_loading",
    "KeyReport",
    "account_keys",
]

log = logging.getLogger(__name__)

_MAX_LISTED = 12

#: Environment variable of the strict switch: "1" makes an unlisted key an error everywhere.
STRICT_ENV = "TALKER_STRICT_LOADING"

#: Published key patterns (full match) that mark a tensor as one component's: a file of one
#: component carrying keys of another is refused even in lenient loading.
COMPONENT_KEYS: dict[str, tuple[str, ...]] = {
    "talker": (r"llm\.model\..+", r"(speech|motion)_cfm\.estimator\..+", r"head_stop\..+"),
    "whisperx_vae": (r"(\w+\.)?Codec(Enc|Dec)\..+",),
    "liax": (r"dec\.direction\.weight", r"enc\.enc_2r\..+"),
    "speaker": (r"feature_extract\.model\..+", r"layer1\.conv\.weight"),
}

_REPORTED: set[tuple[str, tuple[str, ...]]] = set()


def strict_loading(strict: bool | None = None) -> bool:
    """The strict switch: ``strict`` when given, else ``$TALKER_STRICT_LOADING`` (1/true/yes/on)."""
    if strict is not None:
        return bool(strict)
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def component_of_key(key: str) -> str | None:
    """Which component a published key belongs to by :data:`COMPONENT_KEYS` (``None``: no signature)."""
    for kind, patterns in COMPONENT_KEYS.items():
        if any(re.fullmatch(p, key) for p in patterns):
            return kind
    return None


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


@dataclass
class KeyReport:
    """How a published state dict's keys relate to a module (see :func:`account_keys`).

    needed:     module entries that must come from the file (derived ones excluded).
    present:    needed entries the file holds.
    unused:     file keys on the key map's known-unused list.
    unexpected: file keys that are neither needed nor known-unused.
    foreign:    the unexpected keys that belong to another component (kind → keys).
    missing:    needed entries the file lacks.
    shapes:     ``key: file (..) vs model (..)`` for each shape mismatch.
    dtypes:     ``key: dtype`` for each non-float tensor where the model holds floats.
    """

    needed: list[str]
    present: list[str]
    unused: list[str]
    unexpected: list[str]
    foreign: dict[str, list[str]]
    missing: list[str]
    shapes: list[str]
    dtypes: list[str]
    mapped: dict[str, torch.Tensor] = field(repr=False)

    def errors(self, strict: bool) -> list[str]:
        """The problems that stop loading (unexpected keys only under ``strict``)."""
        problems: list[str] = []
        if self.missing:
            problems.append(f"missing {len(self.missing)} key(s): {describe_keys(self.missing)}")
        for kind, keys in self.foreign.items():
            problems.append(f"{len(keys)} key(s) of another component ({kind}): {describe_keys(keys)}")
        loose = self.loose()
        if loose and strict:
            problems.append(f"unexpected {len(loose)} key(s): {describe_keys(loose)}")
        if self.shapes:
            problems.append(f"{len(self.shapes)} shape mismatch(es): " + "; ".join(self.shapes[:_MAX_LISTED]))
        if self.dtypes:
            problems.append(
                f"{len(self.dtypes)} tensor(s) with a non-float dtype: " + "; ".join(self.dtypes[:_MAX_LISTED])
            )
        return problems

    def loose(self) -> list[str]:
        """Unexpected keys that belong to no other component (skipped, with a report, unless strict)."""
        foreign = {k for keys in self.foreign.values() for k in keys}
        return [k for k in self.unexpected if k not in foreign]


def account_keys(
    module: nn.Module, published: Mapping[str, torch.Tensor], key_map: KeyMap, kind: str | None = None
) -> KeyReport:
    """Sort every key of ``published`` against ``module`` without loading anything.

    ``kind`` (a key of :data:`COMPONENT_KEYS`) is the component the file should hold:
    unexpected keys matching another component's signature are reported as foreign.
    """
    expected = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    unexpected: list[str] = []
    for key, tensor in published.items():
        if key_map.is_ignored(key):
            unused.append(key)
            continue
        target = key_map.to_module(key)
        if target not in expected or key_map.is_derived(target):
            unexpected.append(key)
            continue
        mapped[target] = tensor
    needed = [k for k in expected if not key_map.is_derived(k)]
    missing = [k for k in needed if k not in mapped]
    foreign: dict[str, list[str]] = {}
    for key in unexpected:
        other = component_of_key(key)
        if other is not None and other != kind:
            foreign.setdefault(other, []).append(key)
    shapes = [
        f"{k}: file {tuple(t.shape)} vs model {tuple(expected[k].shape)}"
        for k, t in mapped.items()
        if tuple(t.shape) != tuple(expected[k].shape)
    ]
    dtypes = [
        f"{k}: {t.dtype}" for k, t in mapped.items() if expected[k].is_floating_point() and not t.is_floating_point()
    ]
    present = [k for k in needed if k in mapped]
    return KeyReport(needed, present, unused, unexpected, foreign, missing, shapes, dtypes, mapped)


def load_strict(
    module: nn.Module,
    published: Mapping[str, torch.Tensor],
    key_map: KeyMap,
    source: str | os.PathLike,
    component: str,
    *,
    kind: str | None = None,
    strict: bool | None = None,
) -> None:
    """Load ``published`` (a state dict under the published names) into ``module``.

    Raises :class:`CheckpointError` naming ``source`` when a required key is
    missing, a shape differs, a tensor has a non-floating dtype where the model
    holds floats, or a key belongs to another component than ``kind``. A key that
    is none of these and not on the key map's known-unused list is an error under
    the strict switch (:func:`strict_loading`: ``strict`` or ``$TALKER_STRICT_LOADING``);
    otherwise it is skipped and reported once, in one warning naming ``source`` and
    every such key. Floating tensors are cast to the dtype of the module's entry.
    """
    strict = strict_loading(strict)
    report = account_keys(module, published, key_map, kind)
    problems = report.errors(strict)
    if problems:
        raise CheckpointError(
            f"{source} does not look like a {component} checkpoint: "
            + " | ".join(problems)
            + ". Check that the file is the published one for this component and is not truncated."
        )
    loose = report.loose()
    if loose:
        seen = (str(source), tuple(sorted(loose)))
        level = logging.DEBUG if seen in _REPORTED else logging.WARNING
        _REPORTED.add(seen)
        log.log(
            level,
            "%s: skipping %d tensor(s) the %s model does not use and no list names: %s "
            "(loading goes on; please report these names; %s=1 makes this an error)",
            source,
            len(loose),
            component,
            ", ".join(sorted(loose)),
            STRICT_ENV,
        )

    expected = module.state_dict()
    full = {}
    for k, ref in expected.items():
        if k in report.mapped:
            full[k] = report.mapped[k].to(dtype=ref.dtype)
        else:  # derived: keep the module's own value
            full[k] = ref
    module.load_state_dict(full, strict=True)
    log.debug("loaded %d tensors into %s from %s", len(report.mapped), component, source)


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
