"""Many clips from one JOBS file: ``python -m talker_core batch JOBS.jsonl --out DIR``.

:mod:`~talker_core.batch.jobs` reads the job lines, :mod:`~talker_core.batch.manifest` keeps
``DIR/manifest.jsonl``, :mod:`~talker_core.batch.runner` runs jobs in this process and
:mod:`~talker_core.batch.ray_runner` on a Ray cluster (optional; imported only for ``--ray``).
"""

from __future__ import annotations

from talker_core.batch.jobs import Job, check_job, load_jobs
from talker_core.batch.manifest import MANIFEST_NAME, Manifest, read_manifest
from talker_core.batch.runner import BatchSettings, Summary, Worker, run_local

__all__ = [
    "Job",
    "load_jobs",
    "check_job",
    "MANIFEST_NAME",
    "Manifest",
    "read_manifest",
    "BatchSettings",
    "Summary",
    "Worker",
    "run_local",
]
