"""Video decoding through PyAV: frames at their own or a target rate, uint8 (N, H, W, 3)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch

from talker_core.media._common import (
    MAX_DECODED_VIDEO_BYTES,
    MediaError,
    PathLike,
    _check_limit,
    _declared_seconds,
    _existing_file,
    _import_av,
    _open_container,
    warn_truncated,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- video


def _frame_rgb(frame, p=None) -> np.ndarray:
    """Decoded VideoFrame → uint8 (H, W, 3), honouring the display rotation (phone videos).

    The frame is converted by FFmpeg's own scaler to packed rgb24 (one plane) before numpy sees it,
    whatever its pixel format; a format the scaler cannot convert is a :class:`MediaError`.
    """
    try:
        arr = frame.reformat(format="rgb24").to_ndarray()
    except (ValueError, TypeError, MemoryError, _import_av().error.FFmpegError) as exc:
        fmt = getattr(getattr(frame, "format", None), "name", "?")
        raise MediaError(
            f"{p or 'video'}: frames in pixel format {fmt} cannot be converted to RGB ({exc}); "
            "re-encode it (e.g. H.264 yuv420p)"
        ) from exc
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - rgb24 is always (H, W, 3)
        raise MediaError(f"{p or 'video'}: a frame decoded to an unusable shape {arr.shape}")
    rot = int(frame.rotation or 0)
    k = int(round(rot / 90.0)) % 4
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k=k))
    return arr


def _output_count(t_first: float, t_last: float, frame_dur: float, target_fps: float) -> int:
    """Frames at ``target_fps`` that fit in [t_first, t_last + frame_dur) (at least 1)."""
    return max(1, int(math.floor((t_last - t_first + frame_dur) * target_fps + 1e-6)))


def _nearest_indices(ts: np.ndarray, target_fps: float, count: int) -> np.ndarray:
    """Index of the frame nearest in time to each output time t0 + k / fps (ties → earlier frame)."""
    out_t = ts[0] + np.arange(count, dtype=np.float64) / target_fps
    prev = np.clip(np.searchsorted(ts, out_t, side="right") - 1, 0, len(ts) - 1)
    nxt = np.minimum(prev + 1, len(ts) - 1)
    take_next = (ts[nxt] - out_t) < (out_t - ts[prev])
    return np.where(take_next, nxt, prev)


def _median_step(ts: Sequence[float] | np.ndarray, fallback: float) -> float:
    if len(ts) < 2:
        return fallback
    return float(np.median(np.diff(np.asarray(ts, dtype=np.float64))))


class _NearestSelector:
    """Streaming form of :func:`_nearest_indices`: keeps only the frames it selects."""

    def __init__(self, target_fps: float, max_out: Optional[int]):
        self.fps = target_fps
        self.max_out = max_out
        self.t0: Optional[float] = None
        self.prev: Optional[tuple[float, np.ndarray]] = None  # (t, frame)
        self.k = 0
        self.out: list[np.ndarray] = []

    def _emit(self, frame) -> None:
        self.out.append(frame)
        self.k += 1

    @property
    def full(self) -> bool:
        return self.max_out is not None and len(self.out) >= self.max_out

    def push(self, t: float, frame: np.ndarray) -> None:
        if self.prev is None:
            self.t0 = t
        else:
            tp, fp = self.prev
            t0 = self.t0 if self.t0 is not None else t
            while not self.full:
                tk = t0 + self.k / self.fps
                if tk > t:
                    break
                self._emit(frame if (t - tk) < (tk - tp) else fp)
        self.prev = (t, frame)

    def finish(self, count: int) -> list[np.ndarray]:
        if self.prev is not None:
            limit = count if self.max_out is None else min(count, self.max_out)
            while self.k < limit:
                self._emit(self.prev[1])
        return self.out


def _decode_video(
    path: PathLike,
    max_frames: Optional[int],
    max_seconds: Optional[float],
    start_seconds: float,
    target_fps: Optional[float],
):
    p = _existing_file(path, "video file")
    max_s = _check_limit("max_seconds", max_seconds)
    start = _check_limit("start_seconds", start_seconds or 0.0, positive=False)
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise MediaError(f"max_frames must be a positive integer, got {max_frames!r}")
    tgt = _check_limit("target_fps", target_fps)
    av = _import_av()
    with _open_container(p, "video file") as container:
        if not container.streams.video:
            raise MediaError(f"{p} has no video stream; give a video file (mp4, mov, mkv, webm…)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else None
        declared = _declared_seconds(container, stream)
        ended = False  # True when the stream ran out (not stopped by a limit)
        nominal = stream.average_rate or stream.guessed_rate or stream.base_rate
        nominal_fps = float(nominal) if nominal else 25.0
        t_zero = float(stream.start_time * stream.time_base) if (stream.start_time is not None and tb) else None
        if start > 0:
            base = t_zero or 0.0
            try:
                container.seek(int((base + start) / tb), stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, TypeError, ZeroDivisionError):
                logger.debug("%s: seek failed, decoding from the start", p)
                container.seek(0)
        tol = 0.5 / nominal_fps  # a frame is "at" start_seconds if within half a frame
        selector = _NearestSelector(tgt, max_frames) if tgt else None
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        kept_bytes = 0
        last_t: Optional[float] = None
        first_shape: Optional[tuple] = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = (last_t + 1.0 / nominal_fps) if last_t is not None else (t_zero or 0.0)
                if t_zero is None:
                    t_zero = t
                if last_t is not None and t <= last_t:
                    logger.debug("%s: frame at %.4f s does not advance time, skipped", p, t)
                    continue
                last_t = t
                rel = t - t_zero - start
                if rel < -tol:
                    continue
                if max_s is not None and rel >= max_s - 1e-4:
                    break
                rgb = _frame_rgb(frame, p)
                if first_shape is None:
                    first_shape = rgb.shape
                elif rgb.shape != first_shape:
                    raise MediaError(
                        f"video file {p} changes frame size at {rel:.2f} s ({first_shape[1]}×{first_shape[0]} → "
                        f"{rgb.shape[1]}×{rgb.shape[0]}); re-encode it at one size or pass max_seconds"
                    )
                stamps.append(rel)
                if selector is not None:
                    selector.push(rel, rgb)
                    kept_bytes = (len(selector.out) + 1) * rgb.nbytes
                    if selector.full:
                        break
                else:
                    frames.append(rgb)
                    kept_bytes += rgb.nbytes
                    if max_frames is not None and len(frames) >= max_frames:
                        break
                if kept_bytes > MAX_DECODED_VIDEO_BYTES:
                    raise MediaError(
                        f"video file {p}: decoded frames exceed {MAX_DECODED_VIDEO_BYTES / 1024**3:.0f} GiB "
                        f"after {rel:.1f} s; pass max_seconds or max_frames to read a shorter part"
                    )
            else:
                ended = True
        except av.error.EOFError:
            ended = True  # a stream that ends without packets
        except av.error.FFmpegError as exc:
            if not stamps:
                raise MediaError(
                    f"video file {p} could not be decoded ({exc}); the file is damaged or not a video FFmpeg reads"
                ) from exc
            logger.warning(
                "video file %s is damaged or truncated: decoding stops at %.2f s%s (%s); only the first %.2f s are used",
                p,
                stamps[-1],
                f" of the {declared:.2f} s it declares" if declared else "",
                exc,
                stamps[-1],
            )
    if not stamps:
        where = f" after {start:.2f} s" if start > 0 else ""
        raise MediaError(f"video file {p} has no video frames{where}; give a video with at least one frame")
    ts = np.asarray(stamps, dtype=np.float64)
    if ended and declared is not None:
        warn_truncated(f"video file {p}", declared - start, ts[-1] + _median_step(stamps, 1.0 / nominal_fps))
    if selector is not None:
        step = _median_step(stamps, 1.0 / nominal_fps)
        end = ts[-1] + step
        if max_s is not None:
            end = min(end, max_s)
        count = max(1, int(math.floor((end - ts[0]) * tgt + 1e-6)))  # as _output_count, capped by max_seconds
        out = selector.finish(count)
        out_ts = ts[0] + np.arange(len(out), dtype=np.float64) / tgt
        return out, out_ts, float(tgt), p
    span = ts[-1] - ts[0]
    fps = (len(ts) - 1) / span if len(ts) > 1 and span > 0 else nominal_fps
    return frames, ts, float(fps), p


def decode_video(
    path: PathLike,
    max_frames: Optional[int] = None,
    max_seconds: Optional[float] = None,
    start_seconds: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Decode the first video stream with each frame's presentation time.

    Args:
        path: any video PyAV reads (constant or variable frame rate).
        max_frames: stop after this many frames.
        max_seconds: stop at this many seconds after ``start_seconds``.
        start_seconds: seek here first (frames within half a frame before it are kept).

    Returns:
        ``(frames, timestamps, fps)``: frames uint8 (N, H, W, 3) RGB (display
        rotation applied); timestamps float64 (N,) seconds relative to
        ``start_seconds``, strictly increasing (frames that do not advance time are
        dropped); fps the mean rate of the decoded frames (``(N-1)/span``).
    """
    frames, ts, fps, _ = _decode_video(path, max_frames, max_seconds, start_seconds, None)
    return torch.from_numpy(np.stack(frames)), torch.from_numpy(ts), fps


