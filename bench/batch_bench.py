"""Jobs per minute of ``python -m talker_core batch`` with the debug models on this machine.

    python -m bench.batch_bench [--jobs 6] [--seconds 0.32] [--kind speech|t2av] [--ray-workers 1,2]

Writes the debug models and N jobs into a temporary folder, runs the batch locally (one
process) and, when Ray is installed, on a local Ray cluster with each worker count given;
prints wall time, jobs per minute (model loading included, as a user sees it) and the load
average, and with ``--json FILE`` writes them. Each run is the real command in a subprocess.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _inputs(d: Path, n: int, seconds: float, kind: str) -> Path:
    import torch

    from talker_core import media
    from talker_core.weights.debug_models import write_debug_models

    write_debug_models(d / "models", seed=0)
    sr = 22050
    t = torch.arange(int(sr * 2.0)) / sr
    media.write_wav(d / "voice.wav", (0.3 * torch.sin(2 * math.pi * 220 * t))[None], sr)
    from PIL import Image

    Image.fromarray((torch.rand(256, 256, 3) * 255).to(torch.uint8).numpy()).save(d / "face.png")
    lines = []
    for i in range(n):
        job = {
            "name": f"j{i}",
            "text": f"Clip number {i}.",
            "ref_audio": "voice.wav",
            "max_seconds": seconds,
            "seed": i,
        }
        job.update({"mode": "speech"} if kind == "speech" else {"ref_image": "face.png"})
        lines.append(json.dumps(job))
    (d / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    return d / "jobs.jsonl"


def _run(jobs: Path, out: Path, models: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "talker_core", "batch", str(jobs), "--out", str(out), "--models", str(models)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--quiet", *extra], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"batch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    done = int(re.search(r"(\d+) done", proc.stdout).group(1))
    return {
        "wall_s": round(wall, 1),
        "jobs": done,
        "jobs_per_min": round(60 * done / wall, 2),
        "load": [load0, os.getloadavg()[0]],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=0.32, help="max_seconds of each job")
    ap.add_argument("--kind", choices=["speech", "t2av"], default="speech")
    ap.add_argument("--ray-workers", default="1,2", help="worker counts for the Ray runs ('' for none)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    results = {
        "jobs": args.jobs,
        "seconds_per_job": args.seconds,
        "kind": args.kind,
        "cpus": os.cpu_count(),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        jobs = _inputs(d, args.jobs, args.seconds, args.kind)
        runs = [("local", [])]
        if importlib.util.find_spec("ray") is not None:
            runs += [(f"ray x{w}", ["--ray", "auto", "--workers", w]) for w in args.ray_workers.split(",") if w]
        for name, extra in runs:
            r = _run(jobs, d / name.replace(" ", "_"), d / "models", extra)
            results["runs"][name] = r
            print(
                f"{name:>8}: {r['jobs']} jobs in {r['wall_s']:.1f} s = {r['jobs_per_min']:.2f} jobs/min (load {r['load'][0]:.1f}->{r['load'][1]:.1f})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
