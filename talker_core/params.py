"""The generation parameters, written once: name, type, default, range and help.

This table drives :class:`talker_core.pipeline.TalkRequest` validation, the defaults of
:class:`talker_core.generation.engine.SamplingSettings`, the sampler node's widgets
(nodes/sampler.py: default, min, max, tooltip) and the CLI's options
(talker_core/cli/generate.py). Defaults are the paper's recipe. Pure data: no imports
beyond the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = ["Param", "PARAMS", "param", "default"]

Number = Union[int, float]


@dataclass(frozen=True)
class Param:
    """One generation parameter. ``minimum`` / ``maximum`` are inclusive; None = unbounded."""

    name: str
    kind: type  # int, float or bool
    default: Union[Number, bool]
    minimum: Optional[Number]
    maximum: Optional[Number]
    help: str

    @property
    def range_text(self) -> str:
        if self.kind is bool:
            return "true or false"
        lo = "" if self.minimum is None else f"{self.minimum:g}"
        hi = "" if self.maximum is None else f"{self.maximum:g}"
        if self.maximum is None:
            return f">= {lo}"
        if self.minimum is None:
            return f"<= {hi}"
        return f"{lo}..{hi}"

    def check(self, value: object) -> None:
        """Raise ValueError naming the parameter and its range unless ``value`` is valid."""
        if self.kind is bool:
            if not isinstance(value, bool) and value not in (0, 1):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.name} must be a number ({self.range_text}), got {value!r}")
        if self.kind is int and int(value) != value:
            raise ValueError(f"{self.name} must be a whole number ({self.range_text}), got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{self.name} must be finite ({self.range_text}), got {value!r}")
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ValueError(f"{self.name} must be in {self.range_text}, got {value!r}")


PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("seed", int, 0, 0, 2**64 - 1, "Noise seed; the same seed gives the same result on any device."),
        Param("steps", int, 10, 1, 200, "Flow-matching (Euler) steps per 4-frame patch; the paper uses 10."),
        Param("cfg", float, 2.0, 0.0, 20.0, "Classifier-free guidance strength; 2.0 as in the paper, 1.0 disables it."),
        Param(
            "temperature", float, 0.3, 0.0, 5.0, "Scale of the starting noise: lower is steadier, higher more varied."
        ),
        Param("sway", float, 1.0, -1.0, 2.0, "Sway sampling coefficient of the time grid (1.0 as in the reference)."),
        Param(
            "cfg_zero_star",
            bool,
            True,
            None,
            None,
            "CFG-Zero*: skip the first step and rescale guidance (as in the reference).",
        ),
        Param(
            "stop_threshold",
            float,
            0.5,
            0.0,
            1.0,
            "End of speech when the stop head's probability stays at or above this for 3 patches "
            "(stop_consecutive; T2AV and speech only).",
        ),
        Param("stop_consecutive", int, 3, 1, None, "Consecutive stop votes that end the generation."),
        Param(
            "prefix_seconds",
            float,
            0.0,
            0.0,
            30.0,
            "Style cloning: feed this much of the reference (voice latents and reference motion) as a "
            "prefix, so prosody and head motion continue its style. 0: the reference sets only timbre "
            "and appearance.",
        ),
        Param("max_seconds", float, 30.0, 0.16, 3600.0, "Upper bound on the generated length, all segments together."),
        Param(
            "segment_prefix_seconds",
            float,
            2.0,
            0.0,
            10.0,
            "Long form: how much of each segment's end is fed to the next as its prefix, carrying voice "
            "and motion over.",
        ),
        Param(
            "max_segment_seconds",
            float,
            30.0,
            0.16,
            30.0,
            "Long form: length bound of one segment (at most 30 s, the training length).",
        ),
        Param("max_segment_chars", int, 300, 20, None, "Long form: text budget of one segment (split at sentences)."),
    )
}


def param(name: str) -> Param:
    return PARAMS[name]


def default(name: str) -> Any:
    """The default of ``name`` (typed Any so that dataclass fields can take it)."""
    return PARAMS[name].default