def load_video_frames(
    path: PathLike,
    max_frames: Optional[int] = None,
    max_seconds: Optional[float] = None,
    start_seconds: float = 0.0,
    target_fps: Optional[float] = None,
) -> tuple[torch.Tensor, float]:
    """Decode video frames, optionally re-timed to a constant rate.

    Only the span needed is decoded: decoding stops at ``max_frames`` /
    ``max_seconds``, and ``start_seconds`` seeks instead of decoding from the start.

    Args:
        path: any video PyAV reads.
        max_frames: at most this many *returned* frames (counted at ``target_fps``
            when that is given).
        max_seconds: at most this many seconds after ``start_seconds``.
        start_seconds: where to start, in seconds from the stream start.
        target_fps: ``None`` returns the decoded frames as they are (a variable
            frame rate clip then has uneven spacing: use :func:`decode_video` for
            the timestamps). A number (e.g. 25) returns frames at exactly that
            rate, picking for each output time ``k / target_fps`` the decoded frame
            nearest in time (drops frames from faster clips, repeats frames of
            slower ones); frames that are never picked are not kept in memory.

    Returns:
        ``(frames, fps)``: frames uint8 torch tensor (N, H, W, 3) RGB; fps float —
        ``target_fps`` when given, else the mean rate of the decoded frames.
    """
    frames, _, fps, _ = _decode_video(path, max_frames, max_seconds, start_seconds, target_fps)
    return torch.from_numpy(np.stack(frames)), fps


