"""Benchmark parts for long clips and streaming (``--parts long,stream``), kept apart from the stage parts.

- ``long``: peak memory and wall time of a ``--long-seconds`` clip (default 60) and of a
  ``--long-short-seconds`` clip (default 4), each in a fresh process, written
  to an MP4 through the streaming path (generation → rendering → encoder, chunk by chunk:
  ``pipeline.stream_talk`` + ``stream_to_mp4``, what the command line runs), with and without overlap;
  and the path of the ComfyUI "Render Video File" node (``pipeline.render_to_mp4`` from motion codes
  and speech latents). The growth of the peak per minute of video is derived from the two lengths.
  On a CPU the LIA-X arithmetic is replaced by a stand-in of negligible cost (``--long-renderer
  standin``, the default there): the debug LIA-X renders about 2 frames/s on a laptop-class CPU,
  so a 60 s clip (1500 frames) would take over 12 minutes; its memory is per batch (the ``render``
  part measures it) and does not depend on the clip's length. Everything else is the production
  path. On a GPU the real LIA-X renders (``--long-renderer liax``, the default there).
- ``stream``: time to first audio, time to first frame and the steady-state real-time factor of
  ``pipeline.stream_talk`` with the real LIA-X of the size set (``--stream-seconds``), with and without
  overlap.

Weights are random; the text is several sentences long and the stop head is off (threshold 1), so
the clip runs to its length.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import torch

log = logging.getLogger(__name__)

TEXT = " ".join(
    f"This is sentence number {i} of a long talk, said at an even pace with a few pauses in between." for i in range(40)
)


class StandInRenderer(torch.nn.Module):
    """LIA-X's render interface at negligible cost: each frame a colour field computed from its motion row."""

    def __init__(self, motion_dim: int = 40):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(motion_dim, 3 * 8 * 8)

    def render(self, z, feats, alpha, check=None):
        if check is not None:
            check()
        x = torch.tanh(self.proj(alpha.float())).view(-1, 3, 8, 8)
        return torch.nn.functional.interpolate(x, size=512, mode="nearest")


def _setup(size: str, device, dtype, seed: int, renderer: str) -> dict[str, Any]:
    from bench.bench import _liax, _talker, _vae
    from talker_core import pipeline as P
    from talker_core.types import SPEAKER_DIM, SpeakerReference, SpeechLatents
    from talker_core.weights import loaders
    from talker_core.weights.debug_models import write_debug_models

    folder = tempfile.mkdtemp(prefix="talker_bench_models_")
    write_debug_models(folder, seed=seed)
    tokenizer = loaders.load_talker(loaders.find_models(folder)["talker"]).tokenizer  # any tokenizer does
    model = _talker(size, device, dtype, seed)
    bundle = loaders.TalkerBundle(model=model, tokenizer=tokenizer, config=model.config, source=folder)
    vae = _vae(size, device, torch.float32, seed).fold_weight_norm()
    liax = _liax(0.125 if size == "debug" else 2, device, dtype, seed)
    g = torch.Generator().manual_seed(seed)
    face = P.encode_face(liax, torch.rand(512, 512, 3, generator=g))
    if renderer == "standin":
        liax = StandInRenderer().to(device)
    voice = SpeakerReference(torch.randn(SPEAKER_DIM, generator=g), SpeechLatents(torch.zeros(0, 32)))
    return {"bundle": bundle, "vae": vae, "liax": liax, "face": face, "voice": voice}


def _request(seconds: float):
    from talker_core import pipeline as P

    return P.TalkRequest(text=TEXT, seed=1, max_seconds=seconds, stop_threshold=1.0, max_prompt_tokens=1000)


def _stream_file(s: dict, seconds: float, overlap: bool, device, args, out: str) -> dict:
    from bench.bench import _Peak
    from talker_core import pipeline as P

    with _Peak(device) as peak:
        t0 = time.perf_counter()
        stream = P.stream_talk(
            s["bundle"],
            s["vae"],
            s["liax"],
            _request(seconds),
            voice=s["voice"],
            face=s["face"],
            render_chunk=args.frames,
            overlap=overlap,
        )
        written = P.stream_to_mp4(stream, out, preset=args.long_preset)
        wall = time.perf_counter() - t0
    t = written.times
    res = {
        "clip_seconds": round(written.seconds, 2),
        "overlap": overlap,
        "wall_s": round(wall, 2),
        "rtf": round(wall / max(written.seconds, 1e-9), 3),
        "first_audio_s": round(t.first_audio, 3),
        "first_frame_s": round(t.first_frame, 3),
        "generation_done_s": round(t.generation_done, 2),
        "file_mib": round(os.path.getsize(out) / 2**20, 2),
        **peak.value(),
    }
    if device.type == "cuda":
        res["peak_rss_mib_process"] = round((_rss_hwm() or 0) / 1024, 1)
    return res


def _rss_hwm():
    from bench.bench import _proc_status

    return _proc_status("VmHWM")


