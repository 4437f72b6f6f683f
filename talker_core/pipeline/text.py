"""Splitting long texts at sentence and clause boundaries for long-form generation."""

from __future__ import annotations

import re

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
