"""Peak memory of the long-form workflow run by ComfyUI's own executor, for clips of several lengths.

Run with the Python of a ComfyUI venv and ``COMFYUI_DIR`` set (``eval "$(bash scripts/get_comfyui.sh)"``)::

    "$COMFYUI_PYTHON" -m bench.comfy_long --lengths 20,120,600 --json bench/results/cpu_comfy_long.json

Each length runs in a fresh process: the pack is loaded by ComfyUI as a custom node
(``tests/comfy_host.py``, the loader the node tests use), the debug models and the example inputs
are written into a temporary base folder, and ``workflows_api/2 Long video to a file.json`` is
executed by ``execution.PromptExecutor`` (the server's worker), Render Video File writing the MP4.
To make ten minutes of video feasible on a CPU, the settings are the fastest that keep the graph the
same: 2 flow steps, guidance off, the stop head off (the clip runs to ``max_seconds``, in 30 s
segments, the template's text repeated so there is enough of it), x264 ``ultrafast``, and LIA-X
replaced by the tests' stand-in of negligible cost (``synthetic.FastLiaX``; the real renderer's
memory is per batch, not per clip). The process's resident memory is sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = "2 Long video to a file"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares MiB per minute of video over the second half of (video seconds, RSS MiB) samples."""
    pts = samples[len(samples) // 2 :]
    if len(pts) < 3:
        return float("nan")
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    var = sum((x - mx) ** 2 for x, _ in pts)
    return 60 * sum((x - mx) * (y - my) for x, y in pts) / var if var else float("nan")


def child(seconds: float) -> dict:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import comfy_host
    import synthetic

    import talker_core.weights.loaders
    from talker_core.weights.debug_models import write_debug_models

    comfy_host.require()
    base = Path(tempfile.mkdtemp(prefix="talker_comfy_long_"))
    comfy_host.use_base(base)
    write_debug_models(base / "models" / "talker_t2av")
    synthetic.write_inputs(base / "input")
    talker_core.weights.loaders.load_liax = lambda path, device, dtype: synthetic.FastLiaX()  # type: ignore[assignment]

    api = json.loads((ROOT / "workflows_api" / f"{WORKFLOW}.json").read_text())
    ui = json.loads((ROOT / "example_workflows" / f"{WORKFLOW}.json").read_text())
    by_type = {v["class_type"]: k for k, v in api.items()}
    sampler = api[by_type["TalkerSampler"]]["inputs"]
    repeats = max(1, int(seconds // 45) + 1)  # enough text: a segment may end before 30 s
    sampler.update(
        text=" ".join([sampler["text"]] * repeats), steps=2, cfg=1.0, stop_threshold=1.0, max_seconds=float(seconds)
    )
    api[by_type["TalkerRenderVideoFile"]]["inputs"]["preset"] = "ultrafast"

    samples: list[tuple[float, float]] = []  # (wall s, RSS MiB)
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(0.5):
            samples.append((time.monotonic() - t0, _rss_mib()))

    rss_before = _rss_mib()
    thread = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    thread.start()
    comfy_host.execute_prompt(api, {"extra_pnginfo": {"workflow": ui}})
    wall = time.monotonic() - t0
    done.set()
    thread.join()
    videos = sorted((base / "output").rglob("*.mp4"))
    import av

    with av.open(str(videos[-1])) as f:
        frames = f.streams.video[0].frames or sum(1 for _ in f.decode(video=0))
    # the render stage is the second half of the run: map wall time to video time there linearly
    render = [(t, r) for t, r in samples if t > wall / 2]
    clip = frames / 25
    scaled = [((t - wall / 2) / (wall / 2) * clip, r) for t, r in render]
    return {
        "clip_seconds": round(clip, 2),
        "frames": frames,
        "wall_s": round(wall, 1),
        "rss_before_run_mib": round(rss_before, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_sampled_mib": round(max(r for _, r in samples), 1) if samples else None,
        "slope_mib_per_min_2nd_half": round(_slope(scaled), 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="20,120", help="clip lengths in seconds, comma-separated")
    ap.add_argument("--json", dest="json_path", help="write the results here")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print("RESULT " + json.dumps(child(args.child)), flush=True)
        return 0
    if not os.environ.get("COMFYUI_DIR"):
        print('set COMFYUI_DIR (eval "$(bash scripts/get_comfyui.sh)") and run with $COMFYUI_PYTHON', file=sys.stderr)
        return 2
    results = {"load_avg_start": os.getloadavg(), "runs": []}
    for seconds in (float(s) for s in args.lengths.split(",")):
        run = subprocess.run(
            [sys.executable, "-m", "bench.comfy_long", "--child", str(seconds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
        if run.returncode or line is None:
            print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
            return 1
        res = json.loads(line[len("RESULT ") :])
        results["runs"].append(res)
        print(
            f"{res['clip_seconds']:7.1f} s clip: peak RSS {res['peak_rss_mib']} MiB (before the run "
            f"{res['rss_before_run_mib']} MiB), slope {res['slope_mib_per_min_2nd_half']} MiB/min, wall {res['wall_s']} s",
            flush=True,
        )
    results["load_avg_end"] = os.getloadavg()
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
