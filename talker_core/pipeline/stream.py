"""Streaming: speech and video frames as they are generated, for long clips in flat memory.

:func:`stream_talk` runs one request and yields :class:`StreamChunk` s — the next audio samples
and the next rendered frames — while the clip is being generated. Nothing grows with the clip's
length except the latents themselves (72 floats per frame, 4 MB for 10 minutes): speech is
decoded in overlapping chunks (:class:`~talker_core.pipeline.render.SpeechDecoder`), frames are
rendered a batch at a time and handed over at once. :func:`stream_to_mp4` feeds a stream into
the incremental MP4 writer; the command line and the ComfyUI "Render Video File" node use it.

With ``overlap`` (default: on when LIA-X runs on a GPU) generation runs in a worker thread while
the caller's thread decodes and renders (on its own CUDA stream), so rendering overlaps the
small-batch generation steps; without it, generation runs first (its latents are small) and the
frames follow. Both give the same frames and samples.

Legend: T frames at 25 fps, 960 samples per frame at 24 kHz.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from talker_core.media.output import CRF_DEFAULT, PRESET_DEFAULT
from talker_core.pipeline.generate import generate
from talker_core.pipeline.render import FrameRenderer, SpeechDecoder
from talker_core.pipeline.request import Cancelled, Hooks, TalkRequest, TalkResult
from talker_core.types import FPS, SAMPLE_RATE, Identity, MotionCodes, SpeakerReference, SpeechLatents

log = logging.getLogger(__name__)

STREAM_SPEECH_CHUNK = 8  # latent frames per speech decode while streaming (0.32 s of audio)


def _no_frames() -> torch.Tensor:
    return torch.zeros(0, 512, 512, 3, dtype=torch.uint8)


@dataclass
class StreamChunk:
    """The next part of a streamed clip (either part may be empty).

    audio: (1, k) float32 [-1, 1] at 24 kHz, samples ``audio_start … audio_start + k``.
    frames: (n, 512, 512, 3) uint8 RGB, frames ``frame_start … frame_start + n``.
    """

    audio: torch.Tensor
    frames: torch.Tensor
    audio_start: int
    frame_start: int


@dataclass
class StreamTimes:
    """Seconds from the start of :func:`stream_talk` (None until it happened)."""

    first_audio: Optional[float] = None
    first_frame: Optional[float] = None
    generation_done: Optional[float] = None
    done: Optional[float] = None
    frames: int = 0
    samples: int = 0


class TalkStream:
    """Iterate for :class:`StreamChunk` s; afterwards ``result`` holds the :class:`TalkResult` and
    ``times`` the time to first audio / first frame. Stopping the iteration early (``close()``,
    ``break``, an exception) cancels generation and waits for its thread."""

    def __init__(self, run, renderer: Optional[FrameRenderer], decoder: SpeechDecoder, hooks: Hooks, overlap: bool):
        self._run, self._renderer, self._decoder, self._hooks = run, renderer, decoder, hooks
        self.overlap = overlap
        self.result: Optional[TalkResult] = None
        self.times = StreamTimes()
        self._iter = self._chunks()

    def __iter__(self) -> Iterator[StreamChunk]:
        return self._iter

    def __next__(self) -> StreamChunk:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _chunks(self) -> Generator[StreamChunk, None, None]:
        t0 = time.perf_counter()
        rows: queue.Queue = queue.Queue()
        stop = threading.Event()
        hooks = self._hooks

        def should_cancel() -> bool:
            return stop.is_set() or (hooks.should_cancel is not None and bool(hooks.should_cancel()))

        def produce() -> None:
            try:
                result = self._run(
                    Hooks(progress=hooks.progress, should_cancel=should_cancel),
                    lambda s, m: rows.put(("rows", s, m)),
                )
                rows.put(("done", result, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
                rows.put(("error", exc, None))

        worker = None
        if self.overlap:
            worker = threading.Thread(target=produce, name="talker-generate", daemon=True)
            worker.start()
        else:
            produce()
        renderer, decoder = self._renderer, self._decoder
        stream_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if renderer is not None and renderer.device.type == "cuda" and self.overlap:
            stream_ctx = torch.cuda.stream(torch.cuda.Stream(renderer.device))
        motion: list[torch.Tensor] = []
        speech: list[torch.Tensor] = []  # latents not yet given to the decoder (video: paced by the frames)
        pending = 0

        def audio_for(frames_end: int) -> torch.Tensor:
            """Decode just enough latents that the audio of frames before ``frames_end`` is final."""
            parts = []
            while speech and decoder.frames_in < frames_end + decoder.context + decoder.chunk:
                rows = speech.pop(0)
                room = frames_end + decoder.context + decoder.chunk - decoder.frames_in
                if rows.shape[0] > room:
                    speech.insert(0, rows[room:])
                    rows = rows[:room]
                parts.append(decoder.push(rows))
            return torch.cat(parts, 1) if parts else torch.zeros(1, 0)

        frame_pos = audio_pos = 0
        try:
            with stream_ctx:
                while True:
                    items = [rows.get()]  # wait for one, then take whatever else is there (latents are small)
                    while items[-1][0] == "rows" and not rows.empty():
                        items.append(rows.get_nowait())
                    final = False
                    audio = torch.zeros(1, 0)
                    for kind, a, b in items:
                        if kind == "error":
                            raise a
                        if kind == "done":
                            final = True
                            self.result = a
                            self.times.generation_done = time.perf_counter() - t0
                        elif renderer is None:  # speech only: audio as soon as it is final, a patch at a time
                            part = decoder.push(a)
                            if part.shape[1]:
                                if self.times.first_audio is None:
                                    self.times.first_audio = time.perf_counter() - t0
                                yield StreamChunk(part, _no_frames(), audio_pos, frame_pos)
                                audio_pos += part.shape[1]
                        else:
                            speech.append(a)
                            if b is not None:
                                motion.append(b)
                                pending += b.shape[0]
                    # the first frame alone (quick first preview), then whole batches; the rest at the end
                    while (
                        renderer is not None
                        and pending
                        and (final or pending >= (1 if frame_pos == 0 else renderer.chunk))
                    ):
                        codes = torch.cat(motion) if len(motion) > 1 else motion[0]
                        take = min(pending, 1 if frame_pos == 0 else renderer.chunk)
                        audio = torch.cat([audio, audio_for(frame_pos + take)], 1)  # the sound of these frames first
                        if audio.shape[1] and self.times.first_audio is None:
                            self.times.first_audio = time.perf_counter() - t0
                        frames = renderer.render(codes[:take], first=frame_pos)
                        rest = codes[take:]
                        motion, pending = ([rest] if rest.shape[0] else []), rest.shape[0]
                        frames_u8 = (frames * 255).round().to(torch.uint8)
                        if self.times.first_frame is None:
                            self.times.first_frame = time.perf_counter() - t0
                        hooks.report(frame_pos + take, frame_pos + take + pending, "render", frames[-1])
                        chunk = StreamChunk(audio, frames_u8, audio_pos, frame_pos)
                        audio_pos += audio.shape[1]
                        frame_pos += take
                        audio = torch.zeros(1, 0)
                        yield chunk
                    if final:  # every frame is out: the rest of the sound (speech may outlast the motion)
                        audio = torch.cat([audio, audio_for(1 << 62), decoder.flush()], 1)
                        if audio.shape[1] and self.times.first_audio is None:
                            self.times.first_audio = time.perf_counter() - t0
                    if audio.shape[1]:
                        yield StreamChunk(audio, _no_frames(), audio_pos, frame_pos)
                        audio_pos += audio.shape[1]
                    if final:
                        break
        finally:
            stop.set()
            if worker is not None:
                worker.join()
            self.times.done = time.perf_counter() - t0
            self.times.frames, self.times.samples = frame_pos, audio_pos


def stream_talk(
    bundle,
    vae,
    liax,
    request: TalkRequest,
    *,
    voice: Optional[SpeakerReference] = None,
    face: Optional[Identity] = None,
    reference_motion: Optional[MotionCodes] = None,
    forced_speech: Optional[SpeechLatents] = None,
    forced_motion: Optional[MotionCodes] = None,
    hooks: Optional[Hooks] = None,
    render_chunk: int = 8,
    overlap: Optional[bool] = None,
    speech_chunk: int = STREAM_SPEECH_CHUNK,
) -> TalkStream:
    """Generate one request as a stream of (audio, frames) chunks; see the module docstring.

    The arguments are :func:`~talker_core.pipeline.generate`'s, plus the WhisperX-VAE ``vae``, the
    LIA-X ``liax`` (None, or a speech-only request, streams audio only), ``render_chunk`` frames
    per LIA-X batch, ``overlap`` (None: on when LIA-X is on a GPU) and ``speech_chunk`` latent
    frames per speech decode. Concatenated, the chunks equal ``decode_speech`` and
    ``render_motion`` of the result (to float rounding). Cancelling through ``hooks`` raises
    :class:`Cancelled` from the iteration, within one patch of generation or one frame of rendering.
    """
    hooks = hooks or Hooks()
    video = liax is not None and request.mode != "speech"
    if video and face is None:
        raise ValueError("streaming video needs the face (an Identity) to render")
    renderer = FrameRenderer(liax, face, chunk=render_chunk, hooks=hooks) if video and face is not None else None
    if overlap is None:
        overlap = renderer is not None and renderer.device.type == "cuda"
    log.info("streaming with overlap %s (render chunk %d)", "on" if overlap else "off", render_chunk)

    def run(run_hooks: Hooks, on_frames) -> TalkResult:
        return generate(
            bundle,
            request,
            voice=voice,
            face=face,
            reference_motion=reference_motion,
            forced_speech=forced_speech,
            forced_motion=forced_motion,
            hooks=run_hooks,
            on_frames=on_frames,
        )

    return TalkStream(run, renderer, SpeechDecoder(vae, speech_chunk), hooks, bool(overlap))


@dataclass
class StreamedFile:
    """What :func:`stream_to_mp4` wrote."""

    path: Path
    frames: int
    seconds: float
    result: TalkResult
    times: StreamTimes = field(default_factory=StreamTimes)


def stream_to_mp4(
    stream: TalkStream,
    path,
    *,
    crf: int = CRF_DEFAULT,
    preset: str = PRESET_DEFAULT,
    metadata: Optional[dict] = None,
    fragmented: bool = False,
) -> StreamedFile:
    """Write a stream into an MP4 as it comes (:class:`~talker_core.media.Mp4Writer`).

    Memory stays flat in the clip's length. On any error, cancellation or interruption the
    stream is stopped and the partial file removed: a file under ``path`` is always complete
    (``fragmented``: playable while written, and removed if the run fails).
    """
    from talker_core.media.output import Mp4Writer  # noqa: PLC0415

    writer = Mp4Writer(
        path, FPS, sample_rate=SAMPLE_RATE, crf=crf, preset=preset, metadata=metadata, fragmented=fragmented
    )
    try:
        for chunk in stream:
            if chunk.audio.shape[1]:
                writer.write_audio(chunk.audio)
            if chunk.frames.shape[0]:
                writer.write_frames(chunk.frames)
        out = writer.close()
    except BaseException:
        writer.abort()
        stream.close()
        raise
    assert stream.result is not None  # set when the iteration ends
    return StreamedFile(out, writer.frames_written, writer.frames_written / FPS, stream.result, stream.times)


def render_to_mp4(
    liax,
    face: Identity,
    motion: MotionCodes,
    path,
    *,
    vae=None,
    speech: Optional[SpeechLatents] = None,
    audio: Optional[torch.Tensor] = None,
    sample_rate: Optional[int] = None,
    chunk: int = 8,
    hooks: Optional[Hooks] = None,
    crf: int = CRF_DEFAULT,
    preset: str = PRESET_DEFAULT,
    metadata: Optional[dict] = None,
    fragmented: bool = False,
    preview_every: int = 25,
    compose=None,
) -> Path:
    """Render motion codes straight into an MP4, a batch at a time (memory flat in the length).

    The sound is either ``speech`` latents (decoded alongside in overlapping chunks by ``vae``,
    :class:`~talker_core.pipeline.render.SpeechDecoder`) or a waveform ``audio`` (C, N) at
    ``sample_rate``; or none. The first frame is rendered alone so the first progress report and
    preview come with it; a cancel through ``hooks`` stops within one frame and removes the
    partial file. ``compose`` (e.g. a :class:`~talker_core.media.paste.Compositor`, paste-back) maps
    each rendered uint8 batch to the frames written (any size); previews then show the composed
    frames. Returns the written path.
    """
    from talker_core.media.output import Mp4Writer  # noqa: PLC0415

    if speech is not None and audio is not None:
        raise ValueError("give the speech latents or an audio waveform for the sound, not both")
    if speech is not None and vae is None:
        raise ValueError("speech latents need the speech codec (vae) to be decoded")
    hooks = hooks or Hooks()
    renderer = FrameRenderer(liax, face, chunk=chunk, hooks=hooks)
    decoder = SpeechDecoder(vae) if speech is not None else None
    rate = SAMPLE_RATE if speech is not None else sample_rate
    channels = 1
    if audio is not None:
        if audio.ndim == 1:
            audio = audio[None]
        channels = int(audio.shape[0])
    total = motion.frames
    if total == 0:
        raise ValueError("motion is empty (0 frames); nothing to render")
    writer = Mp4Writer(
        path,
        FPS,
        sample_rate=rate if (speech is not None or audio is not None) else None,
        channels=channels,
        crf=crf,
        preset=preset,
        metadata=metadata,
        fragmented=fragmented,
    )
    try:
        start = 0
        while start < total:
            take = 1 if start == 0 else renderer.chunk
            frames = renderer.render(motion.codes[start : start + take], first=start)
            done = start + frames.shape[0]
            if decoder is not None:  # the latents of these frames (speech may be shorter or longer)
                assert speech is not None
                s = speech.latents[start:done] if done < total else speech.latents[start:]
                if s.shape[0]:
                    writer.write_audio(decoder.push(s))
                if done >= total:
                    writer.write_audio(decoder.flush())
            elif audio is not None:
                assert rate is not None
                a = int(round(start / FPS * rate))
                b = int(round(done / FPS * rate)) if done < total else audio.shape[1]
                writer.write_audio(audio[:, a:b])
            frames_u8 = (frames * 255).round().to(torch.uint8)
            if compose is not None:
                frames_u8 = compose(frames_u8)
                frames = frames_u8[-1:].float() / 255.0
            writer.write_frames(frames_u8)
            show = start == 0 or (done // preview_every) != (start // preview_every) or done == total
            hooks.report(done, total, "render", frames[-1] if show else None)
            start = done
        return writer.close()
    except BaseException:
        writer.abort()
        raise


__all__ = [
    "StreamChunk",
    "StreamTimes",
    "TalkStream",
    "stream_talk",
    "StreamedFile",
    "stream_to_mp4",
    "render_to_mp4",
    "Cancelled",
]
