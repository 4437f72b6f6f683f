"""The batch runner: JOBS.jsonl in, outputs + manifest out; failures recorded, reruns resume.

Local runs go through ``talker_core.cli.main`` (the ``python -m talker_core batch`` code) or
:func:`run_local`; the Ray run is the real command in a subprocess on a local 2-worker cluster,
with one worker killed mid-job. Jobs are speech-only where the test is about bookkeeping
(seconds each on the CPU), with one talking-video job so the video path is covered too.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from talker_core import media
from talker_core.batch import load_jobs, read_manifest, run_local
from talker_core.batch.jobs import check_job
from talker_core.batch.manifest import partial_path
from talker_core.batch.runner import BatchSettings
from talker_core.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_inputs")
    sr = 22050
    t = torch.arange(int(sr * 2.0)) / sr
    wav = (0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)))[None]
    media.write_wav(d / "voice.wav", wav, sr)
    from PIL import Image

    Image.fromarray((torch.rand(96, 128, 3) * 255).to(torch.uint8).numpy()).save(d / "face.png")
    (d / "broken.png").write_bytes(b"this is not an image")
    (d / "words.txt").write_text("Words from a file.", encoding="utf-8")
    return d


def speech(name: str, seconds: float = 0.32, **extra) -> dict:
    return {
        "name": name,
        "mode": "speech",
        "text": f"Job {name}.",
        "ref_audio": "voice.wav",
        "max_seconds": seconds,
        **extra,
    }


def write_jobs(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def last_rows(out: Path) -> dict:
    state = {}
    for row in read_manifest(out / "manifest.jsonl"):
        state[row["job"]] = row
    return state


def count(out: Path, job: str, status: str) -> int:
    return sum(1 for r in read_manifest(out / "manifest.jsonl") if r["job"] == job and r["status"] == status)


def assert_wav(path: Path, seconds: float):
    wav, sr = media.load_audio(path)
    assert sr == 24000 and abs(wav.shape[-1] / sr - seconds) < 0.05, (path, wav.shape, sr)


# --------------------------------------------------------------------------- job lines


def test_job_lines_are_checked_like_the_command_line(inputs, tmp_path):
    jobs_file = write_jobs(
        inputs / "jobs_check.jsonl",
        [
            {"name": "fromfile", "mode": "speech", "text_file": "words.txt", "ref_audio": "voice.wav"},
            speech("nulltext", text=None),
            {"name": "steps", "mode": "speech", "text": "x", "ref_audio": "voice.wav", "steps": 0},
            {"name": "batchkey", "text": "x", "ref_audio": "voice.wav", "ref_image": "face.png", "device": "cpu"},
            {"name": "unknown", "text": "x", "ref_audio": "voice.wav", "ref_image": "face.png", "colour": "red"},
            {"name": "two", "text": ["a", "b"], "ref_audio": "voice.wav", "ref_image": "face.png"},
            {"name": "a2v", "mode": "a2v", "text": "x", "ref_audio": "voice.wav", "ref_image": "face.png"},
            {"name": "noface", "text": "x", "ref_audio": "voice.wav"},
            {"name": "badseed", "text": "x", "ref_audio": "voice.wav", "ref_image": "face.png", "seed": "1.5"},
            {"name": "badcrf", "text": "x", "ref_audio": "voice.wav", "ref_image": "face.png", "crf": 60},
            {"name": "speechcrf", "mode": "speech", "text": "x", "ref_audio": "voice.wav", "crf": 20},
            "[1, 2]",
        ],
    )
    jobs = {j.id: j for j in load_jobs(jobs_file, tmp_path / "out")}
    assert jobs["fromfile"].options["text_file"] == str(inputs / "words.txt")  # relative to the JOBS file
    assert jobs["fromfile"].output == (tmp_path / "out" / "fromfile.wav").resolve()
    assert check_job(jobs["fromfile"]).requests[0].text == "Words from a file."

    def error(job_id):
        with pytest.raises(ValueError) as info:
            check_job(jobs[job_id])
        return str(info.value)

    # "text": null is not a value: the job says so instead of guessing
    assert "text takes one value" in error("nulltext")
    # the parameter table's own check, made by the generate command's option parser
    assert error("steps") == "argument --steps: steps must be in 1..200, got 0"
    assert "device is set for the whole batch" in error("batchkey")
    assert "unknown key 'colour'" in error("unknown")
    assert "one value per job" in error("two")
    assert "mode is 'a2v'" in error("a2v") and "drive_audio" in error("a2v")
    # no face and no demo media in the models folder: say what to give, or how to get the demo face
    assert "needs --ref-image" in error("noface") and "download" in error("noface")
    assert "invalid int value: '1.5'" in error("badseed")
    assert error("badcrf") == "argument --crf: --crf must be in 0..51, got 60"
    assert "--crf is for video" in error("speechcrf")
    assert "not a JSON object" in error("line-12")

    dup = write_jobs(inputs / "jobs_dup.jsonl", [speech("same"), speech("same")])
    with pytest.raises(ValueError, match="lines 1 and 2 are both job 'same'"):
        load_jobs(dup, tmp_path / "out")


# --------------------------------------------------------------------------- local runner


def test_local_batch_records_failures_goes_on_and_resumes(debug_models, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    jobs_file = write_jobs(
        inputs / "jobs_local.jsonl",
        [
            {
                "name": "video",
                "text": "Hello there.",
                "ref_audio": "voice.wav",
                "ref_image": "face.png",
                "max_seconds": 0.32,
                "crf": 40,
                "preset": "veryslow",
                "fragmented": True,
                "overlap": False,
            },
            speech("one"),
            speech("nofile", ref_audio="missing.wav"),
            speech("empty", text="   "),
            {
                "name": "broken",
                "text": "A broken face.",
                "ref_audio": "voice.wav",
                "ref_image": "broken.png",
                "max_seconds": 0.32,
            },
            "{not json",
        ],
    )
    argv = ["batch", str(jobs_file), "--out", str(out), "--models", str(debug_models), "--quiet"]
    assert cli_main(argv) == 1  # some jobs failed
    stdout = capsys.readouterr().out
    state = last_rows(out)
    assert {k: v["status"] for k, v in state.items()} == {
        "video": "done",
        "one": "done",
        "nofile": "failed",
        "empty": "failed",
        "broken": "failed",
        "line-6": "failed",
    }
    assert "missing.wav does not exist" in state["nofile"]["error"]
    assert "text is empty" in state["empty"]["error"]
    assert "broken.png" in state["broken"]["error"] and "could not be decoded" in state["broken"]["error"]
    assert "6 jobs: 2 done, 0 already complete, 4 failed" in stdout
    info = media.probe_media(out / "video.mp4")
    assert sorted(s["type"] for s in info["streams"]) == ["audio", "video"]
    # the generate command's video options, per job: what x264 ran with, and the fragmented layout
    data = (out / "video.mp4").read_bytes()
    x264 = data[data.index(b"x264 - core") :][:2000]
    assert b"crf=40.0" in x264 and b"subme=10" in x264 and b"keyint=25" in x264  # veryslow: subme 10
    assert b"moof" in data
    assert_wav(out / "one.wav", 0.32)
    assert state["one"]["seconds"] == pytest.approx(0.32) and state["one"]["wall"] > 0
    assert state["one"]["bytes"] == (out / "one.wav").stat().st_size
    assert not list(out.glob(".*partial*")) and not (out / "broken.mp4").exists()
    assert "ray" not in sys.modules  # the local runner does not need Ray

    # Rerun after mending one bad input: only the jobs not complete run again.
    from PIL import Image

    Image.fromarray((torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()).save(inputs / "broken.png", format="PNG")
    mtime = (out / "one.wav").stat().st_mtime_ns
    assert cli_main(argv) == 1  # nofile, empty, line-6 still fail
    assert count(out, "video", "running") == 1 and count(out, "one", "running") == 1  # not redone
    assert (out / "one.wav").stat().st_mtime_ns == mtime
    assert count(out, "broken", "running") == 2 and last_rows(out)["broken"]["status"] == "done"
    assert count(out, "nofile", "failed") == 2  # retried, recorded again
    assert "6 jobs: 1 done, 2 already complete, 3 failed" in capsys.readouterr().out

    # A changed job definition is not "complete": the output is made again.
    lines = jobs_file.read_text().splitlines()
    lines[1] = json.dumps(speech("one", seconds=0.48))
    jobs_file.write_text("\n".join(lines) + "\n")
    cli_main(argv)
    assert count(out, "one", "done") == 2
    assert_wav(out / "one.wav", 0.48)


@pytest.mark.slow
def test_batch_v2a_keeps_the_clips_frames_like_the_command_line(debug_models, inputs, tmp_path):
    """A dubbing job takes the generate command's path: the clip's own frames under the new speech."""
    frames = (torch.rand(20, 96, 128, 3) * 255).to(torch.uint8)
    media.write_mp4(inputs / "silent_batch.mp4", frames, 30)
    out = tmp_path / "out"
    job = {"name": "dub", "text": "Dubbed words.", "ref_audio": "voice.wav", "drive_video": "silent_batch.mp4"}
    jobs_file = write_jobs(inputs / "jobs_v2a.jsonl", [{**job, "max_seconds": 0.32}])
    argv = ["batch", str(jobs_file), "--out", str(out), "--models", str(debug_models), "--quiet"]
    assert cli_main(argv) == 0
    kept, _ = media.load_video_frames(out / "dub.mp4")
    source, _ = media.load_video_frames(inputs / "silent_batch.mp4", target_fps=25)
    assert kept.shape[1:3] == (96, 128)  # the clip's picture, not a 512×512 render
    n = kept.shape[0]
    assert (kept.float() - source[:n].float()).abs().mean() < 20  # the same frames through a second encode


def test_local_batch_stops_at_ctrl_c_and_the_rerun_resumes(debug_models, inputs, tmp_path):
    out = tmp_path / "out"
    jobs = load_jobs(write_jobs(inputs / "jobs_stop.jsonl", [speech("a"), speech("b", 0.64), speech("c")]), out)
    settings = BatchSettings(models=str(debug_models))
    started: list[str] = []

    def interrupt_in_b(done, total, stage, preview=None):
        # What Ctrl-C does: KeyboardInterrupt raised in the main thread, here mid-generation of job b.
        if started[-1] == "b" and stage == "generate" and done >= 1:
            raise KeyboardInterrupt

    summary = run_local(jobs, out, settings, on_start=lambda i, n, job: started.append(job.id), progress=interrupt_in_b)
    assert summary.cancelled and summary.done == 1 and started == ["a", "b"]
    state = last_rows(out)
    assert state["a"]["status"] == "done" and state["b"]["status"] == "cancelled" and "c" not in state
    assert not (out / "b.wav").exists() and not partial_path(out / "b.wav").exists()

    started.clear()
    summary = run_local(jobs, out, settings, on_start=lambda i, n, job: started.append(job.id))
    assert summary.ok and summary.skipped == 1 and summary.done == 2 and started == ["b", "c"]
    assert_wav(out / "b.wav", 0.64)
    assert {k: v["status"] for k, v in last_rows(out).items()} == {"a": "done", "b": "done", "c": "done"}


# --------------------------------------------------------------------------- Ray


def _ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None  # without importing it


@pytest.mark.skipif(not _ray_available(), reason="Ray is not installed (pip install ray; scripts/test.sh installs it)")
def test_ray_batch_survives_a_killed_worker_and_resumes(debug_models, inputs, tmp_path):
    out = tmp_path / "out"
    # a video job: rendering 512×512 frames with the debug LIA-X keeps the worker busy for many seconds
    # even on an idle machine (a speech-only job of 15 s takes under one second there)
    long_job = {
        "name": "long",
        "text": "A long line that keeps the worker busy for a while.",
        "ref_audio": "voice.wav",
        "ref_image": "face.png",
        "max_seconds": 2.0,
        "stop_threshold": 1.0,
    }
    jobs_file = write_jobs(
        inputs / "jobs_ray.jsonl",
        [
            speech("s1"),
            long_job,
            speech("s2"),
            speech("nofile", ref_audio="missing.wav"),
            {"name": "video", "text": "Hello.", "ref_audio": "voice.wav", "ref_image": "face.png", "max_seconds": 0.32},
            speech("s3"),
        ],
    )
    cmd = [sys.executable, "-m", "talker_core", "batch", str(jobs_file), "--out", str(out)]
    cmd += ["--models", str(debug_models), "--ray", "local", "--workers", "2", "--quiet"]  # a fresh local cluster
    env = dict(os.environ, RAY_DISABLE_USAGE_STATS="1", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            running = [
                r for r in read_manifest(out / "manifest.jsonl") if r["job"] == "long" and r["status"] == "running"
            ]
            if running:
                time.sleep(0.3)  # into the job, long before its rendering ends
                killed = running[0]["worker"]
                os.kill(int(killed.rsplit(":", 1)[1]), signal.SIGKILL)
            time.sleep(0.2)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, stdout
    assert proc.returncode == 1, stdout  # "nofile" failed

    rows = read_manifest(out / "manifest.jsonl")
    long_rows = [r for r in rows if r["job"] == "long"]
    assert [r["status"] for r in long_rows] == ["running", "crashed", "running", "done"], long_rows
    assert long_rows[1]["worker"] == killed and "died mid-job" in long_rows[1]["error"]
    assert long_rows[2]["worker"] != killed and long_rows[2]["attempt"] == 2
    assert long_rows[3]["seconds"] > 1.9  # the whole clip (the budget rounded to whole patches), not a partial one
    sound, rate = media.load_audio(out / "long.mp4")
    assert abs(sound.shape[-1] / rate - long_rows[3]["seconds"]) < 0.1
    for job in ("s1", "s2", "s3", "video", "long"):  # each good job done exactly once
        assert count(out, job, "done") == 1, job
    assert last_rows(out)["nofile"]["status"] == "failed"
    assert not list(out.glob(".*partial*"))
    assert "1 worker crash recovered" in stdout and "6 jobs: 5 done" in stdout

    # Resume on Ray: a new job is added and one output removed; only those two run.
    (out / "s2.wav").unlink()
    write_jobs(jobs_file, [*jobs_file.read_text().splitlines(), json.dumps(speech("s4"))])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "7 jobs: 2 done, 4 already complete, 1 failed" in proc.stdout
    assert count(out, "s2", "done") == 2 and count(out, "s4", "done") == 1
    assert count(out, "s1", "running") == 1 and count(out, "long", "done") == 1
