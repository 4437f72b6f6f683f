"""The batch manifest: ``DIR/manifest.jsonl``, one JSON object per line, one line per event.

Each row names its job and says what happened (:data:`STATUSES`); the last row of a job is
its state. Rows are appended, flushed and fsync'ed one at a time, so a crash or Ctrl-C leaves
every earlier row intact and at worst one torn last line, which :func:`read_manifest` skips.
Standard library only: ``scripts/queue_workflow.py`` imports it without torch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
RUNNING, DONE, FAILED, CANCELLED, CRASHED = "running", "done", "failed", "cancelled", "crashed"
# running: started (worker named); done: output complete; failed: the job itself is at fault
# (error says why); cancelled: stopped by Ctrl-C; crashed: its worker died, the job was put back.
STATUSES = (RUNNING, DONE, FAILED, CANCELLED, CRASHED)


class Manifest:
    """Append-only writer and reader of one batch folder's manifest."""

    def __init__(self, out_dir):
        self.dir = Path(out_dir)
        self.path = self.dir / MANIFEST_NAME

    def write(
        self,
        job: str,
        status: str,
        output: Optional[str] = None,
        seconds: Optional[float] = None,
        wall: Optional[float] = None,
        error: Optional[str] = None,
        **extra,
    ) -> dict:
        """Append one row (flushed and fsync'ed before returning); returns it."""
        if status not in STATUSES:
            raise ValueError(f"manifest status must be one of {', '.join(STATUSES)}, got {status!r}")
        row = {
            "job": job,
            "status": status,
            "output": output,
            "seconds": None if seconds is None else round(float(seconds), 3),
            "wall": None if wall is None else round(float(wall), 3),
            "error": error,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        row.update(extra)
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return row

    def rows(self) -> list[dict]:
        return read_manifest(self.path)

    def last_rows(self) -> dict[str, dict]:
        """The state of every job seen so far: its last row."""
        state: dict[str, dict] = {}
        for row in self.rows():
            state[row["job"]] = row
        return state


def read_manifest(path) -> list[dict]:
    """Every well-formed row of a manifest file (none if it does not exist); torn lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is not JSON (a write cut short?); ignored", path, number)
                continue
            if isinstance(row, dict) and isinstance(row.get("job"), str) and row.get("status") in STATUSES:
                rows.append(row)
    return rows


def is_complete(row: Optional[dict], output: Path, digest: Optional[str] = None) -> bool:
    """True when ``row`` says done for this output, the file is there with the recorded size, and
    (when given) the job's definition is unchanged since."""
    if row is None or row.get("status") != DONE:
        return False
    if digest is not None and row.get("digest") != digest:
        return False
    try:
        size = output.stat().st_size
    except OSError:
        return False
    return size > 0 and size == row.get("bytes")


def partial_path(output: Path) -> Path:
    """Where an output is written before it is complete; renamed onto ``output`` at the end."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")
