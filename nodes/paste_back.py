"""Paste-back node: rendered frames composited into the original photo or footage at full resolution."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from talker_core.media.paste import MAX_FEATHER

from . import host
from .sockets import CATEGORY, TalkerFace


class TalkerPasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TalkerPasteBack",
            display_name="Paste Back",
            category=f"{CATEGORY}/decode",
            description="Put the rendered face back into the original picture: each frame is resized to the square "
            "the face was cut from (recorded by Encode Face) in the background's own resolution and blended in "
            "with a feathered seam. Frames of any size work (chain an upscaler before this node); a background "
            "of another size than the original gets the square scaled. Connect images and fps to Create Video.",
            inputs=[
                io.Image.Input("images", tooltip="The rendered frames (Render Video, or an upscaler after it)."),
                TalkerFace.Input("face", tooltip="The face they were rendered from (Encode Face): holds the square."),
                io.Image.Input(
                    "background",
                    tooltip="The original image the face came from, or the original video's frames (a clip "
                    "shorter than the render plays forwards then backwards).",
                ),
                io.Float.Input(
                    "feather",
                    default=0.1,
                    min=0.0,
                    max=MAX_FEATHER,
                    step=0.01,
                    tooltip="Seam width as a share of the square's side (0 = hard edge). Edges on the picture's "
                    "border stay hard.",
                ),
                io.Boolean.Input(
                    "colour_match",
                    default=True,
                    tooltip="Match the face's colours to the picture under the square (measured on the first "
                    "frame, so there is no flicker).",
                ),
            ],
            outputs=[
                io.Image.Output("pasted", display_name="images", tooltip="Full-resolution frames."),
                io.Float.Output("fps", display_name="fps", tooltip="Frame rate (25)."),
            ],
        )

    @classmethod
    def execute(cls, images, face, background, feather, colour_match) -> io.NodeOutput:
        import comfy.model_management as mm

        from talker_core.media.paste import box_in, paste_frames
        from talker_core.types import FPS

        if face is None or face.crop is None:
            raise ValueError("face has no crop box: connect the face from Talker-T2AV Encode Face")
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be a batch of frames (N, H, W, 3), got shape {tuple(images.shape)}")
        bg = background if background.ndim == 4 else background[None]
        n, h, w = int(images.shape[0]), int(bg.shape[1]), int(bg.shape[2])
        box_in(face.crop, w, h)  # fails early on an unusable background
        out = torch.empty((n, h, w, 3), dtype=torch.float32, device=mm.intermediate_device())
        hooks = host.make_hooks()
        with host.interruptible():
            for i, frame in enumerate(paste_frames(images, bg, face.crop, feather, colour_match, count=n)):
                hooks.check()
                out[i] = frame.to(out.device, torch.float32) / 255.0
                hooks.report(i + 1, n, "paste")
        return io.NodeOutput(out, float(FPS))
