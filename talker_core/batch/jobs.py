"""Batch jobs: one JSON object per line of a JOBS file, in the ``generate`` command's terms.

A job's keys are the long options of ``python -m talker_core generate`` with ``_`` or ``-``
(``text``, ``text_file``, ``ref_audio``, ``ref_video``, ``ref_image``, ``ref_motion``,
``drive_audio``, ``drive_video``, ``speech_only``, ``seed``, ``steps``, ``cfg``,
``temperature``, ``sway``, ``cfg_zero_star``, ``prefix_seconds``, ``max_seconds``,
``segment_prefix_seconds``, ``stop_threshold``, ``render_chunk``, ``crf``, ``preset``,
``fragmented``, ``overlap``), one value each, plus:

- ``name``: the job's id in the manifest (default: the output's stem, else ``line-N``);
- ``output``: the file to write, relative to the batch's ``--out`` folder or absolute
  (default ``NAME.mp4``, or ``NAME.wav`` for speech);
- ``mode``: ``t2av``, ``a2v``, ``v2a`` or ``speech``; optional, checked against the inputs given.

The options that choose and place the models (``models``, ``device``, ``dtype``, ``attn``) are
the batch's, not a job's: every job shares the loaded models. Relative input paths are read
from the JOBS file's folder. Each job is checked by the same code as the ``generate`` command
(:func:`talker_core.cli.generate.plan`), so a job is valid exactly when the command line
with the same options is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from talker_core.cli import generate as G

__all__ = ["Job", "load_jobs", "job_args", "check_job", "JOB_KEYS", "BATCH_KEYS"]

BATCH_KEYS = ("models", "device", "dtype", "attn", "quiet", "out")  # set once per batch, not per job
JOB_KEYS = ("name", "output", "mode")  # the batch's own keys; the rest are generate options
MODES = {"t2av": "t2av", "a2v": "a2v", "v2a": "v2a", "speech": "speech"}


@dataclass
class Job:
    """One line of a JOBS file, ready to run (plain data: it travels to Ray workers as is)."""

    id: str
    line: int
    output: Path
    options: dict = field(default_factory=dict)  # generate option dest -> JSON value, paths absolute
    mode: Optional[str] = None
    digest: str = ""
    error: Optional[str] = None  # set when the line itself cannot be used; the job is recorded as failed

    def describe(self) -> str:
        return f"job {self.id!r} (line {self.line})"


class _JobParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit the process
        raise ValueError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _JobParser(prog="job", add_help=False)
    G.add_arguments(parser)
    return parser


def _actions(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: a for a in parser._actions if a.option_strings}


def job_args(job: Job) -> argparse.Namespace:
    """The ``generate`` arguments of a job (raises ValueError naming the key at fault)."""
    parser = _parser()
    actions = _actions(parser)
    argv: list[str] = []
    for key, value in job.options.items():
        action = actions[key]
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            if value:
                argv.append(flag)
            continue
        if isinstance(action, argparse.BooleanOptionalAction):  # e.g. cfg_zero_star: --x / --no-x
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            argv.append(flag if value else action.option_strings[1])
            continue
        if isinstance(value, (list, dict)) or value is None:
            raise ValueError(f"{key} takes one value per job, got {json.dumps(value)}; write one job per value")
        if isinstance(value, bool):
            raise ValueError(f"{key} takes a value, not {str(value).lower()}")
        argv += [flag, str(value)]
    if job.mode == "speech":
        argv.append("--speech-only")
    argv += ["--out", str(job.output)]
    return parser.parse_args(argv)


def check_job(job: Job) -> G.Plan:
    """Everything the ``generate`` command checks before loading a model, plus the job's own keys."""
    if job.error:
        raise ValueError(job.error)
    args = job_args(job)
    plan = G.plan(args)
    if len(plan.requests) != 1:
        raise ValueError("a job makes one output: give one text and one seed")
    if job.mode is not None and plan.mode != job.mode:
        needs = {"a2v": "drive_audio", "v2a": "drive_video", "t2av": "no drive_audio/drive_video"}
        hint = f" (mode {job.mode} needs {needs[job.mode]})" if job.mode in needs else ""
        raise ValueError(f"mode is {job.mode!r} but the inputs given make it {plan.mode!r}{hint}")
    return plan


def _parse_line(number: int, text: str, base: Path, out_dir: Path, actions: dict) -> Job:
    fallback = f"line-{number}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Job(
            fallback, number, out_dir / f"{fallback}.mp4", error=f"not a JSON object: {exc.msg} (column {exc.colno})"
        )
    if not isinstance(obj, dict):
        return Job(fallback, number, out_dir / f"{fallback}.mp4", error="not a JSON object ({...} on one line)")
    obj = {str(k).replace("-", "_"): v for k, v in obj.items()}
    name, output, mode = obj.pop("name", None), obj.pop("output", None), obj.pop("mode", None)
    problems = []
    if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name):
        problems.append(f"name must be a non-empty string without slashes, got {name!r}")
        name = None
    if output is not None and (not isinstance(output, str) or not output.strip()):
        problems.append(f"output must be a file name, got {output!r}")
        output = None
    if mode is not None and mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        mode = None
    job_id = name or (Path(output).stem if output else fallback)
    suffix = ".wav" if (mode == "speech" or obj.get("speech_only") is True) else ".mp4"
    out = Path(output) if output else Path(f"{job_id}{suffix}")
    out = out if out.is_absolute() else out_dir / out
    options = {}
    for key, value in obj.items():
        if key in BATCH_KEYS:
            problems.append(f"{key} is set for the whole batch (on the batch command line), not per job")
        elif key not in actions:
            problems.append(f"unknown key {key!r} (a job takes the generate options and name, output, mode)")
        elif key in G.INPUT_FILES + ("text_file",) and isinstance(value, str) and value:
            path = Path(value).expanduser()
            options[key] = str(path if path.is_absolute() else (base / path))
        else:
            options[key] = value
    definition = json.dumps({"options": options, "mode": mode, "output": str(out)}, sort_keys=True)
    digest = hashlib.sha256(definition.encode()).hexdigest()[:16]
    return Job(job_id, number, out.resolve(), options, mode, digest, "; ".join(problems) or None)


def load_jobs(path, out_dir) -> list[Job]:
    """Read a JOBS file (JSON Lines; blank lines and lines starting with # are skipped).

    A line that cannot be used gives a Job with ``error`` set (the batch records it as failed
    and goes on); two jobs with the same id or output are an error for the whole file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"jobs file {path} does not exist")
    base = path.resolve().parent
    out_dir = Path(out_dir).resolve()
    actions = _actions(_parser())
    jobs: list[Job] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                jobs.append(_parse_line(number, line, base, out_dir, actions))
    if not jobs:
        raise ValueError(f"jobs file {path} has no jobs (one JSON object per line)")
    seen_id: dict[str, int] = {}
    seen_out: dict[Path, int] = {}
    for job in jobs:
        if job.id in seen_id:
            raise ValueError(
                f"{path}: lines {seen_id[job.id]} and {job.line} are both job {job.id!r}; give each job its own name"
            )
        if job.output in seen_out:
            raise ValueError(f"{path}: lines {seen_out[job.output]} and {job.line} both write {job.output}")
        seen_id[job.id] = job.line
        seen_out[job.output] = job.line
    return jobs
