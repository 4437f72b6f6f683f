"""Composed videos straight into an MP4: paste-back of ready frames, and any stream of frame batches.

:func:`write_batches_to_mp4` is the writer loop for frames that are not rendered from motion codes
here (the dialogue's composed frames, rendered frames pasted back into footage): each batch is
written when it comes, with the audio of its frames, into the incremental
:class:`~talker_core.media.Mp4Writer` (a temporary hidden name, renamed when complete; removed on
an error or a cancel). Rendering from motion codes with paste-back goes through
:func:`~talker_core.pipeline.render_to_mp4` with a :class:`~talker_core.media.paste.Compositor`
as its ``compose``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

import torch

from talker_core.media.output import CRF_DEFAULT, PRESET_DEFAULT
from talker_core.media.paste import Compositor
from talker_core.pipeline.request import Hooks
from talker_core.types import FPS, FaceCrop

__all__ = ["write_batches_to_mp4", "paste_to_mp4"]

log = logging.getLogger(__name__)


def write_batches_to_mp4(
    batches: Iterable[torch.Tensor],
    total: int,
    path,
    *,
    audio: Optional[torch.Tensor] = None,
    sample_rate: Optional[int] = None,
    hooks: Optional[Hooks] = None,
    crf: int = CRF_DEFAULT,
    preset: str = PRESET_DEFAULT,
    metadata: Optional[dict] = None,
    fragmented: bool = False,
    preview_every: int = 25,
    stage: str = "render",
) -> Path:
    """Write ``total`` frames that come as uint8 batches (n, H, W, 3) into an MP4, a batch at a time.

    ``audio`` (C, N) at ``sample_rate`` is written in step with the frames (the samples of each
    batch's time span), so neither track waits in memory. Progress is reported per batch with a
    preview (the batch's last frame) every ``preview_every`` frames; a cancel through ``hooks``
    (checked before every batch) stops and removes the partial file. Returns the written path.
    """
    from talker_core.media.output import Mp4Writer  # noqa: PLC0415

    hooks = hooks or Hooks()
    if total < 1:
        raise ValueError("there are no frames to write")
    channels = 1
    if audio is not None:
        if sample_rate is None:
            raise ValueError("give the sample_rate of the audio")
        if audio.ndim == 1:
            audio = audio[None]
        channels = int(audio.shape[0])
    writer = Mp4Writer(
        path,
        FPS,
        sample_rate=sample_rate if audio is not None else None,
        channels=channels,
        crf=crf,
        preset=preset,
        metadata=metadata,
        fragmented=fragmented,
    )
    try:
        start = 0
        it = iter(batches)
        while start < total:
            hooks.check()
            try:
                block = next(it)
            except StopIteration:
                raise ValueError(f"the frames ran out after {start} of {total}") from None
            block = block[: total - start]
            done = start + int(block.shape[0])
            if audio is not None:
                assert sample_rate is not None
                a = int(round(start / FPS * sample_rate))
                b = int(round(done / FPS * sample_rate)) if done < total else audio.shape[1]
                if b > a:
                    writer.write_audio(audio[:, a:b])
            writer.write_frames(block)
            show = start == 0 or (done // preview_every) != (start // preview_every) or done == total
            hooks.report(done, total, stage, block[-1].float() / 255.0 if show else None)
            start = done
        return writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def paste_to_mp4(
    faces: torch.Tensor,
    background,
    crop: FaceCrop,
    path,
    *,
    feather: float = 0.1,
    colour_match: bool = True,
    end: str = "loop",
    audio: Optional[torch.Tensor] = None,
    sample_rate: Optional[int] = None,
    chunk: int = 8,
    hooks: Optional[Hooks] = None,
    crf: int = CRF_DEFAULT,
    preset: str = PRESET_DEFAULT,
    metadata: Optional[dict] = None,
) -> Path:
    """Ready frames (T, h, w, 3) (e.g. an upscaler's output) pasted back into ``background`` → an MP4.

    ``background`` is what :func:`talker_core.media.paste.background_frames` takes (a still, a clip
    in memory, or a video file decoded lazily). The frames are composited ``chunk`` at a time and
    written at once; only one batch of full-resolution frames is ever in memory.
    """
    hooks = hooks or Hooks()
    if faces.ndim != 4 or faces.shape[0] == 0:
        raise ValueError(f"the rendered frames must be a batch (T, H, W, 3), got shape {tuple(faces.shape)}")
    compositor = Compositor(background, crop, feather, colour_match, end, check=hooks.check)
    total = int(faces.shape[0])

    def batches():
        for s in range(0, total, chunk):
            yield compositor(faces[s : s + chunk])

    try:
        return write_batches_to_mp4(
            batches(),
            total,
            path,
            audio=audio,
            sample_rate=sample_rate,
            hooks=hooks,
            crf=crf,
            preset=preset,
            metadata=metadata,
            stage="paste",
        )
    finally:
        compositor.close()
