"""Running jobs: one :class:`Worker` (models loaded once) and the local runner around it.

The local runner and each Ray actor (:mod:`talker_core.batch.ray_runner`) run jobs through
the same :meth:`Worker.run`, which is the ``generate`` command's code path
(:mod:`talker_core.cli.generate`): plan, encode the inputs, generate, write. An output is
written beside its final name (:func:`~talker_core.batch.manifest.partial_path`) and renamed
when complete, so a file under the final name is always whole.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from talker_core.batch.jobs import Job, check_job, job_args
from talker_core.batch.manifest import (
    CANCELLED,
    DONE,
    FAILED,
    RUNNING,
    Manifest,
    is_complete,
    partial_path,
)

log = logging.getLogger(__name__)

__all__ = ["BatchSettings", "Worker", "Summary", "prepare", "run_local", "one_line"]


@dataclass(frozen=True)
class BatchSettings:
    """What every job of a batch shares: the model folder and how the models are placed."""

    models: str = "models"
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"


@dataclass
class Summary:
    total: int = 0
    done: int = 0  # completed in this run
    skipped: int = 0  # already complete from an earlier run
    failed: list = field(default_factory=list)  # (job id, error)
    cancelled: bool = False
    crashed: int = 0  # worker deaths (Ray); their jobs were put back
    wall: float = 0.0
    seconds: float = 0.0  # seconds of speech/video generated in this run

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled


def one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).strip().splitlines() if part.strip())
    return text or type(exc).__name__


def _error_text(exc: BaseException) -> str:
    from talker_core.checkpoint import CheckpointError

    known = isinstance(exc, (CheckpointError, ValueError, OSError))
    return one_line(exc) if known else f"{type(exc).__name__}: {one_line(exc)}"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """Holds the loaded models and runs one job at a time."""

    def __init__(self, settings: BatchSettings):
        from talker_core.cli.generate import Models

        self.settings = settings
        self.models = Models(settings.models, settings.device, settings.dtype, settings.attn)
        self.name = worker_name()

    def warm(self, need=None) -> str:
        """Load the models of ``need`` (default: every model the folder has), so that a job's wall
        time is its own; returns the worker's name."""
        for kind, path in self.models.found.items():
            if path is not None and (need is None or kind in need):
                self.models.get(kind)
        return self.name

    def run(self, job: Job, hooks=None) -> dict:
        """Run one job; returns the manifest fields of its outcome (status done or failed).

        A job's own fault (bad input, bad setting, a file that does not decode) is returned as
        failed. :class:`~talker_core.pipeline.Cancelled` and KeyboardInterrupt propagate, after
        the partial file is removed.
        """
        from talker_core import pipeline as P
        from talker_core.cli import features
        from talker_core.cli.generate import encode_inputs, generate_one, read_inputs, video_settings

        t0 = time.perf_counter()
        partial = partial_path(job.output)
        try:
            plan = check_job(job)
            args = job_args(job)
            self.models.require(plan.need)
            hooks = hooks or P.Hooks()
            decoded = read_inputs(args, plan.mode)
            inputs = encode_inputs(args, plan.mode, self.models, hooks, decoded)
            job.output.parent.mkdir(parents=True, exist_ok=True)
            # the generate command's own choices: V2A keeps the clip's frames unless rerender_face is set
            keep = decoded["drive_frames"] if plan.mode == P.Mode.V2A and not args.rerender_face else None
            result = generate_one(
                self.models,
                plan.requests[0],
                inputs,
                partial,
                args.render_chunk,
                hooks,
                keep_frames=keep,
                writer=features.video_writer(args),
                video=video_settings(args),
            )
            os.replace(partial, job.output)
        except (KeyboardInterrupt, P.Cancelled):
            partial.unlink(missing_ok=True)
            raise
        except Exception as exc:
            partial.unlink(missing_ok=True)
            log.warning("%s failed: %s", job.describe(), exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return {"status": FAILED, "error": _error_text(exc), "wall": time.perf_counter() - t0}
        return {
            "status": DONE,
            "seconds": result.generated_seconds,
            "wall": time.perf_counter() - t0,
            "bytes": job.output.stat().st_size,
        }


def prepare(jobs: list[Job], manifest: Manifest, summary: Summary, on_row=None) -> list[Job]:
    """Record the jobs that cannot run as failed, count the complete ones as skipped; returns the rest."""
    state = manifest.last_rows()
    todo = []
    for job in jobs:
        if is_complete(state.get(job.id), job.output, job.digest):
            summary.skipped += 1
            continue
        try:
            check_job(job)
        except ValueError as exc:
            row = manifest.write(job.id, FAILED, output=str(job.output), error=one_line(exc), line=job.line)
            summary.failed.append((job.id, row["error"]))
            if on_row:
                on_row(row)
            continue
        todo.append(job)
    return todo


def check_models(settings: BatchSettings, jobs: list[Job]) -> set:
    """Fail the whole batch up front when the model folder lacks a model that the jobs need;
    returns the model kinds they need."""
    from talker_core.weights import loaders

    need = set()
    for job in jobs:
        need |= check_job(job).need
    found = loaders.find_models(Path(settings.models))
    missing = {k: v for k, v in found.items() if k in need}
    if any(v is None for v in missing.values()):
        raise ValueError(loaders.missing_models_message(Path(settings.models), missing))
    return need


def run_local(
    jobs: list[Job],
    out_dir,
    settings: BatchSettings,
    on_row: Optional[Callable[[dict], None]] = None,
    on_start: Optional[Callable[[int, int, Job], None]] = None,
    progress=None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Summary:
    """Run the jobs one after another in this process, sharing one :class:`Worker`.

    on_row(row): every manifest row as it is written. on_start(index, count, job): a job begins.
    progress(done, total, stage, preview): within a job (the pipeline's hook). should_stop():
    polled every patch and rendered chunk; True stops at once (the job is recorded as cancelled).
    Ctrl-C does the same. Rerunning resumes: complete jobs are skipped, the others redone.
    """
    from talker_core import pipeline as P

    started = time.perf_counter()
    manifest = Manifest(out_dir)
    summary = Summary(total=len(jobs))
    todo = prepare(jobs, manifest, summary, on_row)
    if todo:
        need = check_models(settings, todo)
        worker = Worker(settings)
        worker.warm(need)
        hooks = P.Hooks(progress=progress, should_cancel=should_stop)
        for index, job in enumerate(todo):
            if on_start:
                on_start(index, len(todo), job)
            row = manifest.write(job.id, RUNNING, output=str(job.output), worker=worker.name, line=job.line)
            if on_row:
                on_row(row)
            try:
                outcome = worker.run(job, hooks)
            except (KeyboardInterrupt, P.Cancelled):
                row = manifest.write(job.id, CANCELLED, output=str(job.output), error="stopped by the user")
                if on_row:
                    on_row(row)
                summary.cancelled = True
                break
            row = manifest.write(
                job.id, outcome.pop("status"), output=str(job.output), worker=worker.name, digest=job.digest, **outcome
            )
            if on_row:
                on_row(row)
            if row["status"] == DONE:
                summary.done += 1
                summary.seconds += row["seconds"] or 0.0
            else:
                summary.failed.append((job.id, row["error"]))
    summary.wall = time.perf_counter() - started
    return summary
