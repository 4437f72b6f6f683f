"""UI payloads our nodes return: a summary line and a small motion/speech plot.

The ``executed`` message of a node carries its ``ui`` dict to the browser, where
``web/talker_t2av.js`` draws it on the node. Keys:

- ``text``: ``[summary line]`` (ComfyUI's text payload shape).
- ``talker_plot``: ``[{"fps", "frames", "seconds", "prefix_seconds", "series": [{"name", "seconds",
  "values"}]}]``; each series spans its own ``seconds`` from t = 0,
  values down-sampled to at most :data:`MAX_POINTS` per series and rounded, so the
  payload stays a few kB whatever the length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

MAX_POINTS = 320
MOTION_DIMS = 3  # the first few motion dimensions are drawn next to the energies


def _bin(values: torch.Tensor, points: int) -> list[float]:
    """(T,) → at most ``points`` bin means, rounded to 4 decimals."""
    t = values.shape[0]
    if t == 0:
        return []
    if t > points:
        edges = torch.linspace(0, t, points + 1).round().long()
        values = torch.stack(
            [
                values[a:b].mean() if b > a else values[min(a, t - 1)]
                for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)
            ]
        )
    return [round(float(v), 4) for v in values]


def motion_plot(speech, motion, prefix_frames: int = 0, fps: int = 25) -> dict:
    """Per-frame speech activity, motion energy and a few motion dimensions over time."""
    series = []
    frames = 0
    if speech is not None:
        lat = speech.latents.float()
        frames = max(frames, lat.shape[0])
        series.append(("speech activity", lat.pow(2).mean(dim=1).sqrt()))
    if motion is not None:
        codes = motion.codes.float()
        frames = max(frames, codes.shape[0])
        delta = torch.zeros(codes.shape[0])
        if codes.shape[0] > 1:
            delta[1:] = (codes[1:] - codes[:-1]).norm(dim=1)
        series.append(("motion energy", delta))
        for d in range(min(MOTION_DIMS, codes.shape[1])):
            series.append((f"motion dim {d}", codes[:, d]))
    points = min(MAX_POINTS, max(frames, 1))
    return {
        "fps": fps,
        "frames": frames,
        "seconds": round(frames / fps, 3),
        "prefix_seconds": round(prefix_frames / fps, 3),
        "series": [
            {"name": name, "seconds": round(v.shape[0] / fps, 3), "values": _bin(v, points)} for name, v in series
        ],
    }


def summary_ui(text: str, plot: Optional[dict] = None, warnings: Sequence[str] = ()) -> dict:
    """The ``ui`` payload; ``warnings`` (e.g. from ``host.collect_warnings``) are appended to the summary line."""
    text = "".join([text, *(f"  ⚠ {w}" for w in dict.fromkeys(warnings))])
    ui = {"text": [text]}
    if plot is not None:
        ui["talker_plot"] = [plot]
    return ui
