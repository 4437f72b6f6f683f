"""Dialogue: a script with speaker tags → one conversation (each speaker's voice and face, one audio track).

Script format: one turn per line, ``TAG: words`` (``A: Hello there.`` / ``B: Hi!``); a line without
a tag continues the previous turn; blank lines and lines starting with ``#`` are skipped.

Every turn is generated once per speaker: the active speaker says the turn's words (T2AV with their
voice and face); everyone else listens (A2V: their face's motion sampled against silent speech of the
same length, so they nod and blink but do not talk). Each speaker's next turn continues from the
last ``carry_seconds`` of their previous one as a prefix (the long-form mechanism), so a voice keeps
its prosody and a head its pose from turn to turn: a speaking turn's prefix is the tail of the
speaker's last *spoken* turn (speech) with their latest motion (their pose after listening); a
listening turn continues from what the speaker last did. The turns' audio is joined into one track.

:func:`dialogue_blocks` renders the conversation a batch at a time: ``side_by_side`` puts the
speakers' 512×512 frames next to each other (in the order they were given), ``cuts`` shows the
active speaker only. :func:`dialogue_to_mp4` writes the batches with the one audio track straight
into an MP4 (the CLI's ``--dialogue`` and the Dialogue node): memory stays flat in the
conversation's length.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Optional

import torch

from talker_core.media.output import CRF_DEFAULT, PRESET_DEFAULT
from talker_core.pipeline.request import Hooks, Mode, TalkRequest
from talker_core.types import FPS, PATCH, SAMPLE_RATE, Identity, MotionCodes, SpeakerReference, SpeechLatents

__all__ = [
    "LAYOUTS",
    "Turn",
    "Speaker",
    "Dialogue",
    "parse_script",
    "generate_dialogue",
    "dialogue_blocks",
    "dialogue_frames",
    "dialogue_to_mp4",
]

log = logging.getLogger(__name__)

LAYOUTS = ("side_by_side", "cuts")
MAX_SPEAKERS = 8
_TAG = re.compile(r"^\s*([A-Za-z0-9_]{1,24})\s*:\s*(.*)$")
_SILENCE_SECONDS = 4.0  # silence encoded once; its steady middle is tiled to any length


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


@dataclass
class Speaker:
    voice: SpeakerReference
    face: Identity


@dataclass
class Dialogue:
    """A generated conversation: one audio track and every speaker's motion over its whole length."""

    turns: list[Turn]
    audio: torch.Tensor  # (1, N) at 24 kHz
    motions: dict[str, MotionCodes]  # per speaker, all of the same length (frames)
    active: list[str]  # the speaking tag of every frame
    turn_frames: list[int]  # frames of each turn

    @property
    def frames(self) -> int:
        return len(self.active)

    @property
    def seconds(self) -> float:
        return self.frames / FPS


