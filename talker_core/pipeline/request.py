"""What a caller asks for and gets back: modes, hooks, the request and the result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch

from talker_core.types import (
    MotionCodes,
    SpeechLatents,
)

log = logging.getLogger(__name__)

MAX_SEGMENT_FRAMES = 750  # the model's training length: 30 s at 25 fps
MAX_REFERENCE_SECONDS = 30.0
MIN_REFERENCE_SECONDS = 0.5
MAX_TEXT_CHARS = 10_000  # about 10 minutes of speech; longer texts are refused, not silently cut


class Mode:
    """Which streams are sampled."""

    T2AV = "t2av"  # speech and motion sampled from text
    A2V = "a2v"  # speech given (forced), motion sampled
    V2A = "v2a"  # motion given (forced), speech sampled
    SPEECH = "speech"  # speech only

    ALL = (T2AV, A2V, V2A, SPEECH)


class Cancelled(Exception):
    """The host asked to stop; nothing partial was returned."""


@dataclass
class Hooks:
    """Host callbacks. All optional; each is called from the working thread.

    progress(done, total, stage, preview): stage is "generate" (per patch) or
        "render" (per frame); preview is an optional (H, W, 3) float [0, 1] frame.
    should_cancel(): polled every patch and every rendered chunk; return True to
        stop (raises :class:`Cancelled`).
    """

    progress: Optional[Callable[[int, int, str, Optional[torch.Tensor]], None]] = None
    should_cancel: Optional[Callable[[], bool]] = None

    def report(self, done: int, total: int, stage: str, preview: Optional[torch.Tensor] = None) -> None:
        if self.progress is not None:
            self.progress(done, total, stage, preview)

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("cancelled by the host")


@dataclass
class TalkRequest:
    """One generation request. Sampling defaults are the paper's recipe."""

    text: str = ""
    mode: str = Mode.T2AV
    seed: int = 0
    steps: int = 10
    cfg: float = 2.0
    temperature: float = 0.3
    sway: float = 1.0
    cfg_zero_star: bool = True
    stop_threshold: float = 0.5
    stop_consecutive: int = 3
    prefix_seconds: float = 0.0  # style cloning: seconds of the reference fed as a prefix
    max_seconds: float = 30.0  # length bound of the generated part (all segments together)
    segment_prefix_seconds: float = 2.0  # long form: tail of the previous segment fed to the next
    max_segment_seconds: float = 30.0  # long form: length bound of one segment (≤ 30 s, the training length)
    max_segment_chars: int = 300  # long form: text budget of one segment (split at sentences)
    max_prompt_tokens: int = 1000

    def __post_init__(self):
        if self.mode not in Mode.ALL:
            raise ValueError(f"mode must be one of {', '.join(Mode.ALL)}, got {self.mode!r}")
        checks = [
            (1 <= self.steps <= 200, f"steps must be in 1..200, got {self.steps}"),
            (0.0 <= self.cfg <= 20.0, f"cfg must be in 0..20, got {self.cfg}"),
            (0.0 <= self.temperature <= 5.0, f"temperature must be in 0..5, got {self.temperature}"),
            (-1.0 <= self.sway <= 2.0, f"sway must be in -1..2, got {self.sway}"),
            (0.0 < self.stop_threshold <= 1.0, f"stop_threshold must be in (0, 1], got {self.stop_threshold}"),
            (self.stop_consecutive >= 1, f"stop_consecutive must be >= 1, got {self.stop_consecutive}"),
            (
                0.0 <= self.prefix_seconds <= MAX_REFERENCE_SECONDS,
                f"prefix_seconds must be in 0..{MAX_REFERENCE_SECONDS:g}, got {self.prefix_seconds}",
            ),
            (0.0 < self.max_seconds <= 3600.0, f"max_seconds must be in (0, 3600], got {self.max_seconds}"),
            (
                0.0 <= self.segment_prefix_seconds <= 10.0,
                f"segment_prefix_seconds must be in 0..10, got {self.segment_prefix_seconds}",
            ),
            (self.max_segment_chars >= 20, f"max_segment_chars must be >= 20, got {self.max_segment_chars}"),
            (
                0.16 <= self.max_segment_seconds <= 30.0,
                f"max_segment_seconds must be in 0.16..30, got {self.max_segment_seconds}",
            ),
            (0 <= self.seed < 2**64, f"seed must be in 0..2^64-1, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if not isinstance(self.text, str):
            raise ValueError("text must be a string")


@dataclass
class TalkResult:
    """Everything a run produced. ``speech``/``motion`` include the reference prefix, as the reference does."""

    speech: SpeechLatents
    motion: Optional[MotionCodes]
    generated_seconds: float
    wall_seconds: float
    segments: int = 1  # segments generated
    segments_planned: int = 1  # segments the text / forced stream was split into
    prefix_frames: int = 0
    p_stop: list = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Wall seconds per generated second (lower is faster; < 1 is faster than real time)."""
        return self.wall_seconds / max(self.generated_seconds, 1e-9)

    def summary(self) -> str:
        return (
            f"{self.generated_seconds:.2f} s generated in {self.wall_seconds:.2f} s "
            f"(RTF {self.realtime_factor:.2f}, {self.segments} segment{'s' if self.segments != 1 else ''})"
        )
