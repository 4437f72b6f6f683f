"""What a caller asks for and gets back: modes, hooks, the request and the result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import torch

from talker_core.params import PARAMS, default
from talker_core.pipeline.text import unspeakable_message
from talker_core.types import (
    MotionCodes,
    SpeechLatents,
)

log = logging.getLogger(__name__)

MAX_SEGMENT_FRAMES = 750  # the model's training length: 30 s at 25 fps
MAX_REFERENCE_SECONDS = 30.0
MIN_REFERENCE_SECONDS = 0.5
MAX_TEXT_CHARS = 10_000  # about 10 minutes of speech; longer texts are refused, not silently cut


@dataclass(frozen=True)
class InputNames:
    """How a host names the inputs in wiring errors (the nodes' sockets, the CLI's options)."""

    text: str = "text"
    voice: str = "voice"
    face: str = "face"
    forced_speech: str = "forced_speech"
    forced_motion: str = "forced_motion"
    speech_only: str = "speech_only"
    given: str = "given"  # "connected" for sockets
    voice_hint: str = ""
    face_hint: str = ""


class Mode:
    """Which streams are sampled; :meth:`from_inputs` / :meth:`check` are the one wiring check."""

    T2AV = "t2av"  # speech and motion sampled from text
    A2V = "a2v"  # speech given (forced), motion sampled
    V2A = "v2a"  # motion given (forced), speech sampled
    SPEECH = "speech"  # speech only

    ALL = (T2AV, A2V, V2A, SPEECH)
    NAMES = {T2AV: "T2AV", A2V: "A2V", V2A: "V2A", SPEECH: "speech only"}

    @staticmethod
    def from_inputs(
        *,
        speech_only: bool = False,
        forced_speech: bool = False,
        forced_motion: bool = False,
        names: InputNames = InputNames(),
    ) -> str:
        """The mode that follows from what is given: a forced speech stream → A2V, a forced motion
        stream → V2A, ``speech_only`` → speech only, else T2AV. Contradictions raise ValueError."""
        if forced_speech and forced_motion:
            raise ValueError(
                f"{names.forced_speech} and {names.forced_motion} are both {names.given}: force one stream and let "
                f"the model sample the other ({names.forced_speech} → audio-driven video, {names.forced_motion} → dubbing)"
            )
        if speech_only:
            if forced_speech or forced_motion:
                forced = names.forced_speech if forced_speech else names.forced_motion
                raise ValueError(
                    f"{names.speech_only} is on, but {forced} is {names.given}: remove it or turn {names.speech_only} off"
                )
            return Mode.SPEECH
        if forced_speech:
            return Mode.A2V
        return Mode.V2A if forced_motion else Mode.T2AV

    @staticmethod
    def check(
        mode: str,
        *,
        text: Optional[str] = None,
        voice: bool,
        face: bool,
        forced_speech: bool = False,
        forced_motion: bool = False,
        names: InputNames = InputNames(),
    ) -> None:
        """What ``mode`` needs, with errors naming the inputs (``text=None``: not checked here)."""
        if mode not in Mode.ALL:
            raise ValueError(f"mode must be one of {', '.join(Mode.ALL)}, got {mode!r}")
        name = Mode.NAMES[mode]
        if forced_speech and forced_motion:
            Mode.from_inputs(forced_speech=True, forced_motion=True, names=names)
        if mode == Mode.A2V and not forced_speech:
            raise ValueError(
                f"A2V (audio-driven video) needs driving speech: {names.forced_speech} is not {names.given}"
            )
        if mode == Mode.V2A and not forced_motion:
            raise ValueError(
                f"V2A (dubbing) needs driving motion from a talking clip: {names.forced_motion} is not {names.given}"
            )
        if mode in (Mode.T2AV, Mode.SPEECH) and (forced_speech or forced_motion):
            raise ValueError(f"{name} samples every stream; use mode 'a2v' or 'v2a' to drive one")
        if text is not None and mode in (Mode.T2AV, Mode.SPEECH):
            message = unspeakable_message(text, names.text, name)
            if message is not None:
                raise ValueError(message)
        if mode in (Mode.T2AV, Mode.V2A, Mode.SPEECH) and not voice:
            raise ValueError(f"{names.voice} is not {names.given}: {name} needs a reference voice{names.voice_hint}")
        if mode in (Mode.T2AV, Mode.A2V) and not face:
            raise ValueError(
                f"{names.face} is not {names.given}: {name} makes a video and needs a face{names.face_hint}"
            )


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
    """One generation request. Defaults, ranges and meanings: :data:`talker_core.params.PARAMS`
    (the paper's recipe)."""

    text: str = ""
    mode: str = Mode.T2AV
    seed: int = default("seed")
    steps: int = default("steps")
    cfg: float = default("cfg")
    temperature: float = default("temperature")
    sway: float = default("sway")
    cfg_zero_star: bool = default("cfg_zero_star")
    stop_threshold: float = default("stop_threshold")
    stop_consecutive: int = default("stop_consecutive")
    prefix_seconds: float = default("prefix_seconds")
    max_seconds: float = default("max_seconds")
    segment_prefix_seconds: float = default("segment_prefix_seconds")
    max_segment_seconds: float = default("max_segment_seconds")
    max_segment_chars: int = default("max_segment_chars")
    max_prompt_tokens: int = 1000

    def __post_init__(self):
        if self.mode not in Mode.ALL:
            raise ValueError(f"mode must be one of {', '.join(Mode.ALL)}, got {self.mode!r}")
        for name, spec in PARAMS.items():
            value = getattr(self, name)
            if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            spec.check(value)
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
