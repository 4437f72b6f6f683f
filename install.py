"""Post-install check, run by ComfyUI-Manager after it installs requirements.txt.

It installs nothing (torch comes from your ComfyUI install and must not be replaced):
it checks that the pack's dependencies import, reports the torch build, and says
where the model files go. Exit status 1 when a required package is missing.

    python install.py
"""

from __future__ import annotations

import importlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
IMPORT_NAMES = {
    "pillow": "PIL",
    "opencv-python-headless": "cv2",
}  # pip names whose import name is not the pip name with "-" → "_"


def required() -> dict[str, str]:
    """import name → requirement line, read from requirements.txt (the one dependency list)."""
    out = {}
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as fh:
        for line in fh:
            spec = line.split("#", 1)[0].strip()
            if not spec:
                continue
            pip_name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].strip()
            out[IMPORT_NAMES.get(pip_name.lower(), pip_name.replace("-", "_"))] = spec
    return out


OPTIONAL = {"flash_attn": "attention 'flash_attention_2' on the loader (sdpa works without it)"}


def _registry():
    """The component registry (talker_core/weights/components.py: stdlib only, so it reads before torch is there)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from talker_core.weights.components import COMPONENTS, DOWNLOAD_COMMAND

    return list(COMPONENTS.values()), DOWNLOAD_COMMAND


def _version(module) -> str:
    return str(getattr(module, "__version__", "?"))


def main() -> int:
    print("[Talker-T2AV] checking dependencies")
    missing = []
    try:
        import torch

        cuda = torch.version.cuda or "none"
        print(f"  torch {torch.__version__} (CUDA {cuda}, GPU available: {torch.cuda.is_available()})")
    except ImportError:
        missing.append("torch (install the build that matches your GPU, as ComfyUI's README explains)")
    for name, spec in required().items():
        try:
            print(f"  {name} {_version(importlib.import_module(name))}")
        except ImportError:
            missing.append(spec)
    for name, use in OPTIONAL.items():
        try:
            importlib.import_module(name)
            print(f"  {name} found: {use}")
        except ImportError:
            print(f"  {name} not installed (optional: {use})")
    comfy_root = os.path.normpath(os.path.join(HERE, "..", ".."))
    if os.path.isfile(os.path.join(comfy_root, "main.py")):
        models = os.path.join(comfy_root, "models", "talker_t2av")
    else:  # not inside ComfyUI/custom_nodes
        models = os.path.join("ComfyUI", "models", "talker_t2av")
    components, command = _registry()
    layout = ", ".join(c.release + (f"/ ({c.weights_file} + tokenizer)" if c.is_folder else "") for c in components)
    print(
        "[Talker-T2AV] model files go in " + models + " (or a 'talker_t2av' entry in extra_model_paths.yaml):\n"
        f"  {layout}\n"
        f"  Fetch them with `{command.format(models_dir='<that folder>')}` from this folder, or turn on "
        "download_if_missing on a loader node."
    )
    if missing:
        print("[Talker-T2AV] missing packages: " + ", ".join(missing))
        print("  install them into ComfyUI's Python: <python> -m pip install -r requirements.txt")
        return 1
    print("[Talker-T2AV] all dependencies found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