def _node_file(s: dict, seconds: float, device, args, out: str) -> dict:
    """The ComfyUI Render Video File path: motion codes + speech latents → MP4."""
    from bench.bench import _Peak
    from talker_core import pipeline as P
    from talker_core.types import FPS, MotionCodes, SpeechLatents

    n = int(round(seconds * FPS))
    g = torch.Generator().manual_seed(7)
    motion, speech = MotionCodes(torch.randn(n, 40, generator=g) * 0.3), SpeechLatents(torch.randn(n, 32, generator=g))
    with _Peak(device) as peak:
        t0 = time.perf_counter()
        P.render_to_mp4(
            s["liax"], s["face"], motion, out, vae=s["vae"], speech=speech, chunk=args.frames, preset=args.long_preset
        )
        wall = time.perf_counter() - t0
    return {"clip_seconds": seconds, "wall_s": round(wall, 2), "rtf": round(wall / seconds, 3), **peak.value()}


def _peak_of(r: dict):
    return r.get("peak_gpu_mib") if r.get("peak_gpu_mib") is not None else r.get("peak_rss_mib")


def _child(spec: dict) -> dict:
    """One long-part run in this (fresh) process: its peak resident set is the run's alone."""
    import argparse

    from bench.bench import _resolve_device

    args = argparse.Namespace(**spec["args"])
    device = _resolve_device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    s = _setup(spec["size"], device, dtype, args.seed, spec["renderer"])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "clip.mp4")
        if spec["what"] == "node":
            return _node_file(s, spec["seconds"], device, args, out)
        return _stream_file(s, spec["seconds"], spec["overlap"], device, args, out)


def _run_child(spec: dict) -> dict:
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import json, sys; from bench.stream_bench import _child; print(json.dumps(_child(json.loads(sys.argv[1]))))"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], cwd=root, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"long-clip run {spec['what']} {spec['seconds']} s failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_long(size: str, device, dtype, args) -> dict:
    """Each run in a fresh process, so that its peak resident set is its own (heap kept from an
    earlier run would otherwise count)."""
    renderer = args.long_renderer if args.long_renderer != "auto" else ("liax" if device.type == "cuda" else "standin")
    short, long = float(args.long_short_seconds), float(args.long_seconds)
    plain = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    base = {"size": size, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "renderer": renderer}
    base["args"] = plain
    res: dict[str, Any] = {"renderer": renderer, "preset": args.long_preset, "render_chunk": args.frames}
    modes = [m.strip() for m in args.long_modes.split(",") if m.strip()]
    table = {"sequential": ("stream", False), "overlap": ("stream", True), "node": ("node", False)}
    for mode in modes:
        if mode not in table:
            raise ValueError(f"--long-modes: unknown mode {mode!r} (sequential, overlap, node)")
        what, overlap = table[mode]
        key = "node_render_to_mp4" if what == "node" else mode
        runs = [_run_child({**base, "what": what, "overlap": overlap, "seconds": sec}) for sec in (short, long)]
        a, b = _peak_of(runs[0]), _peak_of(runs[1])
        span = (runs[1]["clip_seconds"] - runs[0]["clip_seconds"]) / 60
        res[key] = {"short": runs[0], "long": runs[1], "peak_growth_mib_per_minute": round((b - a) / span, 1)}
        log.info("long clip (%s): %s", key, res[key])
    return res


def bench_stream(size: str, device, dtype, args) -> dict:
    s = _setup(size, device, dtype, args.seed, "liax")
    seconds = args.stream_seconds or (10.0 if device.type == "cuda" else 2.0)
    res: dict[str, Any] = {"clip_seconds": seconds, "render_chunk": args.frames}
    with tempfile.TemporaryDirectory() as tmp:
        for overlap in (False, True):
            r = _stream_file(s, seconds, overlap, device, args, os.path.join(tmp, f"s{int(overlap)}.mp4"))
            steady = (r["wall_s"] - r["first_frame_s"]) / max(r["clip_seconds"] - 1 / 25, 1e-9)
            r["steady_rtf"] = round(steady, 3)
            res["overlap" if overlap else "sequential"] = r
            log.info("stream (%s): %s", "overlap" if overlap else "sequential", r)
    return res


def table_rows(size: str, r: dict) -> list[tuple[str, str, str]]:
    rows = []
    lg = r.get("long")
    if lg:
        for key in [k for k in ("sequential", "overlap") if k in lg]:
            x = lg[key]
            rows.append(
                (
                    size,
                    f"long clip {key} ({lg['renderer']} renderer)",
                    f"{x['short']['clip_seconds']:g} s: {_peak_of(x['short']):.0f} MiB {x['short']['wall_s']} s; "
                    f"{x['long']['clip_seconds']:g} s: {_peak_of(x['long']):.0f} MiB {x['long']['wall_s']} s; "
                    f"growth {x['peak_growth_mib_per_minute']} MiB/min",
                )
            )
        x = lg.get("node_render_to_mp4")
        if x is not None:
            rows.append(
                (
                    size,
                    "long clip, Render Video File path",
                    f"{x['short']['clip_seconds']:g} s: {_peak_of(x['short']):.0f} MiB; {x['long']['clip_seconds']:g} s: "
                    f"{_peak_of(x['long']):.0f} MiB; growth {x['peak_growth_mib_per_minute']} MiB/min",
                )
            )
    st = r.get("stream")
    if st:
        for key in ("sequential", "overlap"):
            x = st[key]
            rows.append(
                (
                    size,
                    f"stream {key} ({st['clip_seconds']:g} s)",
                    f"first audio {x['first_audio_s']} s, first frame {x['first_frame_s']} s, "
                    f"steady RTF {x['steady_rtf']}, total RTF {x['rtf']}",
                )
            )
    return rows
