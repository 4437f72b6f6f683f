"""Post-install check, run by ComfyUI-Manager after it installs requirements.txt.

It installs nothing (torch comes from your ComfyUI install and must not be replaced):
it checks that the pack's dependencies import, reports the torch build, and says
where the model files go. Exit status 1 when a required package is missing.

    python install.py
"""

from __future__ import annotations

import importlib
import os
import sys

REQUIRED = {  # import name → pip name (requirements.txt)
    "transformers": "transformers>=4.51.0",
    "tokenizers": "tokenizers>=0.21",
    "safetensors": "safetensors>=0.4.3",
    "numpy": "numpy>=1.25",
    "av": "av>=12.0",
    "imageio_ffmpeg": "imageio-ffmpeg>=0.5",
    "huggingface_hub": "huggingface_hub>=0.30",
}
OPTIONAL = {
    "flash_attn": "attention 'flash_attention_2' on the loader (sdpa works without it)",
    "cv2": "face framing in Encode Face, OpenCV 4.x from requirements.txt (faces are centre-cropped without it)",
}


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
    for name, spec in REQUIRED.items():
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
    here = os.path.dirname(os.path.abspath(__file__))
    comfy_root = os.path.normpath(os.path.join(here, "..", ".."))
    if os.path.isfile(os.path.join(comfy_root, "main.py")):
        models = os.path.join(comfy_root, "models", "talker_t2av")
    else:  # not inside ComfyUI/custom_nodes
        models = os.path.join("ComfyUI", "models", "talker_t2av")
    print(
        "[Talker-T2AV] model files go in " + models + " (or a 'talker_t2av' entry in extra_model_paths.yaml):\n"
        "  talker-t2av/ (model.safetensors + tokenizer), whisperx-vae/model.ckpt, lia-x.pt, "
        "wavlm_large_finetune.pth\n"
        "  Fetch them with `python -m talker_core download --models <that folder>` from this folder, or turn on "
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
