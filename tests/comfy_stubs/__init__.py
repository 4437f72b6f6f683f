"""Minimal stand-ins for the ComfyUI modules our nodes import, for CI without ComfyUI.

They follow ComfyUI 0.3.64's behaviour where our nodes rely on it (V3 schema and
``as_dict`` output, ``NodeOutput``, hidden inputs, ``ProgressBar`` hook,
interruption flag, ``ModelPatcher``/``load_models_gpu`` device moves, model folder
registration, annotated file paths) and nothing more. ``activate()`` puts them on
``sys.path``; ``reset_dirs(base)`` points input/output/temp/models at a folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def activate() -> None:
    """Make ``import folder_paths``, ``comfy.*`` and ``comfy_api.latest`` resolve to these stubs."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import comfy_api  # noqa: F401

    origin = Path(getattr(sys.modules["comfy_api"], "__file__", "") or "").resolve()
    if HERE not in origin.parents:
        raise RuntimeError(
            f"a real comfy_api ({origin}) shadows the stubs; run these tests without ComfyUI on sys.path"
        )


def reset_dirs(base) -> None:
    """Fresh input/output/temp/models folders under ``base`` and a clean model-folder table."""
    import folder_paths

    folder_paths.reset(base)
