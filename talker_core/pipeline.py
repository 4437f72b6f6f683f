"""From media to talking video: reference encoding, generation, decoding, rendering.

This is the layer the command line and the ComfyUI nodes call. It owns the
glue the reference's ``infer.py`` does inline (audio preparation, prefix
selection, motion normalisation, long-form segmentation) and leaves the numerics
to the components.

Legend: T frames at 25 Hz, N samples, H×W image size.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch

from .types import (
    FPS,
    MOTION_DIM,
    PATCH,
    SAMPLE_RATE,
    Identity,
    MotionCodes,
    MotionStats,
    SpeakerReference,
    SpeechLatents,
)

__all__ = [
    "MAX_SEGMENT_FRAMES",
    "Mode",
    "Hooks",
    "Cancelled",
    "TalkRequest",
    "TalkResult",
    "encode_voice",
    "encode_speech",
    "encode_face",
    "encode_motion",
    "motion_from_reference_pt",
    "generate",
    "decode_speech",
    "render_motion",
    "RenderOutOfMemory",
    "split_text",
]

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
            (0.0 <= self.prefix_seconds <= MAX_REFERENCE_SECONDS,
             f"prefix_seconds must be in 0..{MAX_REFERENCE_SECONDS:g}, got {self.prefix_seconds}"),
            (0.0 < self.max_seconds <= 3600.0, f"max_seconds must be in (0, 3600], got {self.max_seconds}"),
            (0.0 <= self.segment_prefix_seconds <= 10.0,
             f"segment_prefix_seconds must be in 0..10, got {self.segment_prefix_seconds}"),
            (self.max_segment_chars >= 20, f"max_segment_chars must be >= 20, got {self.max_segment_chars}"),
            (0.16 <= self.max_segment_seconds <= 30.0,
             f"max_segment_seconds must be in 0.16..30, got {self.max_segment_seconds}"),
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


# ----------------------------------------------------------------------------------------------
# helpers


def _device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _as_waveform(waveform: torch.Tensor, sample_rate: int, what: str) -> torch.Tensor:
    """Validate an audio tensor and return it as (C, N) float32 on the CPU."""
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"{what}: expected an audio tensor, got {type(waveform).__name__}")
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim == 3:  # ComfyUI AUDIO: (B, C, N)
        if waveform.shape[0] != 1:
            raise ValueError(f"{what}: expected one clip, got a batch of {waveform.shape[0]}")
        waveform = waveform[0]
    if waveform.ndim != 2 or waveform.shape[0] < 1 or waveform.shape[0] > 64:
        raise ValueError(f"{what}: expected audio shaped (channels, samples), got {tuple(waveform.shape)}")
    if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 768_000:
        raise ValueError(f"{what}: sample rate {sample_rate!r} is not a plausible audio rate")
    waveform = waveform.detach().to("cpu", torch.float32)
    if not torch.isfinite(waveform).all():
        raise ValueError(f"{what}: the audio contains NaN or infinite samples; clean or re-export it")
    return waveform


def _check_audible(wav: torch.Tensor, sample_rate: int, what: str) -> None:
    seconds = wav.shape[-1] / sample_rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise ValueError(
            f"{what} is {seconds:.2f} s long; give at least {MIN_REFERENCE_SECONDS:g} s of clear speech "
            "(3-10 s works best)"
        )
    if float(wav.abs().max()) < 1e-4:
        raise ValueError(f"{what} is silent; give a recording of the voice to clone")


def _latent_frames(n_samples_16k: int) -> int:
    return max(1, min(int(n_samples_16k / 16000 * FPS), MAX_SEGMENT_FRAMES))


# ----------------------------------------------------------------------------------------------
# reference encoding


@torch.inference_mode()
def _vae_encode(vae, wav_mono: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Encode at most 30 s of mono audio (1, N) the way the reference prepares it.

    Returns (latents (T, 32) float32 CPU, 16 kHz signal (1, N16) trimmed to the latent length, T).
    """
    from .audio_frontend import resample, whisper_log_mel

    device, dtype = _device_dtype(vae)
    wav16 = resample(wav_mono, sample_rate, 16000)[:, : int(16000 * MAX_REFERENCE_SECONDS)]
    wav24 = resample(wav_mono, sample_rate, SAMPLE_RATE)[:, : int(SAMPLE_RATE * MAX_REFERENCE_SECONDS)]
    frames = _latent_frames(wav16.shape[-1])
    mel = whisper_log_mel(wav16)  # (128, 3000): the 16 kHz signal padded to 30 s
    wav24 = wav24[:, : frames * (SAMPLE_RATE // FPS)]
    latents = vae.encode(wav24[None].to(device, dtype), mel[None].to(device, dtype))
    latents = latents[0, :frames].float().cpu()
    return latents, wav16[:, : frames * (16000 // FPS)], frames


@torch.inference_mode()
def encode_voice(vae, speaker_encoder, waveform: torch.Tensor, sample_rate: int,
                 max_seconds: float = MAX_REFERENCE_SECONDS) -> SpeakerReference:
    """Reference voice → speaker embedding (256,) and speech latents (T, 32).

    waveform: (C, N) or ComfyUI's (1, C, N), any rate, any channel count (mixed to mono).
    At most ``max_seconds`` (≤ 30) are used, as in the reference.
    """
    from .audio_frontend import to_mono

    wav = _as_waveform(waveform, sample_rate, "reference audio")
    limit = min(float(max_seconds), MAX_REFERENCE_SECONDS)
    wav = to_mono(wav)[:, : int(round(limit * sample_rate))]
    _check_audible(wav, sample_rate, "reference audio")
    latents, wav16, _ = _vae_encode(vae, wav, sample_rate)
    device, dtype = _device_dtype(speaker_encoder)
    embedding = speaker_encoder(wav16.to(device, dtype)).float().cpu()[0]
    return SpeakerReference(embedding=embedding, speech=SpeechLatents(latents))


@torch.inference_mode()
def encode_speech(vae, waveform: torch.Tensor, sample_rate: int,
                  max_seconds: Optional[float] = None, hooks: Optional[Hooks] = None) -> SpeechLatents:
    """Driving audio (A2V) → speech latents (T, 32) at 25 Hz, any length.

    Long audio is encoded in 30 s windows (the codec's semantic branch sees 30 s at a time).
    """
    from .audio_frontend import to_mono

    hooks = hooks or Hooks()
    wav = to_mono(_as_waveform(waveform, sample_rate, "driving audio"))
    if max_seconds is not None:
        wav = wav[:, : int(round(max_seconds * sample_rate))]
    if wav.shape[-1] < sample_rate / FPS:
        raise ValueError(f"driving audio is {wav.shape[-1] / sample_rate:.3f} s long; give at least one frame (0.04 s)")
    window = int(MAX_REFERENCE_SECONDS * sample_rate)
    pieces = []
    starts = list(range(0, wav.shape[-1], window))
    for i, start in enumerate(starts):
        hooks.check()
        chunk = wav[:, start: start + window]
        if chunk.shape[-1] < sample_rate // FPS:  # less than one latent frame left
            break
        latents, _, _ = _vae_encode(vae, chunk, sample_rate)
        pieces.append(latents)
        hooks.report(i + 1, len(starts), "encode")
    return SpeechLatents(torch.cat(pieces, 0))


@torch.inference_mode()
def encode_face(liax, image: torch.Tensor, stats: Optional[MotionStats] = None) -> Identity:
    """A face image → LIA-X identity.

    image: (H, W, C) or (1, H, W, C), float in [0, 1] or uint8, C in {1, 3, 4}; non-square
    images are centre-cropped, then resized to 512×512.
    """
    stats = stats or MotionStats.release()
    from .media import prepare_identity_image

    source = prepare_identity_image(image, name="face image")  # (3, 512, 512) in [-1, 1]
    device, dtype = _device_dtype(liax)
    z, feats = liax.encode_identity(source[None].to(device, dtype))
    alpha = liax.motion_code(z).float().cpu()[0]
    return Identity(z=z, feats=list(feats), first_motion=stats.normalize(alpha), source=source)


def _frame_indices_at_fps(n_frames: int, fps: float, target: float = FPS) -> list[int]:
    """Indices of the source frames nearest to each tick of a ``target`` fps clock (ties: the earlier).

    Same rule as :func:`talker_core.media.resample_frames_to_fps`, without copying frames.
    """
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    duration = n_frames / fps
    count = max(1, int(math.floor(duration * target + 1e-6)))
    return [min(n_frames - 1, max(0, math.ceil(k * fps / target - 0.5 - 1e-9))) for k in range(count)]


@torch.inference_mode()
def encode_motion(liax, frames: torch.Tensor, fps: float, max_seconds: Optional[float] = None,
                  hooks: Optional[Hooks] = None, stats: Optional[MotionStats] = None,
                  chunk: int = 8) -> MotionCodes:
    """A talking clip → normalised motion codes (T, 40) at 25 fps, whatever the source rate.

    frames: (N, H, W, C) float [0, 1] or uint8. Only the frames that land on the 25 fps
    clock (and within ``max_seconds``) are encoded.
    """
    from .media import prepare_identity_image

    hooks = hooks or Hooks()
    stats = stats or MotionStats.release()
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"motion clip: expected frames shaped (N, H, W, C) with N ≥ 1, got {shape}")
    index = _frame_indices_at_fps(frames.shape[0], float(fps))
    if max_seconds is not None:
        index = index[: max(1, int(max_seconds * FPS))]
    device, dtype = _device_dtype(liax)
    codes = []
    for start in range(0, len(index), chunk):
        hooks.check()
        batch = torch.stack([prepare_identity_image(frames[i], name="motion clip frame", warn_small=False)
                             for i in index[start: start + chunk]])
        z, _ = liax.encode_identity(batch.to(device, dtype))
        codes.append(liax.motion_code(z).float().cpu())
        hooks.report(min(start + chunk, len(index)), len(index), "encode")
    return MotionCodes(stats.normalize(torch.cat(codes, 0)))


def motion_from_reference_pt(path, stats: Optional[MotionStats] = None) -> MotionCodes:
    """The authors' precomputed motion file (raw LIA-X α per frame, (T, ≥40)) → normalised codes."""
    from .checkpoint import read_pickle

    stats = stats or MotionStats.release()
    obj = read_pickle(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2 or obj.shape[1] < MOTION_DIM or obj.shape[0] == 0:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise ValueError(f"{path}: expected a tensor of LIA-X motion codes shaped (frames, 40), got {shape}")
    raw = obj[:MAX_SEGMENT_FRAMES, :MOTION_DIM].float()
    if not torch.isfinite(raw).all():
        raise ValueError(f"{path}: the motion codes contain NaN or infinite values")
    return MotionCodes(stats.normalize(raw))


# ----------------------------------------------------------------------------------------------
# decoding and rendering


@torch.inference_mode()
def decode_speech(vae, speech: SpeechLatents) -> torch.Tensor:
    """Speech latents (T, 32) → waveform (1, T·960) at 24 kHz, float32 CPU, in [-1, 1]."""
    device, dtype = _device_dtype(vae)
    wav = vae.decode(speech.latents[None].to(device, dtype))
    return wav[0].float().clamp(-1, 1).cpu()


class RenderOutOfMemory(RuntimeError):
    """Rendering ran out of memory even one frame at a time; the motion codes are untouched."""


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.inference_mode()
def render_motion(liax, face: Identity, motion: MotionCodes, chunk: int = 8,
                  hooks: Optional[Hooks] = None, stats: Optional[MotionStats] = None,
                  preview_every: int = 25, as_uint8: bool = False) -> torch.Tensor:
    """Motion codes → video frames (T, 512, 512, 3) on the CPU: float32 in [0, 1], or uint8 with ``as_uint8``.

    Frames are rendered ``chunk`` at a time; ``hooks`` is told after every chunk and may cancel.
    When a chunk runs out of memory the chunk is halved and retried (down to one frame); only if
    a single frame does not fit is :class:`RenderOutOfMemory` raised. Nothing the caller passed in
    is modified, so a failed render can be retried with other settings without generating again.
    """
    hooks = hooks or Hooks()
    stats = stats or MotionStats.release()
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    raw = stats.denormalize(motion.codes)
    device, dtype = _device_dtype(liax)
    z = face.z.to(device, dtype)
    feats = [f.to(device, dtype) for f in face.feats]
    total = raw.shape[0]
    out = torch.empty((total, 512, 512, 3), dtype=torch.uint8 if as_uint8 else torch.float32)
    start = 0
    while start < total:
        hooks.check()
        alpha = raw[start: start + chunk].to(device, dtype)
        try:
            frames = liax.render(z, feats, alpha)  # (b, 3, 512, 512) in [-1, 1]
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            _free_device_memory(device)
            if chunk == 1:
                raise RenderOutOfMemory(
                    f"rendering one 512×512 frame does not fit in {device} memory; free memory (close other "
                    "models), use a lower precision, or render on the CPU. The generated motion is kept: "
                    "retry the render only"
                ) from exc
            chunk = max(1, chunk // 2)
            log.warning("out of memory rendering; retrying with %d frame(s) per chunk", chunk)
            continue
        frames = ((frames.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()
        done = start + frames.shape[0]
        out[start:done] = (frames * 255).round().to(torch.uint8) if as_uint8 else frames
        preview = frames[-1] if (done // preview_every) != (start // preview_every) or done == total else None
        hooks.report(done, total, "render", preview)
        start = done
    return out


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
# generation


@dataclass
class _Segment:
    text: str
    forced: Optional[torch.Tensor] = None  # (F, C) window of the forced stream


def _segment_seed(seed: int, index: int) -> int:
    """Seed of segment ``index``: the request's seed for the first, a fixed derivation after."""
    return seed if index == 0 else (seed + 1_000_003 * index) % (2**63)


def _forced_windows(forced: torch.Tensor, first_room: int, later_room: int, text: str,
                    max_chars: int) -> list[_Segment]:
    """Cut a forced stream into windows that fit one segment each; share the text out by length."""
    windows, pos, room = [], 0, first_room
    while pos < forced.shape[0]:
        windows.append(forced[pos: pos + room])
        pos += room
        room = later_room
    if len(windows) == 1:
        return [_Segment(text, windows[0])]
    sentences = split_text(text, max_chars) if text.strip() else []
    total = sum(w.shape[0] for w in windows)
    segments, cursor, used = [], 0, 0
    for w in windows:
        used += w.shape[0]
        take = []
        while cursor < len(sentences) and (cursor + 1) / max(len(sentences), 1) <= used / total + 1e-9:
            take.append(sentences[cursor])
            cursor += 1
        segments.append(_Segment(" ".join(take), w))
    if cursor < len(sentences):
        segments[-1].text = " ".join([segments[-1].text] + sentences[cursor:]).strip()
    return segments


def _validate_wiring(request: TalkRequest, voice, face, reference_motion, forced_speech, forced_motion) -> None:
    mode = request.mode
    if forced_speech is not None and forced_motion is not None:
        raise ValueError("give either driving speech (A2V) or driving motion (V2A), not both")
    if mode == Mode.A2V and forced_speech is None:
        raise ValueError("A2V (audio-driven video) needs driving speech latents")
    if mode == Mode.V2A and forced_motion is None:
        raise ValueError("V2A (dubbing) needs driving motion codes from a talking clip")
    if mode in (Mode.T2AV, Mode.SPEECH) and (forced_speech is not None or forced_motion is not None):
        raise ValueError(f"mode {mode!r} samples every stream; use mode 'a2v' or 'v2a' to drive one")
    if mode in (Mode.T2AV, Mode.SPEECH, Mode.V2A) and voice is None:
        raise ValueError(f"mode {mode!r} needs a reference voice (speaker embedding) to speak with")
    if mode in (Mode.T2AV, Mode.A2V) and face is None and reference_motion is None:
        raise ValueError(f"mode {mode!r} needs a reference face (or reference motion) to animate")
    if mode in (Mode.T2AV, Mode.SPEECH) and not request.text.strip():
        raise ValueError("the text is empty: give the words to speak")
    if len(request.text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the text has {len(request.text)} characters; at most {MAX_TEXT_CHARS} are accepted per request. "
            "Split it into several requests"
        )


def _user_prefix_frames(request: TalkRequest, voice, reference_motion) -> int:
    """Reference frames to feed as a style prefix (joint modes: whole patches)."""
    frames = int(math.floor(request.prefix_seconds * FPS + 1e-6))
    if frames == 0:
        return 0
    if voice is None:
        raise ValueError("a style prefix (prefix_seconds > 0) needs the reference voice")
    available = voice.speech.frames
    what = "reference audio"
    if request.mode != Mode.SPEECH:
        if reference_motion is None:
            raise ValueError(
                "a style prefix (prefix_seconds > 0) needs reference motion from a talking clip of the same "
                "person; connect one, or set prefix_seconds to 0 to clone only voice and face"
            )
        if reference_motion.frames < available:
            available, what = reference_motion.frames, "reference motion clip"
    if frames > available:
        raise ValueError(
            f"prefix_seconds={request.prefix_seconds:g} is longer than the {what} "
            f"({available / FPS:.2f} s); use at most {available / FPS:.2f}"
        )
    if request.mode != Mode.SPEECH:
        frames = (frames // PATCH) * PATCH
    return frames


@torch.inference_mode()
def generate(bundle, request: TalkRequest, voice: Optional[SpeakerReference] = None,
             face: Optional[Identity] = None, reference_motion: Optional[MotionCodes] = None,
             forced_speech: Optional[SpeechLatents] = None, forced_motion: Optional[MotionCodes] = None,
             hooks: Optional[Hooks] = None) -> TalkResult:
    """Run the backbone and both heads for one request (any mode, any length).

    bundle: a loaded :class:`talker_core.loaders.TalkerBundle` (model + tokenizer).
    voice: reference voice (speaker embedding and latents for the prefix).
    face: identity whose first-frame motion code conditions the motion head.
    reference_motion: motion of a talking clip of the reference person, for a style prefix.
    forced_speech / forced_motion: the given stream in A2V / V2A.

    Texts longer than ``request.max_segment_chars`` (and forced streams longer than one
    segment) run as several segments; each continues from the previous one's last
    ``segment_prefix_seconds`` as its prefix, so voice, prosody and motion carry over.
    Returned latents include the reference prefix of the first segment.
    """
    from .generation import GenerationCancelled, GenerationMode, SamplingSettings, TalkerGenerator
    from .tokenizer import render_prompt

    hooks = hooks or Hooks()
    start_time = time.perf_counter()
    _validate_wiring(request, voice, face, reference_motion, forced_speech, forced_motion)
    model = bundle.model
    cfg = model.config
    joint = request.mode != Mode.SPEECH
    seg_frames = min(cfg.max_frames, MAX_SEGMENT_FRAMES, int(request.max_segment_seconds * FPS))

    speaker = voice.embedding if voice is not None else torch.zeros(cfg.speaker_dim)
    if face is not None:
        first_motion = face.first_motion
    elif reference_motion is not None:
        first_motion = reference_motion.codes[0]
    elif forced_motion is not None:  # V2A without a face: the head that uses it is not run
        first_motion = forced_motion.codes[0]
    else:
        first_motion = None
    prefix = _user_prefix_frames(request, voice, reference_motion)
    budget = max(PATCH, int(math.floor(request.max_seconds * FPS + 1e-6)))
    carry = (int(request.segment_prefix_seconds * FPS) // PATCH) * PATCH

    forced = forced_speech.latents if forced_speech is not None else (
        forced_motion.codes if forced_motion is not None else None)
    if forced is not None:
        forced = forced[:budget]
        first_room, later_room = max(PATCH, seg_frames - prefix), max(PATCH, seg_frames - carry)
        segments = _forced_windows(forced, first_room, later_room, request.text, request.max_segment_chars)
    else:
        segments = [_Segment(t) for t in split_text(request.text, request.max_segment_chars)]

    engine = TalkerGenerator(model)
    gen_speech: list[torch.Tensor] = []
    gen_motion: list[torch.Tensor] = []
    prefix_speech = prefix_motion = None
    p_stop: list[float] = []
    produced = 0
    done_patches = 0
    planned = sum(-(-(s.forced.shape[0] if s.forced is not None else seg_frames) // PATCH) for s in segments)
    planned = min(planned, -(-budget // PATCH))

    for index, segment in enumerate(segments):
        remaining = budget - produced
        if remaining <= 0:
            log.warning("max_seconds=%g reached: %d of %d text segment(s) were not spoken; raise max_seconds "
                        "to say the whole text", request.max_seconds, len(segments) - index, len(segments))
            break
        if index == 0:
            ref_speech = voice.speech.latents if voice is not None else None
            ref_motion = reference_motion.codes if reference_motion is not None else (
                first_motion[None] if first_motion is not None else None)
            prefix_k = prefix
        else:
            all_speech = torch.cat(gen_speech, 0)
            tail = min(carry, all_speech.shape[0])
            if joint:
                tail = (tail // PATCH) * PATCH
            ref_speech = all_speech[all_speech.shape[0] - tail:]
            ref_motion = torch.cat(gen_motion, 0)[-tail:] if (joint and tail) else (
                first_motion[None] if joint else None)
            prefix_k = tail
        room = max(PATCH, seg_frames - prefix_k)
        max_patches = max(1, min(room, remaining) // PATCH) if segment.forced is None else None
        prompt = render_prompt(bundle.tokenizer, segment.text, max_length=request.max_prompt_tokens,
                               allow_empty=segment.forced is not None)
        settings = SamplingSettings(
            steps=request.steps, temperature=request.temperature, cfg=request.cfg, sway=request.sway,
            cfg_zero_star=request.cfg_zero_star, stop_threshold=request.stop_threshold,
            stop_consecutive=request.stop_consecutive, seed=_segment_seed(request.seed, index),
        )
        base = done_patches

        def progress(done: int, total: int, _base=base) -> None:
            hooks.report(min(_base + done, planned), max(planned, _base + total), "generate")

        try:
            out = engine.generate(
                prompt, speaker,
                ref_speech=ref_speech, ref_motion=ref_motion, prefix_frames=prefix_k,
                first_motion=first_motion if joint else None,
                mode=GenerationMode.JOINT if joint else GenerationMode.SPEECH_ONLY,
                forced_speech=segment.forced if forced_speech is not None else None,
                forced_motion=segment.forced if forced_motion is not None else None,
                settings=settings, max_patches=max_patches,
                progress=progress, should_cancel=hooks.should_cancel,
            )
        except GenerationCancelled as exc:
            raise Cancelled(str(exc)) from exc
        keep = out.gen_speech.shape[0] if segment.forced is None else segment.forced.shape[0]
        keep = min(keep, remaining)
        if index == 0:
            prefix_speech = out.prefix_speech
            prefix_motion = out.prefix_motion
        gen_speech.append(out.gen_speech[:keep])
        if joint:
            gen_motion.append(out.gen_motion[:keep])
        p_stop.extend(out.p_stop)
        produced += keep
        done_patches += out.steps
        log.info("segment %d/%d: %d frames%s", index + 1, len(segments), keep, " (stop head)" if out.stopped else "")

    speech = torch.cat([prefix_speech] + gen_speech, 0) if prefix_speech is not None else torch.cat(gen_speech, 0)
    motion = None
    if joint:
        parts = ([prefix_motion] if prefix_motion is not None else []) + gen_motion
        motion = MotionCodes(torch.cat(parts, 0))
    return TalkResult(
        speech=SpeechLatents(speech),
        motion=motion,
        generated_seconds=produced / FPS,
        wall_seconds=time.perf_counter() - start_time,
        segments=len(gen_speech),
        segments_planned=len(segments),
        prefix_frames=0 if prefix_speech is None else int(prefix_speech.shape[0]),
        p_stop=p_stop,
    )
