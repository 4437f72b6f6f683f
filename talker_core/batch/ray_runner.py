"""The batch on a Ray cluster: one worker (a Ray actor holding loaded models) per GPU, or per
CPU slot when the cluster has none.

This module imports Ray only inside :func:`run_ray`; without Ray installed the package and
the local runner work as before. The driver (the process that ran ``batch --ray``) is the only
writer of the manifest: it hands each idle worker the next job, one at a time, and writes one
row per event, so nothing is counted twice. A worker that dies mid-job (process killed, node
lost, out of memory) costs only that job's attempt: the driver records it as ``crashed``, puts
the job back for another worker (up to ``retries`` times) and starts a replacement worker.
Workers write outputs themselves, beside the final name and renamed when complete, so ``--out``
must be a folder every node sees (a shared file system), as must the inputs and the models.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from talker_core.batch.jobs import Job
from talker_core.batch.manifest import CANCELLED, CRASHED, DONE, FAILED, RUNNING, Manifest, partial_path
from talker_core.batch.runner import BatchSettings, Summary, Worker, check_models, prepare

log = logging.getLogger(__name__)

__all__ = ["run_ray", "RAY_MISSING"]

RAY_MISSING = (
    "--ray needs Ray, which is not installed: pip install 'comfyui-talker-t2av[ray]' (or pip install ray), "
    "or leave out --ray to run on this machine"
)


class _RayWorker:
    """The body of one Ray actor: a :class:`Worker` and the two calls the driver makes."""

    def __init__(self, settings: BatchSettings, need):
        self.worker = Worker(settings)
        self.need = need

    def ready(self) -> str:
        return self.worker.warm(self.need)

    def run(self, job: Job) -> dict:
        return self.worker.run(job)


def _slots(ray, workers: Optional[int]) -> tuple[int, dict]:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        slots, options = gpus, {"num_gpus": 1, "num_cpus": 1}
    else:
        slots, options = max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}
    if workers is not None and workers > slots:
        raise ValueError(
            f"--workers {workers}: the Ray cluster has {slots} {'GPU' if gpus else 'CPU'} slot(s); give at most {slots}"
        )
    return (workers or slots), options


def run_ray(
    jobs: list[Job],
    out_dir,
    settings: BatchSettings,
    address: str = "auto",
    workers: Optional[int] = None,
    retries: int = 2,
    on_row: Optional[Callable[[dict], None]] = None,
) -> Summary:
    """Run the jobs on Ray workers; same manifest, resume and failure rules as :func:`run_local`.

    address: ``auto`` joins the cluster this machine belongs to, or starts a local one;
    otherwise a cluster address for :func:`ray.init`.
    """
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError
    except ImportError as exc:
        raise ValueError(RAY_MISSING) from exc

    started = time.perf_counter()
    manifest = Manifest(out_dir)
    summary = Summary(total=len(jobs))

    def emit(row):
        if on_row:
            on_row(row)

    todo = prepare(jobs, manifest, summary, on_row)
    if not todo:
        summary.wall = time.perf_counter() - started
        return summary
    need = check_models(settings, todo)

    # Workers import this pack from where the driver found it (a local cluster, or a shared path).
    pack_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(p for p in (pack_root, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address=None if address == "auto" else address,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
        ignore_reinit_error=True,
        include_dashboard=False,
        log_to_driver=log.isEnabledFor(logging.INFO),
        logging_level=logging.WARNING,
    )
    try:
        count, options = _slots(ray, workers)
        count = min(count, len(todo))
        actor_class = ray.remote(max_restarts=0, max_task_retries=0, **options)(_RayWorker)
        pending = deque(todo)
        attempts: dict[str, int] = {}
        inflight: dict = {}  # object ref -> ("ready", actor, None) or ("job", actor, job)
        names: dict = {}  # actor -> worker name, once ready
        idle: list = []
        spare = count * (retries + 1)  # replacement workers allowed over the batch
        last_error = ""

        def start_actor():
            actor = actor_class.remote(settings, need)
            inflight[actor.ready.remote()] = ("ready", actor, None)

        for _ in range(count):
            start_actor()
        try:
            while pending or any(kind == "job" for kind, *_ in inflight.values()):
                while idle and pending:
                    actor, job = idle.pop(), pending.popleft()
                    attempts[job.id] = attempts.get(job.id, 0) + 1
                    name = names[actor]
                    emit(
                        manifest.write(
                            job.id,
                            RUNNING,
                            output=str(job.output),
                            worker=name,
                            attempt=attempts[job.id],
                            line=job.line,
                        )
                    )
                    inflight[actor.run.remote(job)] = ("job", actor, job)
                if not inflight:
                    raise RuntimeError(
                        f"no Ray worker is left to run the {len(pending)} remaining job(s): {last_error}"
                    )
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                kind, actor, job = inflight.pop(ref)
                try:
                    value = ray.get(ref)
                except (RayActorError, WorkerCrashedError) as exc:
                    name = names.pop(actor, "a starting worker")
                    last_error = " ".join(str(exc).split())[:500]
                    if kind == "ready":
                        log.warning("a Ray worker died while loading the models: %s", exc)
                        continue
                    else:
                        summary.crashed += 1
                        again = attempts[job.id] <= retries
                        error = f"worker {name} died mid-job; " + (
                            "put back for another worker" if again else f"gave up after {attempts[job.id]} attempts"
                        )
                        emit(manifest.write(job.id, CRASHED, output=str(job.output), worker=name, error=error))
                        if again:
                            pending.appendleft(job)
                        else:
                            partial_path(job.output).unlink(missing_ok=True)
                            row = manifest.write(job.id, FAILED, output=str(job.output), error=error)
                            summary.failed.append((job.id, row["error"]))
                            emit(row)
                    if spare > 0 and pending:
                        spare -= 1
                        start_actor()
                    continue
                except RayTaskError as exc:  # Worker.run returns a job's own errors; this is anything else
                    if kind == "ready":
                        raise RuntimeError(f"a Ray worker could not load the models: {exc}") from exc
                    value = {"status": FAILED, "error": str(exc).strip().splitlines()[-1]}
                if kind == "ready":
                    names[actor] = value
                    idle.append(actor)
                    continue
                status = value.pop("status")
                row = manifest.write(
                    job.id, status, output=str(job.output), worker=names[actor], digest=job.digest, **value
                )
                emit(row)
                if status == DONE:
                    summary.done += 1
                    summary.seconds += row["seconds"] or 0.0
                else:
                    summary.failed.append((job.id, row["error"]))
                idle.append(actor)
        except KeyboardInterrupt:
            summary.cancelled = True
        finally:
            for entry in list(inflight.values()) + [(None, a, None) for a in idle]:
                ray.kill(entry[1], no_restart=True)
            if summary.cancelled:  # the workers are gone: record their jobs and remove what they left
                for kind, _actor, job in inflight.values():
                    if kind == "job":
                        partial_path(job.output).unlink(missing_ok=True)
                        emit(manifest.write(job.id, CANCELLED, output=str(job.output), error="stopped by the user"))
    finally:
        ray.shutdown()
    summary.wall = time.perf_counter() - started
    return summary
