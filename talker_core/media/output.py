"""Writing media atomically: 16-bit WAV, and MP4 (H.264 yuv420p + AAC)."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import tempfile
import wave
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Optional

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


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _frames_u8(chunk: torch.Tensor, start: int) -> np.ndarray:
    """(n, H, W, 3) uint8 or float [0, 1] chunk → uint8 numpy (n, H, W, 3)."""
    if chunk.dtype == torch.uint8:
        return chunk.cpu().numpy()
    c = chunk.detach().float().cpu()
    if not torch.isfinite(c).all():
        raise MediaError(f"frames {start}–{start + len(c) - 1} contain NaN or inf values")
    return (c.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def _frame_chunks(frames: torch.Tensor, pad_h: int, pad_w: int, chunk: int = 16) -> Iterable[bytes]:
    for i in range(0, frames.shape[0], chunk):
        arr = _frames_u8(frames[i : i + chunk], i)
        if pad_h or pad_w:
            arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        yield np.ascontiguousarray(arr).tobytes()


def write_mp4(
    path: PathLike,
    frames,
    fps: float,
    audio=None,
    sample_rate: Optional[int] = None,
    crf: int = 18,
    *,
    preset: str = "medium",
    audio_bitrate: str = "192k",
    metadata: Optional[dict] = None,
) -> Path:
    """Write an MP4 (H.264 yuv420p, BT.709 tagged; AAC audio) atomically.

    Frames are piped raw into the ffmpeg binary of ``imageio-ffmpeg``; audio goes
    through a temporary 16-bit WAV. The audio is trimmed or zero-padded to the video
    length (N / fps), and rates other than 44.1/48 kHz are resampled to 48 kHz for
    AAC (whose 1024-sample packets would otherwise exceed one 25 fps frame), so the
    two tracks end within one frame of each other. An odd width or height is padded
    by one pixel (edge pixels repeated), as H.264 4:2:0 needs even sizes.

    The file is written under a temporary name in the output folder and renamed
    when ffmpeg succeeded; on any failure or interruption (KeyboardInterrupt) the
    temporary files are removed and an existing file at ``path`` is left untouched.

    Args:
        path: output .mp4 (parent folders are created).
        frames: (N, H, W, 3) uint8, or float in [0, 1] (ComfyUI IMAGE), tensor or array.
        fps: frame rate (25 for Talker).
        audio: optional (C, T) or (T,) float waveform in [-1, 1] (1–8 channels).
        sample_rate: audio rate in Hz, required with ``audio``.
        crf: x264 constant rate factor, 0 (lossless) – 51; 18 is visually lossless.
        preset: x264 preset (``ultrafast`` … ``veryslow``).
        audio_bitrate: AAC bitrate, ffmpeg syntax (``192k``).
        metadata: optional ``{key: text}`` stored as MP4 tags (e.g. ``comment``).

    Returns:
        The written path.
    """
    fr = (
        frames
        if isinstance(frames, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(_as_numpy(frames, "frames")))
    )
    if fr.ndim != 4 or fr.shape[-1] != 3:
        raise MediaError(f"frames must have shape (N, H, W, 3), got {tuple(fr.shape)}")
    n, h, w = (int(s) for s in fr.shape[:3])
    if n == 0 or h == 0 or w == 0:
        raise MediaError(f"frames are empty (shape {tuple(fr.shape)}); nothing to write")
    if not (fr.dtype == torch.uint8 or fr.is_floating_point()):
        raise MediaError(f"frames must be uint8 or float in [0, 1], got {fr.dtype}")
    rate_v = _check_limit("fps", fps, allow_none=False)
    if isinstance(crf, bool) or int(crf) != crf or not 0 <= crf <= 51:
        raise MediaError(f"crf must be an integer 0–51, got {crf!r}")
    wav = None
    if audio is not None:
        wav = _audio_array(audio)
        sr = _check_rate(sample_rate)
        want = int(round(n / rate_v * sr))
        have = wav.shape[1]
        if have > want:
            wav = wav[:, :want]
        elif have < want:
            wav = np.pad(wav, ((0, 0), (0, want - have)))
        if abs(have - want) > sr / rate_v:
            logger.info(
                "audio (%.2f s) %s to the video length (%.2f s)",
                have / sr,
                "trimmed" if have > want else "padded with silence",
                n / rate_v,
            )
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        logger.info("frame size %d×%d is odd; padded to %d×%d for H.264", w, h, w + pad_w, h + pad_h)
    out = _output_path(path)
    exe = _ffmpeg_exe()
    fps_str = str(Fraction(rate_v).limit_denominator(1_000_000))
    tmp_mp4: Optional[Path] = None
    tmp_wav: Optional[Path] = None
    proc = None
    try:
        tmp_mp4 = _temp_beside(out, ".tmp.mp4")
        cmd = [
            exe,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w + pad_w}x{h + pad_h}",
            "-framerate",
            fps_str,
            "-i",
            "pipe:0",
        ]
        if wav is not None:
            tmp_wav = _temp_beside(out, ".tmp.wav")
            _write_wav_file(tmp_wav, wav, sr)
            cmd += ["-i", str(tmp_wav)]
        cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if wav is not None else [])
        cmd += [
            "-vf",
            "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            str(preset),
            "-crf",
            str(int(crf)),
            "-pix_fmt",
            "yuv420p",
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-color_range",
            "tv",
        ]
        if wav is not None:
            cmd += ["-c:a", "aac", "-b:a", str(audio_bitrate), "-ar", str(sr if sr in AAC_RATES else 48_000)]
        movflags = "+faststart+use_metadata_tags" if metadata else "+faststart"
        for key, value in (metadata or {}).items():
            cmd += ["-metadata", f"{key}={value}"]
        cmd += ["-movflags", movflags, "-f", "mp4", str(tmp_mp4)]
        logger.debug("ffmpeg: %s", " ".join(cmd))
        with tempfile.TemporaryFile() as errlog:
            popen_kw = (
                {"start_new_session": True}
                if os.name == "posix"
                else {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
            )
            try:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog, **popen_kw
                )
            except OSError as exc:
                raise MediaError(f"could not start ffmpeg ({exe}): {exc}; reinstall imageio-ffmpeg") from exc
            broken = False
            assert proc.stdin is not None  # stdin=PIPE
            try:
                for data in _frame_chunks(fr, pad_h, pad_w):
                    proc.stdin.write(data)
            except BrokenPipeError:
                broken = True  # ffmpeg stopped reading: its log says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    broken = True
            rc = proc.wait()
            if rc != 0 or broken:
                errlog.seek(0)
                tail = errlog.read().decode("utf-8", "replace").strip()[-1500:]
                raise MediaError(f"ffmpeg could not write {out} (exit code {rc}): {tail or 'no message'}")
        if not tmp_mp4.exists() or tmp_mp4.stat().st_size == 0:
            raise MediaError(f"ffmpeg produced no output for {out}")  # pragma: no cover
        os.replace(tmp_mp4, out)
        tmp_mp4 = None
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _unlink_quietly(tmp_mp4)
        raise
    finally:
        _unlink_quietly(tmp_wav)
    logger.debug("wrote %s: %d frames at %s fps%s", out, n, fps_str, " with audio" if wav is not None else "")
    return out
