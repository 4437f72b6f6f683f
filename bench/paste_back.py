"""Paste-back memory and speed: peak resident memory and seconds for clips of growing length.

    python -m bench.paste_back                       # 640×480 photo, 50 / 200 / 400 frames
    python -m bench.paste_back --background video    # into footage of that length (decoded as needed)
    python -m bench.paste_back --size 1920x1080 --frames 50,200

Each length runs in a fresh process (so the peaks do not mix); it composites rendered 512×512
frames (made on the fly, 8 at a time, as the renderer hands them over) into the background with the
:class:`~talker_core.media.paste.Compositor` and writes them into the incremental MP4 writer, the
path ``generate --paste-back`` and Paste Back Video File take, then prints peak RSS, peak anonymous
memory (``RssAnon``, sampled every 10 ms: the memory the process really owns) and wall time. The
figures must stay level while the frame count grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _footage(path: Path, width: int, height: int, frames: int) -> Path:
    import torch

    from talker_core.media import Mp4Writer

    writer = Mp4Writer(path, 25, preset="ultrafast")
    for start in range(0, frames, 8):
        n = min(8, frames - start)
        writer.write_frames((torch.rand(1, height, width, 3) * 255).to(torch.uint8).expand(n, -1, -1, -1))
    return writer.close()


def _one(width: int, height: int, frames: int, kind: str) -> dict:
    import torch

    from talker_core.media.paste import Compositor
    from talker_core.pipeline.compose import write_batches_to_mp4
    from talker_core.types import FaceCrop

    side = min(width, height) // 2
    crop = FaceCrop((width - side) // 2, (height - side) // 3, side, width, height, "detected")
    tmp = tempfile.TemporaryDirectory()
    if kind == "video":
        background = str(_footage(Path(tmp.name) / "footage.mp4", width, height, frames))
    else:
        background = (torch.rand(height, width, 3) * 255).to(torch.uint8)
    compose = Compositor(background, crop)
    batches = (
        compose((torch.rand(min(8, frames - s), 512, 512, 3) * 255).to(torch.uint8)) for s in range(0, frames, 8)
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    anon = [_rss_anon_mb()]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            anon.append(_rss_anon_mb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with tmp:
        out = write_batches_to_mp4(batches, frames, Path(tmp.name) / "b.mp4", preset="ultrafast")
        size = out.stat().st_size
    compose.close()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frame_mb = width * height * 3 / 2**20
    return {
        "frames": frames,
        "size": f"{width}x{height}",
        "background": kind,
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(rss0, 1),
        "peak_anon_mb": round(max(anon), 1),
        "all_frames_would_be_mb": round(frames * frame_mb, 1),
        "wall_s": round(wall, 2),
        "ms_per_frame": round(1000 * wall / frames, 1),
        "mp4_bytes": size,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.paste_back", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="640x480", help="background WxH (default 640x480)")
    p.add_argument("--frames", default="50,200,400", help="comma-separated clip lengths")
    p.add_argument("--background", choices=("image", "video"), default="image", help="a photo or footage (image)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    counts = [int(v) for v in args.frames.split(",")]
    if args.one:
        print(json.dumps(_one(width, height, counts[0], args.background)))
        return 0
    print(f"{'frames':>7} {'size':>10} {'peak RSS MB':>12} {'peak anon MB':>13} {'all frames MB':>14} {'ms/frame':>9}")
    for n in counts:
        cmd = [sys.executable, "-m", "bench.paste_back", "--one", "--size", args.size, "--frames", str(n)]
        cmd += ["--background", args.background]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(
            f"{n:>7} {r['size']:>10} {r['peak_rss_mb']:>12} {r['peak_anon_mb']:>13} "
            f"{r['all_frames_would_be_mb']:>14} {r['ms_per_frame']:>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
