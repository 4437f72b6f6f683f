"""Stand-in for ComfyUI's ``comfy`` package (only what our nodes use)."""
