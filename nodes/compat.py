"""Schema features of newer ComfyUI cores, used only where the running core offers them.

The pack supports ComfyUI 0.3.64 and later. Newer cores add optional schema fields
(``search_aliases``, ``has_intermediate_output``) and input flags (``advanced``); passing
them to an older core would be a ``TypeError``, so each is checked on the class it goes to,
at the time the schema is built.
"""

from __future__ import annotations

import functools
import inspect

from comfy_api.latest import io


@functools.cache
def _parameters(target) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return frozenset()


def schema_supports(name: str) -> bool:
    """Whether this core's ``io.Schema`` takes the field ``name``."""
    return name in _parameters(io.Schema)


def schema_extras(**features) -> dict:
    """The subset of ``features`` this core's ``io.Schema`` accepts (the rest are left out)."""
    return {k: v for k, v in features.items() if schema_supports(k)}


def advanced(input_class) -> dict:
    """``{"advanced": True}`` for an input this core can mark as advanced (hidden until asked), else ``{}``."""
    return {"advanced": True} if "advanced" in _parameters(input_class.__init__) else {}
