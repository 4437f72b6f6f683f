"""``python -m talker_core batch JOBS.jsonl --out DIR``: many clips, models loaded once, resumable.

Each line of JOBS is one job in the ``generate`` command's terms (see
:mod:`talker_core.batch.jobs`). ``DIR/manifest.jsonl`` records every job as it goes; a rerun
skips the complete ones and redoes the rest. ``--ray auto|ADDRESS`` runs the same batch on a
Ray cluster (``pip install ray``), one worker per GPU, or per CPU slot when there is none.
"""

from __future__ import annotations

import argparse
import sys
import time

from talker_core.cli import generate as G

# The options every job shares, defined once by the generate command.
_SHARED = ("models", "device", "dtype", "attn", "quiet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", metavar="JOBS", help="JSON Lines file, one job per line (format in the README)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs and manifest.jsonl")
    shared = argparse.ArgumentParser(add_help=False)
    G.add_arguments(shared)
    group = parser.add_argument_group("models (shared by every job)")
    for action in shared._actions:
        if action.dest in _SHARED:
            group._add_action(action)
    r = parser.add_argument_group("ray (optional)")
    r.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        default=None,
        help="run on a Ray cluster: auto joins the one this machine is part of or starts a local one; "
        "local always starts a fresh local one; ADDRESS is a cluster address (ray://host:10001 or host:6379). Outputs and inputs must be on paths "
        "every node sees",
    )
    r.add_argument(
        "--workers", type=int, default=None, help="Ray workers (default: one per GPU, or per CPU slot when none)"
    )
    r.add_argument(
        "--retries",
        type=int,
        default=2,
        help="times a job whose Ray worker died is put back for another worker (default 2)",
    )


class _Display:
    """Job lines on stdout; a progress bar within the job on stderr (terminals only)."""

    def __init__(self, total: int, quiet: bool):
        self.total = total
        self.bar = not quiet and sys.stderr.isatty()
        self.finished = 0
        self.prefix = ""
        self.last = 0.0

    def start(self, index: int, count: int, job) -> None:
        self.prefix = f"[{self.finished + 1}/{self.total}] {job.id}"

    def progress(self, done: int, total: int, stage: str, preview=None) -> None:
        now = time.perf_counter()
        if not self.bar or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        filled = int(20 * done / max(total, 1))
        sys.stderr.write(f"\r{self.prefix} {stage:>8} [{'#' * filled}{'.' * (20 - filled)}] {done}/{total}\x1b[K")
        sys.stderr.flush()

    def row(self, row: dict) -> None:
        status = row["status"]
        if status == "running":
            return
        if self.bar:
            sys.stderr.write("\r\x1b[K")
        if status == "crashed":
            print(f"{row['job']}: {row['error']}", flush=True)
            return
        self.finished += 1
        head = f"[{self.finished}/{self.total}] {row['job']}"
        if status == "done":
            print(f"{head}: done, {row['seconds']:.2f} s in {row['wall']:.1f} s wall -> {row['output']}", flush=True)
        else:
            print(f"{head}: {status.upper()}: {row['error']}", flush=True)


def run(args: argparse.Namespace) -> int:
    from talker_core.batch import BatchSettings, load_jobs, run_local

    settings = BatchSettings(args.models, args.device, args.dtype, args.attn)
    jobs = load_jobs(args.jobs, args.out)
    display = _Display(len(jobs), args.quiet)
    if args.ray is not None:
        from talker_core.batch.ray_runner import run_ray

        if args.workers is not None and args.workers < 1:
            raise ValueError("--workers must be at least 1")
        if args.retries < 0:
            raise ValueError("--retries must be 0 or more")
        summary = run_ray(
            jobs, args.out, settings, address=args.ray, workers=args.workers, retries=args.retries, on_row=display.row
        )
    else:
        summary = run_local(
            jobs, args.out, settings, on_row=display.row, on_start=display.start, progress=display.progress
        )
    parts = [f"{summary.done} done", f"{summary.skipped} already complete", f"{len(summary.failed)} failed"]
    if summary.crashed:
        parts.append(f"{summary.crashed} worker crash{'es' if summary.crashed != 1 else ''} recovered")
    print(
        f"{summary.total} jobs: {', '.join(parts)}; {summary.seconds:.1f} s generated in {summary.wall:.1f} s; "
        f"manifest {args.out}/manifest.jsonl",
        flush=True,
    )
    for job_id, error in summary.failed:
        print(f"  failed {job_id}: {error}", file=sys.stderr)
    if summary.cancelled:
        print("stopped; run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if summary.ok else 1