def parse_script(script: str, speakers: Optional[list[str]] = None) -> list[Turn]:
    """``A: …`` / ``B: …`` lines → turns. Tags are matched case-insensitively against ``speakers``."""
    known = {s.lower(): s for s in speakers} if speakers else None
    turns: list[tuple[str, list[str]]] = []
    for number, line in enumerate(script.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _TAG.match(line)
        if match:
            tag, words = match.group(1), match.group(2).strip()
            if known is not None:
                if tag.lower() not in known:
                    raise ValueError(
                        f"dialogue script line {number}: speaker {tag!r} has no voice and face; "
                        f"the speakers are {', '.join(known.values())}"
                    )
                tag = known[tag.lower()]
            turns.append((tag, [words] if words else []))
        elif turns:
            turns[-1][1].append(line.strip())
        else:
            raise ValueError(
                f"dialogue script line {number} has no speaker tag: start each turn with 'A: ' (a tag and a colon)"
            )
    result = [Turn(tag, " ".join(words).strip()) for tag, words in turns]
    for i, turn in enumerate(result, 1):
        if not turn.text:
            raise ValueError(f"dialogue turn {i} ({turn.speaker}) has no words")
    if not result:
        raise ValueError("the dialogue script is empty: write one turn per line, e.g. 'A: Hello!' then 'B: Hi!'")
    return result


def _silence_latents(vae) -> torch.Tensor:
    from talker_core.pipeline.encode import encode_speech

    wav = torch.zeros(1, int(_SILENCE_SECONDS * SAMPLE_RATE))
    latents = encode_speech(vae, wav, SAMPLE_RATE).latents
    n = latents.shape[0]
    return latents[n // 4 : 3 * n // 4]  # away from the edges the codec sees as a cut


def _tile(block: torch.Tensor, frames: int) -> torch.Tensor:
    reps = -(-frames // block.shape[0])
    return block.repeat(reps, 1)[:frames]


@dataclass
class _History:
    spoken: Optional[torch.Tensor] = None  # (F, 32) the speaker's last spoken turn (their prosody)
    speech: Optional[torch.Tensor] = None  # (F, 32) the last turn's speech track, spoken or silent
    motion: Optional[torch.Tensor] = None  # (F, 40) the last turn's motion (their latest pose)


@torch.inference_mode()
def generate_dialogue(
    bundle,
    vae,
    turns: list[Turn],
    speakers: dict[str, Speaker],
    request: Optional[TalkRequest] = None,
    carry_seconds: float = 2.0,
    hooks: Optional[Hooks] = None,
) -> Dialogue:
    """Generate every turn for every speaker (see the module notes); returns audio and motions.

    ``request`` holds the sampling settings (its ``max_seconds`` bounds each turn, its ``seed`` the
    first turn; turn ``i`` uses ``seed + i``). ``speakers`` maps each tag of ``turns`` to a voice and face.
    """
    from talker_core.pipeline.generate import generate
    from talker_core.pipeline.render import decode_speech

    hooks = hooks or Hooks()
    request = request or TalkRequest()
    if not turns:
        raise ValueError("the dialogue has no turns")
    if not 1 <= len(speakers) <= MAX_SPEAKERS:
        raise ValueError(f"a dialogue takes 1 to {MAX_SPEAKERS} speakers, got {len(speakers)}")
    missing = sorted({t.speaker for t in turns} - set(speakers))
    if missing:
        raise ValueError(f"the script names speaker(s) {', '.join(missing)} without a voice and face")
    if not 0.0 <= carry_seconds <= 10.0:
        raise ValueError(f"carry_seconds must be in 0..10, got {carry_seconds}")
    carry = (int(carry_seconds * FPS) // PATCH) * PATCH
    silence = _silence_latents(vae) if len(speakers) > 1 else None
    history = {tag: _History() for tag in speakers}
    motions: dict[str, list[torch.Tensor]] = {tag: [] for tag in speakers}
    audio: list[torch.Tensor] = []
    active: list[str] = []
    turn_frames: list[int] = []
    samples_per_frame = SAMPLE_RATE // FPS
    total_steps = len(turns) * len(speakers)
    step = 0

    def run(tag: str, req: TalkRequest, forced: Optional[torch.Tensor]):
        spk, past = speakers[tag], history[tag]
        voice, reference_motion, prefix = spk.voice, None, 0
        # speaking: the prefix is the tail of their last spoken turn (prosody) with their latest pose;
        # listening: the tail of whatever they did last, speech and motion as they happened
        speech_src = past.spoken if forced is None else past.speech
        if speech_src is not None and past.motion is not None and carry > 0:
            prefix = min(carry, speech_src.shape[0], past.motion.shape[0]) // PATCH * PATCH
        if prefix:
            assert speech_src is not None and past.motion is not None  # prefix > 0 needs both
            voice = SpeakerReference(spk.voice.embedding, SpeechLatents(speech_src[-prefix:]))
            reference_motion = MotionCodes(past.motion[-prefix:])
        req = replace(req, prefix_seconds=prefix / FPS)
        result = generate(
            bundle,
            req,
            voice=voice,
            face=spk.face,
            reference_motion=reference_motion,
            forced_speech=None if forced is None else SpeechLatents(forced),
            hooks=hooks,
        )
        cut = result.prefix_frames
        return result, cut

    for index, turn in enumerate(turns):
        hooks.check()
        seed = (request.seed + index) % (2**63)
        talk = replace(request, text=turn.text, mode=Mode.T2AV, seed=seed)
        result, cut = run(turn.speaker, talk, None)
        speech = result.speech.latents[cut:]
        motion = result.motion.codes[cut:]
        frames = speech.shape[0]
        wav = decode_speech(vae, result.speech)[:, cut * samples_per_frame :]
        wav = wav[:, : frames * samples_per_frame]
        if wav.shape[1] < frames * samples_per_frame:
            wav = torch.nn.functional.pad(wav, (0, frames * samples_per_frame - wav.shape[1]))
        audio.append(wav)
        motions[turn.speaker].append(motion)
        history[turn.speaker] = _History(speech, speech, motion)
        step += 1
        hooks.report(step, total_steps, "dialogue")
        for tag in speakers:
            if tag == turn.speaker:
                continue
            hooks.check()
            assert silence is not None  # encoded above whenever there is a listener (two or more speakers)
            quiet = _tile(silence, frames)
            listen = replace(request, text="", mode=Mode.A2V, seed=seed, max_seconds=max(frames / FPS, 0.04) + 1.0)
            res, c = run(tag, listen, quiet)
            lm = res.motion.codes[c : c + frames]
            if lm.shape[0] < frames:  # never expected; keep the tracks aligned anyway
                lm = torch.cat([lm, lm[-1:].expand(frames - lm.shape[0], -1)], 0)
            motions[tag].append(lm)
            history[tag] = _History(history[tag].spoken, quiet, lm)
            step += 1
            hooks.report(step, total_steps, "dialogue")
        active.extend([turn.speaker] * frames)
        turn_frames.append(frames)
        log.info("dialogue turn %d/%d (%s): %.2f s", index + 1, len(turns), turn.speaker, frames / FPS)
    return Dialogue(
        turns=list(turns),
        audio=torch.cat(audio, 1),
        motions={tag: MotionCodes(torch.cat(parts, 0)) for tag, parts in motions.items()},
        active=active,
        turn_frames=turn_frames,
    )


def dialogue_blocks(
    liax,
    dialogue: Dialogue,
    speakers: dict[str, Speaker],
    layout: str = "side_by_side",
    chunk: int = 8,
    hooks: Optional[Hooks] = None,
    report: bool = True,
) -> Iterator[torch.Tensor]:
    """Render the conversation ``chunk`` frames at a time (the first frame alone, for a quick first
    preview): uint8 batches (n, 512, 512·speakers, 3) side by side, or (n, 512, 512, 3) cuts. A
    cancel through ``hooks`` stops within one frame."""
    from talker_core.pipeline.render import render_motion

    hooks = hooks or Hooks()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    tags = list(speakers)
    total = dialogue.frames
    quiet = Hooks(should_cancel=hooks.should_cancel)
    starts = [0, *range(1, total, chunk)]  # the first frame alone: the first preview comes at once
    for k, start in enumerate(starts):
        hooks.check()
        stop = starts[k + 1] if k + 1 < len(starts) else total
        if layout == "side_by_side":
            tiles = [
                render_motion(
                    liax,
                    speakers[t].face,
                    MotionCodes(dialogue.motions[t].codes[start:stop]),
                    chunk,
                    quiet,
                    as_uint8=True,
                )
                for t in tags
            ]
            block = torch.cat(tiles, 2)
        else:
            block = torch.empty((stop - start, 512, 512, 3), dtype=torch.uint8)
            i = start
            while i < stop:  # runs of the same active speaker inside the chunk
                tag = dialogue.active[i]
                j = i
                while j < stop and dialogue.active[j] == tag:
                    j += 1
                codes = MotionCodes(dialogue.motions[tag].codes[i:j])
                block[i - start : j - start] = render_motion(
                    liax, speakers[tag].face, codes, chunk, quiet, as_uint8=True
                )
                i = j
        if report:
            hooks.report(stop, total, "render")
        yield block


def dialogue_frames(
    liax,
    dialogue: Dialogue,
    speakers: dict[str, Speaker],
    layout: str = "side_by_side",
    chunk: int = 8,
    hooks: Optional[Hooks] = None,
) -> Iterator[torch.Tensor]:
    """Render the conversation frame by frame: uint8 (512, 512·speakers, 3) side by side, or (512, 512, 3) cuts."""
    for block in dialogue_blocks(liax, dialogue, speakers, layout, chunk, hooks):
        yield from block


def dialogue_to_mp4(
    liax,
    dialogue: Dialogue,
    speakers: dict[str, Speaker],
    path,
    layout: str = "side_by_side",
    chunk: int = 8,
    hooks: Optional[Hooks] = None,
    crf: int = CRF_DEFAULT,
    preset: str = PRESET_DEFAULT,
    metadata: Optional[dict] = None,
):
    """Render the conversation straight into an MP4 with its one audio track, a batch at a time.

    Memory stays flat in the conversation's length (one batch of frames); progress comes per batch
    with previews; a cancel stops within a frame and removes the partial file. Returns the path.
    """
    from talker_core.pipeline.compose import write_batches_to_mp4

    hooks = hooks or Hooks()
    blocks = dialogue_blocks(liax, dialogue, speakers, layout, chunk, hooks, report=False)
    return write_batches_to_mp4(
        blocks,
        dialogue.frames,
        path,
        audio=dialogue.audio,
        sample_rate=SAMPLE_RATE,
        hooks=hooks,
        crf=crf,
        preset=preset,
        metadata=metadata,
    )
