"""Allow-lists for reading the published pickles with ``torch.load(weights_only=True)``.

The WhisperX-VAE ``model.ckpt`` is a PyTorch Lightning checkpoint. Besides plain
tensors and containers it stores the training configuration under
``hyper_parameters.cfg`` as an OmegaConf ``DictConfig`` (Lightning keeps
``self.save_hyperparameters()`` output that way). Unpickling that normally needs
omegaconf installed and trusts it to rebuild its objects.

Here every global such a pickle names is mapped to an *inert local stand-in*:
classes that only store the state the pickle hands them, sentinels for type
annotations, and a function that turns ``collections.defaultdict(...)`` into a
plain dict. Nothing from omegaconf (or Lightning) is imported or run, and
:func:`to_plain` turns the stand-ins back into nested ``dict``/``list`` values.

The globals below were taken from real pickles: an OmegaConf 2.x ``DictConfig``
saved inside a Lightning-style checkpoint references ``omegaconf.dictconfig.DictConfig``,
``omegaconf.listconfig.ListConfig``, ``omegaconf.base.ContainerMetadata``,
``omegaconf.base.Metadata``, ``omegaconf.nodes.AnyNode``, ``typing.Any``,
``collections.defaultdict`` and the builtin types ``dict``, ``list`` and ``int``
(used as ``ref_type``/``key_type`` annotations). Typed value nodes
(``StringNode``, ``IntegerNode``…) and the other builtin annotation types are
listed as well because Hydra-structured configs produce them. Anything else a
pickle names is refused by :func:`talker_core.checkpoint.read_pickle`, with the
global named in the error.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LIGHTNING_GLOBALS",
    "OMEGACONF_GLOBALS",
    "OmegaContainer",
    "OmegaDictConfig",
    "OmegaListConfig",
    "OmegaNode",
    "TypeRef",
    "to_plain",
]

_MISSING = "???"


class _StateHolder:
    """Stores whatever state the unpickler gives it; has no behaviour of its own."""

    def __setstate__(self, state: Any) -> None:
        # pickle's BUILD: a dict, or a (dict, slot-dict) pair.
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stand-in>"


class OmegaContainer(_StateHolder):
    """Stand-in for an OmegaConf container; the payload is in ``_content``."""


class OmegaDictConfig(OmegaContainer):
    """Stand-in for ``omegaconf.dictconfig.DictConfig``."""


class OmegaListConfig(OmegaContainer):
    """Stand-in for ``omegaconf.listconfig.ListConfig``."""


class OmegaNode(_StateHolder):
    """Stand-in for an OmegaConf value node (``AnyNode``, ``StringNode``…); value in ``_val``."""


class OmegaMetadata(_StateHolder):
    """Stand-in for ``omegaconf.base.Metadata`` / ``ContainerMetadata`` (ignored by :func:`to_plain`)."""


class TypeRef:
    """Sentinel standing for a type annotation stored in a pickle (``typing.Any``, ``builtins.int``…)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"TypeRef({self.name})"

    def __reduce__(self):  # pragma: no cover - only for copy/deepcopy of loaded trees
        return (TypeRef, (self.name,))


