"""A renderer that overlaps generation, for the benchmark's e2e part (not part of the library)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence

import torch

from talker_core.models.liax import LiaXGenerator


class StreamingRenderer:
    """Renders motion rows while they are being produced: a background thread renders
    ``chunk`` rows at a time (on its own CUDA stream on a GPU), so rendering overlaps
    generation (``TalkerGenerator.generate(on_patch=...)``). The benchmark's e2e part uses it for its
    overlapped variant; the pipeline's own overlapped path is ``pipeline.stream_talk``, which the
    ``stream`` and ``long`` parts measure.

    gen: the generator; z (1, S) and feats: the identity (see :meth:`LiaXGenerator.render`);
    chunk: rows per render call; on_frames(start, frames): optional, called in the worker
    thread with each chunk's frames (B, 3, 512, 512) on their device; otherwise the frames
    are kept and :meth:`close` returns them concatenated on the CPU (float32).

    Use: ``push(alpha)`` with raw (de-normalised) codes (B, M), any number of rows at a time;
    ``close()`` renders what is left, waits and returns. Errors in the worker are raised by
    :meth:`push` or :meth:`close`. It helps where rendering and generation use different
    resources (a GPU with spare capacity during the small-batch generation steps); on a
    CPU whose cores generation already uses it gains nothing.
    """

    def __init__(
        self, gen: LiaXGenerator, z: torch.Tensor, feats: Sequence[torch.Tensor], chunk: int = 8, on_frames=None
    ):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.gen, self.z, self.feats, self.chunk, self.on_frames = gen, z, list(feats), chunk, on_frames
        self.device = z.device
        self._queue: queue.Queue = queue.Queue()
        self._frames: list[torch.Tensor] = []
        self._error: BaseException | None = None
        self._done = 0
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._inference = torch.is_inference_mode_enabled()
        self._thread = threading.Thread(target=self._work, name="liax-render", daemon=True)
        self._thread.start()

    def push(self, alpha: torch.Tensor) -> None:
        """Queue raw motion codes (B, M) (any device) for rendering."""
        if self._error is not None:
            raise RuntimeError("LIA-X rendering failed") from self._error
        rows = alpha.detach().to(device=self.device, dtype=self.z.dtype)
        event = None
        if self._stream is not None:
            event = torch.cuda.Event()
            event.record()  # rows are ready on the producer's stream
        self._queue.put((rows, event))

    def close(self) -> torch.Tensor | None:
        """Render the rest, stop the worker; returns the frames (T, 3, 512, 512) on the CPU, or None
        when ``on_frames`` took them."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("LIA-X rendering failed") from self._error
        if self.on_frames is not None:
            return None
        if not self._frames:
            return torch.zeros(0, 3, self.gen.cfg.resolution, self.gen.cfg.resolution)
        return torch.cat(self._frames)

    def _render(self, rows: torch.Tensor) -> None:
        frames = self.gen.render(self.z, self.feats, rows)
        if self.on_frames is not None:
            self.on_frames(self._done, frames)
        else:
            self._frames.append(frames.float().cpu())
        self._done += rows.shape[0]

    def _work(self) -> None:
        pending: list[torch.Tensor] = []
        ctx = torch.inference_mode() if self._inference else torch.no_grad()
        stream = torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()
        try:
            with ctx, stream:
                while True:
                    item = self._queue.get()
                    if item is not None:
                        rows, event = item
                        if event is not None and self._stream is not None:
                            self._stream.wait_event(event)
                            rows.record_stream(self._stream)
                        pending.append(rows)
                    have = sum(r.shape[0] for r in pending)
                    while have >= self.chunk or (item is None and have):
                        rows = torch.cat(pending) if len(pending) > 1 else pending[0]
                        take = min(self.chunk, rows.shape[0])
                        self._render(rows[:take])
                        pending = [rows[take:]] if rows.shape[0] > take else []
                        have -= take
                    if item is None:
                        break
                if self._stream is not None:
                    self._stream.synchronize()
        except BaseException as exc:  # noqa: BLE001 — handed to the caller by push/close
            self._error = exc
