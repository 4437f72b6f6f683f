"""Reference encoding: voice, speech, face and motion into the model's latent spaces."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Optional

import torch

from talker_core.pipeline._helpers import (
    _as_waveform,
    _check_audible,
    _device_dtype,
    check_finite,
)
from talker_core.pipeline.request import (
    MAX_REFERENCE_SECONDS,
    MAX_SEGMENT_FRAMES,
    Hooks,
)
from talker_core.types import (
    FPS,
    MOTION_DIM,
    SPEAKER_SAMPLE_RATE,
    Identity,
    MotionCodes,
    MotionStats,
    SpeakerReference,
    SpeechLatents,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# reference encoding


def _warn_cut(what: str, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds + 0.5 / FPS:
        log.warning(
            "the %s is %.2f s long; max_seconds=%g cuts it, only the first %.2f s are used: raise max_seconds to "
            "use all of it",
            what,
            seconds,
            max_seconds,
            max_seconds,
        )


@torch.inference_mode()
def _vae_encode(vae, wav_mono: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Encode at most 30 s of mono audio (1, N) the way the reference prepares it
    (:meth:`WhisperXVAE.encode_waveform`, the golden-tested function) → latents (T, 32) float32 CPU.
    """
    return vae.encode_waveform(wav_mono, sample_rate)[0].float().cpu()


