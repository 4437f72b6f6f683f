"""Splitting long texts at sentence and clause boundaries for long-form generation."""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

# ----------------------------------------------------------------------------------------------
# text segmentation (long form)

# A sentence ends at . ! ? ; … (and their CJK forms), optionally followed by closing quotes/brackets.
_SENTENCE_END = re.compile(r"(?<=[.!?;…。！？；])[\"'”’)\]）」』]*\s+|(?<=[。！？；])")
_CLAUSE_END = re.compile(r"(?<=[,:，、：])\s*")


def _pieces(text: str, pattern: re.Pattern) -> list[str]:
    return [p.strip() for p in pattern.split(text) if p and p.strip()]


def split_text(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into segments of at most ``max_chars`` characters at sentence boundaries.

    A sentence longer than the budget is split at clause marks (, : ，、：), then at
    spaces, then (for scripts without spaces) hard at the budget.
    """
    text = " ".join(text.split())
    if not text:
        return []
    units: list[str] = []
    for sentence in _pieces(text, _SENTENCE_END):
        if len(sentence) <= max_chars:
            units.append(sentence)
            continue
        for clause in _pieces(sentence, _CLAUSE_END):
            while len(clause) > max_chars:
                cut = clause.rfind(" ", 0, max_chars + 1)
                cut = cut if cut > 0 else max_chars
                units.append(clause[:cut].strip())
                clause = clause[cut:].strip()
            if clause:
                units.append(clause)
    segments: list[str] = []
    for unit in units:
        joiner = "" if segments and _is_cjk(segments[-1][-1:]) else " "
        if segments and len(segments[-1]) + len(joiner) + len(unit) <= max_chars:
            segments[-1] = segments[-1] + joiner + unit
        else:
            segments.append(unit)
    return segments


def _is_cjk(ch: str) -> bool:
    return bool(ch) and ("\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uff00" <= ch <= "\uffef")


# ----------------------------------------------------------------------------------------------
# speakable content


def unspeakable_reason(text: str) -> Optional[str]:
    """Why ``text`` has nothing to say, or None when it holds at least one letter or digit.

    Empty text, whitespace, invisible characters (zero-width spaces, joiners, direction marks, control
    characters, unassigned or private-use code points), lone combining marks, punctuation and symbols
    give nothing a voice can speak; the reason names what was found.
    """
    if not text:
        return "the text is empty"
    if any(unicodedata.category(ch)[0] in "LN" for ch in text):
        return None
    if not text.strip():
        return f"the text is empty (only whitespace: {_describe_chars(text)})"
    visible = [ch for ch in text if unicodedata.category(ch)[0] in "PS"]
    invisible = [ch for ch in text if not ch.isspace() and unicodedata.category(ch)[0] not in "PS"]
    parts = []
    if invisible:
        parts.append(
            f"{len(invisible)} invisible or non-speakable character{'s' if len(invisible) != 1 else ''} "
            f"({_describe_chars(''.join(invisible))})"
        )
    if visible:
        shown = "".join(dict.fromkeys(visible))[:20]
        parts.append(f"punctuation or symbols ({shown!r})")
    return "the text has no letters or digits to speak: it holds " + " and ".join(parts)


def unspeakable_message(text: str, input_name: str, mode_name: str) -> Optional[str]:
    """The error for a text with nothing to speak, naming the input and the mode; None when it is speakable."""
    if not text or not text.strip():
        return f"{input_name} is empty: {mode_name} needs the words to speak"
    reason = unspeakable_reason(text)
    return None if reason is None else f"{input_name}: {reason}; {mode_name} needs the words to speak"


def _describe_chars(text: str, limit: int = 4) -> str:
    seen = list(dict.fromkeys(text))
    names = [f"U+{ord(ch):04X} {unicodedata.name(ch, unicodedata.category(ch))}" for ch in seen[:limit]]
    more = f", and {len(seen) - limit} more" if len(seen) > limit else ""
    return ", ".join(names) + more


def check_speakable(text: str, what: str = "text") -> None:
    """Raise ValueError naming ``what`` when the text has nothing to speak (see :func:`unspeakable_reason`)."""
    reason = unspeakable_reason(text)
    if reason is not None:
        raise ValueError(f"{what}: {reason}; give the words to speak")
