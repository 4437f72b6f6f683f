"""ComfyUI-Talker-T2AV: text + a voice + a face → speech and a talking-face video.

ComfyUI loads this file as a V3 node pack: it calls ``comfy_entrypoint()``, which
imports the nodes (``nodes/``) and returns the extension. Importing this file alone
does nothing else and needs no ComfyUI, so tools and tests can import it anywhere.
The plain PyTorch library is ``talker_core/``.
"""

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]


async def comfy_entrypoint():
    """The pack's ``ComfyExtension`` (ComfyUI ≥ 0.3.6x V3 loading)."""
    from .nodes import extension

    return extension()
