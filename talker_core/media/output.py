"""Writing media atomically: 16-bit WAV, and MP4 (H.264 yuv420p + AAC) through PyAV, frame by frame."""

from __future__ import annotations

import logging
import os
import secrets
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from talker_core.media._common import (
    AAC_RATES,
    MediaError,
    PathLike,
    _as_numpy,
    _check_limit,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- writing


def _audio_array(audio, name: str = "audio") -> np.ndarray:
    """(C, T) or (T,) tensor/array → float32 (C, T) clipped to [-1, 1]."""
    a = _as_numpy(audio, name)
    if a.ndim == 3 and a.shape[0] == 1:  # ComfyUI AUDIO waveform (1, C, T)
        a = a[0]
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[0] > 8:
        raise MediaError(f"{name} must be (channels, samples) with 1–8 channels, got shape {a.shape}")
    if a.shape[1] == 0:
        raise MediaError(f"{name} has no samples")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise MediaError(f"{name} contains NaN or inf samples")
    return np.clip(a, -1.0, 1.0)


def _temp_beside(path: Path, suffix: str) -> Path:
    """An unused hidden name in the output folder (same file system, so the final rename is atomic).

    The file itself is created by its writer, so it gets the usual permissions (umask),
    unlike ``mkstemp``'s private 0600 files.
    """
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"


def _unlink_quietly(p: Optional[Path]) -> None:
    if p is not None:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover
            logger.warning("could not remove temporary file %s: %s", p, exc)


def _write_wav_file(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(wav.T * 32767.0).astype("<i2")  # (T, C) interleaved, little-endian
    try:
        fh = open(path, "xb")  # noqa: SIM115 - opened apart from the `with` so only opening errors get this message
    except OSError as exc:
        raise MediaError(f"cannot write {path} ({exc}); choose a writable output folder") from exc
    with fh, wave.open(fh, "wb") as w:
        w.setnchannels(wav.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def _check_rate(sample_rate) -> int:
    if sample_rate is None or isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise MediaError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _output_path(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        raise MediaError(f"output {p} is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaError(f"cannot create output folder {p.parent} ({exc}); choose a writable location") from exc
    return p


def write_wav(path: PathLike, waveform, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV atomically (temporary file beside it, renamed when complete).

    Args:
        path: output file.
        waveform: (C, T) or (T,) float tensor/array in [-1, 1] (clipped); also (1, C, T).
        sample_rate: Hz.

    Returns:
        The written path.
    """
    wav = _audio_array(waveform, "waveform")
    rate = _check_rate(sample_rate)
    out = _output_path(path)
    tmp = _temp_beside(out, ".tmp.wav")
    try:
        _write_wav_file(tmp, wav, rate)
        os.replace(tmp, out)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return out


def _frames_u8(chunk: torch.Tensor, start: int) -> np.ndarray:
    """(n, H, W, 3) uint8 or float [0, 1] chunk → uint8 numpy (n, H, W, 3)."""
    if chunk.dtype == torch.uint8:
        return chunk.cpu().numpy()
    c = chunk.detach().float().cpu()
    if not torch.isfinite(c).all():
        raise MediaError(f"frames {start}–{start + len(c) - 1} contain NaN or inf values")
    return (c.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def _as_frames(frames) -> torch.Tensor:
    fr = (
        frames
        if isinstance(frames, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(_as_numpy(frames, "frames")))
    )
    if fr.ndim == 3:
        fr = fr[None]
    if fr.ndim != 4 or fr.shape[-1] != 3:
        raise MediaError(f"frames must have shape (N, H, W, 3), got {tuple(fr.shape)}")
    if not (fr.dtype == torch.uint8 or fr.is_floating_point()):
        raise MediaError(f"frames must be uint8 or float in [0, 1], got {fr.dtype}")
    return fr


# H.264 settings, written once: the writer's defaults, the command line's --crf/--preset and the
# Render Video File node's widgets all come from here.
CRF_DEFAULT = 18  # visually lossless
CRF_MIN, CRF_MAX = 0, 51  # x264: 0 lossless … 51 worst
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PRESET_DEFAULT = "medium"

_CHUNK = 16  # frames converted to uint8 at a time (bounded memory for float input)
_FRAGMENT_SECONDS = 1.0  # fragmented MP4: one keyframe (and fragment) per second


class Mp4Writer:
    """An MP4 (H.264 yuv420p, BT.709 tagged; AAC audio) written as frames and audio arrive.

    ``write_frames`` / ``write_audio`` may be called in any order and any number of
    times; every frame is encoded when it is pushed, so memory does not depend on the
    clip's length (only the encoder's own look-ahead and a few hundred ms of audio are
    held). ``close()`` finishes the file and returns its path; :meth:`abort` (or
    leaving a ``with`` block by an exception, KeyboardInterrupt included) removes it.

    The audio is trimmed or zero-padded to the video length (N / fps) when the file is
    closed; audio beyond the frames written so far waits in memory until its frames
    come. Rates other than 44.1/48 kHz are resampled to 48 kHz for AAC (whose
    1024-sample packets would otherwise exceed one 25 fps frame), so the two tracks end
    within one frame of each other. An odd width or height is padded by one pixel
    (edge pixels repeated), as H.264 4:2:0 needs even sizes.

    Normal files are written under a temporary hidden name in the output folder and
    renamed when complete: a file under ``path`` is always complete, and an existing
    one is left untouched on failure. ``fragmented=True`` writes a fragmented MP4
    (``frag_keyframe+empty_moov``, one fragment a second) directly under ``path``, so a
    player can open it while it is being written; it is removed on failure or abort.

    Args:
        path: output .mp4 (parent folders are created).
        fps: frame rate (25 for Talker).
        sample_rate: audio rate in Hz; None for a silent video.
        channels: audio channels (1–8).
        crf: x264 constant rate factor, 0 (lossless) – 51; 18 is visually lossless.
        preset: x264 preset (``ultrafast`` … ``veryslow``).
        audio_bitrate: AAC bitrate (``192k`` or bits per second).
        metadata: optional ``{key: text}`` stored as MP4 tags (e.g. ``comment``, ``prompt``).
        fragmented: write a fragmented MP4 that can be played while written.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        *,
        sample_rate: Optional[int] = None,
        channels: int = 1,
        crf: int = CRF_DEFAULT,
        preset: str = PRESET_DEFAULT,
        audio_bitrate="192k",
        metadata: Optional[dict] = None,
        fragmented: bool = False,
    ):
        self.fps = _check_limit("fps", fps, allow_none=False)
        if isinstance(crf, bool) or int(crf) != crf or not CRF_MIN <= crf <= CRF_MAX:
            raise MediaError(f"crf must be an integer {CRF_MIN}–{CRF_MAX}, got {crf!r}")
        self.sample_rate = None if sample_rate is None else _check_rate(sample_rate)
        if isinstance(channels, bool) or int(channels) != channels or not 1 <= channels <= 8:
            raise MediaError(f"channels must be 1–8, got {channels!r}")
        self.channels = int(channels)
        self.crf, self.preset, self.fragmented = int(crf), str(preset), bool(fragmented)
        self.audio_bit_rate = _bitrate(audio_bitrate)
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.path = _output_path(path)
        self._file = self.path if self.fragmented else _temp_beside(self.path, ".tmp.mp4")
        self._rate = Fraction(self.fps).limit_denominator(1_000_000)
        self._container: Any = None  # av OutputContainer once the first frame fixes the size
        self._video: Any = None
        self._audio: Any = None
        self._size: Optional[tuple[int, int]] = None
        self.frames_written = 0
        self.samples_written = 0  # audio samples (at ``sample_rate``) encoded so far
        self._pending: list[np.ndarray] = []  # audio not yet covered by frames, (C, t) each
        self._pending_len = 0
        self._closed = False

    # ------------------------------------------------------------------ public

    def write_frames(self, frames) -> None:
        """Encode frames: (N, H, W, 3) or (H, W, 3), uint8 or float in [0, 1], tensor or array."""
        self._check_open()
        fr = _as_frames(frames)
        n, h, w = (int(s) for s in fr.shape[:3])
        if n == 0:
            return
        if h == 0 or w == 0:
            raise MediaError(f"frames are empty (shape {tuple(fr.shape)}); nothing to write")
        try:
            if self._container is None:
                self._open(h, w)
            elif (h, w) != self._size:
                h0, w0 = self._size or (0, 0)
                raise MediaError(f"frame size changed from {w0}×{h0} to {w}×{h} mid-video")
            for i in range(0, n, _CHUNK):
                arr = _frames_u8(fr[i : i + _CHUNK], self.frames_written)
                if self._pad:
                    arr = np.pad(arr, ((0, 0), (0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
                for img in arr:
                    self._encode_video(np.ascontiguousarray(img))
            self._feed_audio(final=False)
        except BaseException:
            self.abort()
            raise

    def write_audio(self, audio) -> None:
        """Queue audio: (C, T) or (T,) float in [-1, 1] at ``sample_rate`` (encoded as its frames arrive)."""
        self._check_open()
        if self.sample_rate is None:
            raise MediaError("this writer was opened without audio (sample_rate=None); pass sample_rate to add sound")
        a = _as_numpy(audio, "audio")
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim == 2 and a.shape[1] == 0:
            return
        try:
            wav = _audio_array(a)
            if wav.shape[0] != self.channels:
                raise MediaError(f"audio has {wav.shape[0]} channel(s), the writer was opened for {self.channels}")
            self._pending.append(wav)
            self._pending_len += wav.shape[1]
            if self._container is not None:
                self._feed_audio(final=False)
        except BaseException:
            self.abort()
            raise

    def close(self) -> Path:
        """Pad or trim the audio to the video, flush the encoders, finish (and rename) the file."""
        self._check_open()
        try:
            if self._container is None:
                raise MediaError(f"no frames were written to {self.path}; nothing to save")
            self._feed_audio(final=True)
            self._mux(self._video.encode(None))
            if self._audio is not None:
                self._mux(self._audio.encode(None))
            self._container.close()
            self._container = None
            if not self._file.exists() or self._file.stat().st_size == 0:  # pragma: no cover
                raise MediaError(f"the encoder produced no output for {self.path}")
            if self._file != self.path:
                os.replace(self._file, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        logger.debug(
            "wrote %s: %d frames at %s fps%s",
            self.path,
            self.frames_written,
            self._rate,
            " with audio" * bool(self._audio),
        )
        return self.path

    def abort(self) -> None:
        """Stop and remove the partial file (safe to call more than once)."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception as exc:  # noqa: BLE001 - the file is removed anyway
                logger.debug("closing the aborted MP4 %s: %s", self._file, exc)
            self._container = None
        _unlink_quietly(self._file)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError(f"the MP4 writer for {self.path} is already closed")

    def _open(self, h: int, w: int) -> None:
        import av  # noqa: PLC0415

        self._size = (h, w)
        self._pad = (h % 2, w % 2) if (h % 2 or w % 2) else None
        if self._pad:
            logger.info("frame size %d×%d is odd; padded to %d×%d for H.264", w, h, w + w % 2, h + h % 2)
        flags = "+frag_keyframe+empty_moov+default_base_moof" if self.fragmented else "+faststart"
        if self.metadata:
            flags += "+use_metadata_tags"
        try:
            self._container = av.open(str(self._file), mode="w", format="mp4", options={"movflags": flags})
        except (OSError, av.FFmpegError) as exc:
            raise MediaError(f"cannot write {self.path} ({exc}); choose a writable output folder") from exc
        try:
            for key, value in self.metadata.items():
                self._container.metadata[key] = value
            v = self._container.add_stream("libx264", rate=self._rate)
            v.width, v.height, v.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
            options = {"crf": str(self.crf), "preset": self.preset}
            if self.fragmented:
                keyint = max(1, int(round(self.fps * _FRAGMENT_SECONDS)))
                options.update({"g": str(keyint), "keyint_min": str(keyint)})
            v.options = options
            cc = v.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range
            v.time_base = 1 / self._rate
            self._video = v
            if self.sample_rate is not None:
                rate = self.sample_rate if self.sample_rate in AAC_RATES else 48_000
                a = self._container.add_stream("aac", rate=rate, layout=_layout(self.channels))
                a.bit_rate = self.audio_bit_rate
                self._audio = a
        except av.FFmpegError as exc:
            raise MediaError(f"could not set up the encoder for {self.path}: {exc}") from exc

    def _encode_video(self, img: np.ndarray) -> None:
        import av  # noqa: PLC0415
        from av.video.reformatter import ColorRange, Colorspace  # noqa: PLC0415

        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
        frame.pts = self.frames_written
        frame.time_base = 1 / self._rate
        try:
            self._mux(self._video.encode(frame))
        except av.FFmpegError as exc:
            raise MediaError(
                f"could not encode {self.path} (x264 preset {self.preset!r}, crf {self.crf}): {exc}"
            ) from exc
        self.frames_written += 1

    def _feed_audio(self, final: bool) -> None:
        """Encode queued audio as far as the frames written so far reach (all of it, padded, when final)."""
        if self._audio is None:
            return
        sr = self.sample_rate
        assert sr is not None  # an audio stream exists only with a sample rate
        target = int(round(self.frames_written / self.fps * sr))
        room = target - self.samples_written
        if room <= 0 and not final:
            return
        take = min(room, self._pending_len)
        if take > 0:
            joined = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
            self._encode_audio(joined[:, :take])
            rest = joined[:, take:]
            self._pending = [rest] if rest.shape[1] else []
            self._pending_len = rest.shape[1]
        if final:
            extra, missing = self._pending_len, target - self.samples_written
            if extra > sr / self.fps or missing > sr / self.fps:
                logger.info(
                    "audio (%.2f s) %s to the video length (%.2f s)",
                    (self.samples_written + extra) / sr,
                    "trimmed" if extra else "padded with silence",
                    self.frames_written / self.fps,
                )
            if missing > 0:
                self._encode_audio(np.zeros((self.channels, missing), np.float32))
            self._pending, self._pending_len = [], 0

    def _encode_audio(self, wav: np.ndarray) -> None:
        import av  # noqa: PLC0415

        assert self.sample_rate is not None  # only called for a writer opened with audio
        step = self.sample_rate  # one second per frame handed to the encoder
        for i in range(0, wav.shape[1], step):
            part = np.ascontiguousarray(wav[:, i : i + step], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=_layout(self.channels))
            frame.sample_rate = self.sample_rate
            frame.pts = self.samples_written
            frame.time_base = Fraction(1, self.sample_rate)
            self._mux(self._audio.encode(frame))
            self.samples_written += part.shape[1]

    def _mux(self, packets) -> None:
        for p in packets:
            self._container.mux(p)


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _layout(channels: int) -> str:
    return _LAYOUTS[channels]


def _bitrate(value) -> int:
    text = str(value).strip().lower()
    try:
        if text.endswith("k"):
            bits = int(float(text[:-1]) * 1000)
        elif text.endswith("m"):
            bits = int(float(text[:-1]) * 1_000_000)
        else:
            bits = int(text)
    except ValueError:
        bits = 0
    if bits <= 0:
        raise MediaError(f"audio_bitrate must be a positive bitrate like '192k', got {value!r}")
    return bits


def write_mp4(
    path: PathLike,
    frames,
    fps: float,
    audio=None,
    sample_rate: Optional[int] = None,
    crf: int = CRF_DEFAULT,
    *,
    preset: str = PRESET_DEFAULT,
    audio_bitrate: str = "192k",
    metadata: Optional[dict] = None,
    fragmented: bool = False,
) -> Path:
    """Write frames (and audio) held in memory as one MP4, through :class:`Mp4Writer`.

    frames: (N, H, W, 3) uint8, or float in [0, 1] (ComfyUI IMAGE), tensor or array.
    audio: optional (C, T) or (T,) float waveform in [-1, 1] (1–8 channels) at ``sample_rate``.
    The other arguments are :class:`Mp4Writer`'s. Returns the written path.
    """
    fr = _as_frames(frames)
    n = int(fr.shape[0])
    if n == 0 or fr.shape[1] == 0 or fr.shape[2] == 0:
        raise MediaError(f"frames are empty (shape {tuple(fr.shape)}); nothing to write")
    rate_v = _check_limit("fps", fps, allow_none=False)
    wav = None
    if audio is not None:
        wav = _audio_array(audio)
        _check_rate(sample_rate)
    writer = Mp4Writer(
        path,
        rate_v,
        sample_rate=sample_rate if wav is not None else None,
        channels=wav.shape[0] if wav is not None else 1,
        crf=crf,
        preset=preset,
        audio_bitrate=audio_bitrate,
        metadata=metadata,
        fragmented=fragmented,
    )
    with writer:
        for i in range(0, n, _CHUNK):  # interleaved, so the audio queue stays short
            writer.write_frames(fr[i : i + _CHUNK])
            if wav is not None:
                a = int(round(i / rate_v * sample_rate))
                b = int(round(min(i + _CHUNK, n) / rate_v * sample_rate)) if i + _CHUNK < n else wav.shape[1]
                writer.write_audio(wav[:, a:b])
    return writer.path