class AttributeDict(dict):
    """Stand-in for Lightning's ``AttributeDict`` (a ``dict`` subclass with attribute access)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


def _defaultdict(*args: Any) -> dict:
    """Stand-in for ``collections.defaultdict(factory)``: a plain empty dict (items follow via SETITEMS)."""
    return {}


def _node_pairs() -> list[tuple[Any, str]]:
    names = (
        "AnyNode",
        "ValueNode",
        "StringNode",
        "PathNode",
        "IntegerNode",
        "FloatNode",
        "BooleanNode",
        "BytesNode",
        "EnumNode",
        "InterpolationResultNode",
    )
    # One subclass per published name so that a misplaced node is visible in a repr.
    return [(type(name, (OmegaNode,), {}), f"omegaconf.nodes.{name}") for name in names]


_TYPE_NAMES = (
    "typing.Any",
    "typing.Dict",
    "typing.List",
    "typing.Tuple",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.bytes",
    "builtins.object",
)

#: ``(stand_in, "module.Name")`` pairs for an OmegaConf tree inside a pickle.
OMEGACONF_GLOBALS: tuple[tuple[Any, str], ...] = (
    (OmegaDictConfig, "omegaconf.dictconfig.DictConfig"),
    (OmegaListConfig, "omegaconf.listconfig.ListConfig"),
    (OmegaMetadata, "omegaconf.base.Metadata"),
    (type("ContainerMetadata", (OmegaMetadata,), {}), "omegaconf.base.ContainerMetadata"),
    *_node_pairs(),
    *((TypeRef(name), name) for name in _TYPE_NAMES),
    (_defaultdict, "collections.defaultdict"),
)

#: Everything a Lightning checkpoint with an OmegaConf ``hyper_parameters`` may name.
LIGHTNING_GLOBALS: tuple[tuple[Any, str], ...] = OMEGACONF_GLOBALS + (
    (AttributeDict, "lightning.fabric.utilities.data.AttributeDict"),
    (AttributeDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (AttributeDict, "lightning_fabric.utilities.data.AttributeDict"),
)


# --------------------------------------------------------------------------- to_plain

_INTERP_FULL = re.compile(r"^\$\{([A-Za-z_][\w\-]*(?:\.[\w\-]+|\[\d+\])*)\}$")
_INTERP_PART = re.compile(r"\$\{([A-Za-z_][\w\-]*(?:\.[\w\-]+|\[\d+\])*)\}")


def to_plain(obj: Any, resolve: bool = True) -> Any:
    """Turn loaded stand-ins (and containers holding them) into plain Python values.

    ``DictConfig`` → ``dict``, ``ListConfig`` → ``list``, value nodes → their value,
    ``AttributeDict`` → ``dict``; tensors and other plain values are returned as
    they are. A missing value (``"???"``) becomes ``None``. With ``resolve``, simple
    absolute interpolations (``"${model.hidden_dim}"``, also inside a longer string)
    are replaced by the value they point to, searched from the root of each
    OmegaConf tree; anything else (resolvers such as ``${oc.env:X}``, relative
    paths) is left as the literal string.
    """
    plain = _convert(obj, depth=0)
    if resolve and isinstance(obj, OmegaContainer):
        plain = _resolve(plain, plain)
    elif resolve:
        plain = _resolve_nested(obj, plain)
    return plain


def _convert(obj: Any, depth: int) -> Any:
    if depth > 200:
        raise ValueError("configuration tree is nested too deeply (over 200 levels)")
    if isinstance(obj, OmegaContainer):
        content = obj.__dict__.get("_content")
        if content is None or isinstance(content, str):
            return None if content in (None, _MISSING) else content
        if isinstance(obj, OmegaListConfig) or isinstance(content, (list, tuple)):
            return [_convert(v, depth + 1) for v in content]
        if isinstance(content, dict):
            return {k: _convert(v, depth + 1) for k, v in content.items()}
        return content
    if isinstance(obj, OmegaNode):
        val = obj.__dict__.get("_val")
        return None if val == _MISSING else _convert(val, depth + 1)
    if isinstance(obj, TypeRef):
        return obj.name
    if isinstance(obj, dict):
        return {k: _convert(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert(v, depth + 1) for v in obj)
    return obj


def _resolve_nested(original: Any, plain: Any) -> Any:
    """Resolve interpolations inside every OmegaConf tree found within plain containers."""
    if isinstance(original, OmegaContainer):
        return _resolve(plain, plain)
    if isinstance(original, dict) and isinstance(plain, dict):
        return {k: _resolve_nested(original[k], v) for k, v in plain.items()}
    if isinstance(original, (list, tuple)) and isinstance(plain, (list, tuple)):
        out = [_resolve_nested(o, p) for o, p in zip(original, plain, strict=True)]
        return type(plain)(out) if isinstance(plain, tuple) else out
    return plain


def _lookup(root: Any, path: str) -> Any:
    cur = root
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(cur, list) or idx >= len(cur):
                raise KeyError(path)
            cur = cur[idx]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(path)
    return cur


def _resolve(value: Any, root: Any, depth: int = 0) -> Any:
    if depth > 32:  # an interpolation cycle: leave the text as it is
        return value
    if isinstance(value, dict):
        return {k: _resolve(v, root, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root, depth) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    m = _INTERP_FULL.match(value)
    if m:
        try:
            return _resolve(_lookup(root, m.group(1)), root, depth + 1)
        except KeyError:
            return value

    def sub(match: re.Match) -> str:
        try:
            return str(_resolve(_lookup(root, match.group(1)), root, depth + 1))
        except KeyError:
            return match.group(0)

    return _INTERP_PART.sub(sub, value)