@torch.inference_mode()
def encode_voice(
    vae, speaker_encoder, waveform: torch.Tensor, sample_rate: int, max_seconds: float = MAX_REFERENCE_SECONDS
) -> SpeakerReference:
    """Reference voice → speaker embedding (256,) and speech latents (T, 32).

    waveform: (C, N) or ComfyUI's (1, C, N), any rate, any channel count (mixed to mono).
    At most ``max_seconds`` (≤ 30) are used, as in the reference.
    """
    from talker_core.models.audio_frontend import resample, to_mono

    wav = _as_waveform(waveform, sample_rate, "reference audio")
    limit = min(float(max_seconds), MAX_REFERENCE_SECONDS)
    wav = to_mono(wav)[:, : int(round(limit * sample_rate))]
    _check_audible(wav, sample_rate, "reference audio")
    latents = _vae_encode(vae, wav, sample_rate)
    # the speaker encoder hears the stretch the latents cover, at its own rate (as the reference)
    wav_spk = resample(wav, sample_rate, SPEAKER_SAMPLE_RATE)[:, : latents.shape[0] * (SPEAKER_SAMPLE_RATE // FPS)]
    device, dtype = _device_dtype(speaker_encoder)
    embedding = speaker_encoder(wav_spk.to(device, dtype)).float().cpu()[0]
    check_finite(latents, "reference voice encoding (speech latents)", vae)
    check_finite(embedding, "reference voice encoding (speaker embedding)", speaker_encoder)
    return SpeakerReference(embedding=embedding, speech=SpeechLatents(latents))


@torch.inference_mode()
def encode_speech(
    vae, waveform: torch.Tensor, sample_rate: int, max_seconds: Optional[float] = None, hooks: Optional[Hooks] = None
) -> SpeechLatents:
    """Driving audio (A2V) → speech latents (T, 32) at 25 Hz, any length.

    Long audio is encoded in 30 s windows (the codec's semantic branch sees 30 s at a time).
    """
    from talker_core.models.audio_frontend import to_mono

    hooks = hooks or Hooks()
    wav = to_mono(_as_waveform(waveform, sample_rate, "driving audio"))
    if max_seconds is not None:
        _warn_cut("driving audio", wav.shape[-1] / sample_rate, max_seconds)
        wav = wav[:, : int(round(max_seconds * sample_rate))]
    if wav.shape[-1] < sample_rate / FPS:
        raise ValueError(f"driving audio is {wav.shape[-1] / sample_rate:.3f} s long; give at least one frame (0.04 s)")
    window = int(MAX_REFERENCE_SECONDS * sample_rate)
    pieces = []
    starts = list(range(0, wav.shape[-1], window))
    for i, start in enumerate(starts):
        hooks.check()
        chunk = wav[:, start : start + window]
        if chunk.shape[-1] < sample_rate // FPS:  # less than one latent frame left
            break
        latents = _vae_encode(vae, chunk, sample_rate)
        check_finite(latents, "driving speech encoding", vae)
        pieces.append(latents)
        hooks.report(i + 1, len(starts), "encode")
    return SpeechLatents(torch.cat(pieces, 0))


@torch.inference_mode()
def encode_face(
    liax,
    image: torch.Tensor,
    stats: Optional[MotionStats] = None,
    framing: str = "detect",
    crop: Optional[Sequence[int]] = None,
    detector=None,
    name: str = "face image",
) -> Identity:
    """A face image → LIA-X identity.

    image: (H, W, C) or (1, H, W, C), float in [0, 1] or uint8, C in {1, 3, 4}. The square that
    becomes the 512×512 identity is chosen by :func:`talker_core.media.framing.choose_crop`:
    ``framing="detect"`` finds the face and frames head and shoulders as LIA-X was trained (the
    centre crop when no face is found), ``"centre"`` takes the centred square, and a manual
    ``crop`` = (x, y, size) overrides both. The square is recorded in ``Identity.crop`` (for
    paste-back).
    """
    stats = stats or MotionStats.release()
    from talker_core.media import prepare_identity_image
    from talker_core.media.framing import choose_crop

    box = choose_crop(image, framing=framing, crop=crop, detector=detector, name=name)
    source = prepare_identity_image(image, name=name, crop=(box.x, box.y, box.size))  # (3, 512, 512) in [-1, 1]
    device, dtype = _device_dtype(liax)
    z, feats = liax.encode_identity(source[None].to(device, dtype))
    alpha = liax.motion_code(z).float().cpu()[0]
    check_finite(alpha, "face encoding", liax)
    return Identity(z=z, feats=list(feats), first_motion=stats.normalize(alpha), source=source, crop=box)


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
def encode_motion(
    liax,
    frames: torch.Tensor,
    fps: float,
    max_seconds: Optional[float] = None,
    hooks: Optional[Hooks] = None,
    stats: Optional[MotionStats] = None,
    chunk: int = 8,
    crop=None,
) -> MotionCodes:
    """A talking clip → normalised motion codes (T, 40) at 25 fps, whatever the source rate.

    frames: (N, H, W, C) float [0, 1] or uint8. Only the frames that land on the 25 fps
    clock (and within ``max_seconds``) are encoded. ``crop``: the square cut from every frame, a
    :class:`~talker_core.types.FaceCrop` (e.g. :func:`talker_core.media.framing.choose_clip_crop`,
    one stable box for the clip) or (x, y, size); None takes each frame's centred square.
    """
    from talker_core.media import prepare_identity_image

    hooks = hooks or Hooks()
    stats = stats or MotionStats.release()
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"motion clip: expected frames shaped (N, H, W, C) with N ≥ 1, got {shape}")
    index = _frame_indices_at_fps(frames.shape[0], float(fps))
    if max_seconds is not None:
        _warn_cut("motion clip", frames.shape[0] / float(fps), max_seconds)
        index = index[: max(1, int(max_seconds * FPS))]
    box: Optional[tuple[int, int, int]] = None
    if crop is not None:
        from talker_core.media.framing import choose_clip_crop

        square = choose_clip_crop(frames, crop=crop, name="motion clip")
        box = (square.x, square.y, square.size)
    device, dtype = _device_dtype(liax)
    codes = []
    for start in range(0, len(index), chunk):
        hooks.check()
        batch = torch.stack(
            [
                prepare_identity_image(frames[i], name="motion clip frame", warn_small=False, crop=box)
                for i in index[start : start + chunk]
            ]
        )
        z, _ = liax.encode_identity(batch.to(device, dtype))
        codes.append(liax.motion_code(z).float().cpu())
        check_finite(codes[-1], "motion encoding", liax)
        hooks.report(min(start + chunk, len(index)), len(index), "encode")
    return MotionCodes(stats.normalize(torch.cat(codes, 0)))


def motion_from_reference_pt(path, stats: Optional[MotionStats] = None) -> MotionCodes:
    """The authors' precomputed motion file (raw LIA-X α per frame, (T, ≥40)) → normalised codes."""
    from talker_core.checkpoint import read_pickle

    stats = stats or MotionStats.release()
    obj = read_pickle(path)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2 or obj.shape[1] < MOTION_DIM or obj.shape[0] == 0:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise ValueError(f"{path}: expected a tensor of LIA-X motion codes shaped (frames, 40), got {shape}")
    raw = obj[:MAX_SEGMENT_FRAMES, :MOTION_DIM].float()
    if not torch.isfinite(raw).all():
        raise ValueError(f"{path}: the motion codes contain NaN or infinite values")
    return MotionCodes(stats.normalize(raw))
