"""ComfyUI nodes for Talker-T2AV: schemas plus a few lines that call :mod:`talker_core`.

Importing this package needs ComfyUI's modules (``comfy_api.latest``, ``comfy``,
``folder_paths``), as inside ComfyUI or under ``tests/comfy_host.py``. The pack's root
``__init__.py`` imports it only from ``comfy_entrypoint()``, so the pack itself
stays importable without ComfyUI.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _ensure_talker_core() -> None:
    """Make ``import talker_core`` work inside ComfyUI, which does not put the pack on sys.path.

    Registers exactly one module name (``talker_core``) from the folder beside this
    package; an installed ``talker_core`` (e.g. ``pip install -e .``) takes precedence.
    """
    if "talker_core" in sys.modules or importlib.util.find_spec("talker_core") is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "talker_core"
    spec = importlib.util.spec_from_file_location(
        "talker_core", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["talker_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["talker_core"]
        raise


_ensure_talker_core()

from .decoders import TalkerDecodeSpeech, TalkerRenderVideo  # noqa: E402
from .dialogue import TalkerDialogue  # noqa: E402
from .encoders import (  # noqa: E402
    TalkerEncodeFace,
    TalkerEncodeMotion,
    TalkerEncodeSpeech,
    TalkerEncodeVoice,
)
from .latents import (  # noqa: E402
    TalkerLoadMotionLatents,
    TalkerLoadSpeechLatents,
    TalkerSaveMotionLatents,
    TalkerSaveSpeechLatents,
)
from .loaders import (  # noqa: E402
    TalkerLoadCodec,
    TalkerLoadFaceModel,
    TalkerLoadModel,
    TalkerLoadSpeakerEncoder,
)
from .paste_back import TalkerPasteBack, TalkerPasteBackVideo  # noqa: E402
from .sampler import TalkerSampler  # noqa: E402
from .video_file import TalkerRenderVideoFile  # noqa: E402

NODES = [
    TalkerLoadModel,
    TalkerLoadCodec,
    TalkerLoadFaceModel,
    TalkerLoadSpeakerEncoder,
    TalkerEncodeVoice,
    TalkerEncodeSpeech,
    TalkerEncodeFace,
    TalkerEncodeMotion,
    TalkerSampler,
    TalkerDecodeSpeech,
    TalkerRenderVideo,
    TalkerRenderVideoFile,
    TalkerPasteBack,
    TalkerPasteBackVideo,
    TalkerDialogue,
    TalkerSaveSpeechLatents,
    TalkerSaveMotionLatents,
    TalkerLoadSpeechLatents,
    TalkerLoadMotionLatents,
]


def extension():
    """The ``ComfyExtension`` ComfyUI asks ``comfy_entrypoint()`` for."""
    from comfy_api.latest import ComfyExtension

    from .host import install_demo_inputs, register_model_folder

    class TalkerExtension(ComfyExtension):
        async def on_load(self) -> None:
            register_model_folder()
            install_demo_inputs()  # after `download`: the example workflows' inputs are the demo files

        async def get_node_list(self):
            register_model_folder()  # before the loaders' schemas list the folder
            return list(NODES)

    return TalkerExtension()