def resample_frames_to_fps(
    frames: torch.Tensor,
    timestamps_or_fps: Union[float, int, torch.Tensor, np.ndarray, Sequence[float]],
    target_fps: float = 25.0,
) -> torch.Tensor:
    """Re-time frames to a constant rate by nearest-frame selection.

    Args:
        frames: (N, H, W, C) tensor, any dtype (returned as is, frames are only picked).
        timestamps_or_fps: either the source frame rate (a number: frame i at i / fps)
            or the presentation time of each frame, (N,) seconds, strictly increasing
            (variable frame rate).
        target_fps: output rate.

    Returns:
        (M, H, W, C) tensor where output frame k is the input frame nearest in time to
        ``t_0 + k / target_fps`` (ties → the earlier frame), and M = ⌊duration ·
        target_fps⌋ (at least 1), duration = last time − first time + one source frame
        (the median spacing). 60 fps → 25 fps drops frames; 24 fps → 25 fps repeats
        about one frame in 24.
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim < 1 or frames.shape[0] == 0:
        raise MediaError("frames must be a non-empty tensor (N, H, W, C)")
    n = int(frames.shape[0])
    tgt = _check_limit("target_fps", target_fps, allow_none=False)
    if isinstance(timestamps_or_fps, (int, float)) and not isinstance(timestamps_or_fps, bool):
        src = _check_limit("source fps", timestamps_or_fps, allow_none=False)
        ts = np.arange(n, dtype=np.float64) / src
        step = 1.0 / src
    else:
        ts = np.asarray(
            timestamps_or_fps.detach().cpu().numpy()
            if isinstance(timestamps_or_fps, torch.Tensor)
            else timestamps_or_fps,
            dtype=np.float64,
        ).reshape(-1)
        if ts.shape[0] != n:
            raise MediaError(f"got {n} frames but {ts.shape[0]} timestamps; give one timestamp per frame")
        if not np.isfinite(ts).all():
            raise MediaError("timestamps contain NaN/inf")
        if n > 1 and not (np.diff(ts) > 0).all():
            raise MediaError("timestamps must be strictly increasing (sort the frames by presentation time)")
        step = _median_step(ts, 1.0 / tgt)
    count = _output_count(ts[0], ts[-1], step, tgt)
    idx = _nearest_indices(ts, tgt, count)
    return frames[torch.from_numpy(idx)]


def iter_video_frames(source, target_fps: Optional[float] = None, max_frames: Optional[int] = None):
    """Decode a video lazily, one uint8 (H, W, 3) numpy frame at a time (memory: a frame or two).

    ``source`` is a path, or an open binary file object (e.g. ComfyUI's in-memory VIDEO). With
    ``target_fps`` the frames come on that clock, each output time ``t0 + k / target_fps`` taking
    the decoded frame nearest in time (ties → the earlier; the rule of :func:`load_video_frames`):
    a faster clip drops frames, a slower one repeats them. Frames that do not advance time are
    skipped; a clip that changes frame size is a :class:`MediaError`. The decoder closes when the
    iteration ends or the generator is closed.
    """
    tgt = _check_limit("target_fps", target_fps)
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise MediaError(f"max_frames must be a positive integer, got {max_frames!r}")
    if hasattr(source, "read"):
        name = "video"
        container_ctx = _open_file_object(source)
    else:
        p = _existing_file(source, "video file")
        name = str(p)
        container_ctx = _open_container(p, "video file")
    av = _import_av()
    emitted = 0
    with container_ctx as container:
        if not container.streams.video:
            raise MediaError(f"{name} has no video stream; give a video file (mp4, mov, mkv, webm…)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        nominal = stream.average_rate or stream.guessed_rate or stream.base_rate
        step = 1.0 / float(nominal) if nominal else 1.0 / 25.0
        t0: Optional[float] = None
        last_t: Optional[float] = None
        prev: Optional[tuple[float, np.ndarray]] = None
        shape = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = (last_t + step) if last_t is not None else 0.0
                if last_t is not None and t <= last_t:
                    continue
                last_t = t
                rgb = _frame_rgb(frame, name)
                if shape is None:
                    shape, t0 = rgb.shape, t
                elif rgb.shape != shape:
                    raise MediaError(
                        f"{name} changes frame size ({shape[1]}×{shape[0]} → {rgb.shape[1]}×{rgb.shape[0]}); "
                        "re-encode it at one size"
                    )
                if tgt is None:
                    yield rgb
                    emitted += 1
                    if max_frames is not None and emitted >= max_frames:
                        return
                    continue
                assert t0 is not None
                if prev is not None:
                    tp, fp = prev
                    while True:
                        tk = t0 + emitted / tgt
                        if tk > t:
                            break
                        yield rgb if (t - tk) < (tk - tp) else fp
                        emitted += 1
                        if max_frames is not None and emitted >= max_frames:
                            return
                prev = (t, rgb)
        except av.error.EOFError:
            pass
        except av.error.FFmpegError as exc:
            if prev is None and emitted == 0:
                raise MediaError(f"{name} could not be decoded ({exc}); the file is damaged") from exc
            logger.warning("%s is damaged or truncated (%s): its frames stop here", name, exc)
        if shape is None:
            raise MediaError(f"{name} has no video frames; give a video with at least one frame")
        if tgt is not None and prev is not None:  # the last frame lasts one source frame
            assert t0 is not None
            count = max(1, int(math.floor((prev[0] + step - t0) * tgt + 1e-6)))  # as load_video_frames counts
            while emitted < count and (max_frames is None or emitted < max_frames):
                yield prev[1]
                emitted += 1


def _open_file_object(fh):
    av = _import_av()
    try:
        return av.open(fh, mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"the video could not be opened ({exc}); it is damaged or not a format FFmpeg reads") from exc
