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

import contextlib
import logging
import os
import tempfile
import time
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)

TEXT = " ".join(  # enough for 10 minutes: about 3 sentences a 30 s segment, with the stop head off
    f"This is sentence number {i} of a long talk, said at an even pace with a few pauses in between."
    for i in range(100)
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


def _request(seconds: float, steps: int = 10, cfg: float = 2.0):
    from talker_core import pipeline as P

    return P.TalkRequest(
        text=TEXT, seed=1, max_seconds=seconds, stop_threshold=1.0, max_prompt_tokens=1000, steps=steps, cfg=cfg
    )


def _stream_file(s: dict, seconds: float, overlap: bool, device, args, out: str, hooks=None) -> dict:
    from bench.bench import _Peak
    from talker_core import pipeline as P

    steps, cfg = getattr(args, "long_steps", 10), getattr(args, "long_cfg", 2.0)
    with _Peak(device) as peak:
        t0 = time.perf_counter()
        stream = P.stream_talk(
            s["bundle"],
            s["vae"],
            s["liax"],
            _request(seconds, steps, cfg),
            voice=s["voice"],
            face=s["face"],
            render_chunk=args.frames,
            overlap=overlap,
            hooks=hooks,
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


def _node_file(s: dict, seconds: float, device, args, out: str, hooks=None) -> dict:
    """The ComfyUI Render Video File path: motion codes + speech latents → MP4 (``render_to_mp4``, which
    the node's ``execute`` calls; the node itself needs ComfyUI, so the bench calls the function)."""
    from bench.bench import _Peak
    from talker_core import pipeline as P
    from talker_core.types import FPS, MotionCodes, SpeechLatents

    n = int(round(seconds * FPS))
    g = torch.Generator().manual_seed(7)
    motion, speech = MotionCodes(torch.randn(n, 40, generator=g) * 0.3), SpeechLatents(torch.randn(n, 32, generator=g))
    with _Peak(device) as peak:
        t0 = time.perf_counter()
        P.render_to_mp4(
            s["liax"],
            s["face"],
            motion,
            out,
            vae=s["vae"],
            speech=speech,
            chunk=args.frames,
            preset=args.long_preset,
            hooks=hooks,
        )
        wall = time.perf_counter() - t0
    return {"clip_seconds": seconds, "wall_s": round(wall, 2), "rtf": round(wall / seconds, 3), **peak.value()}


def _generate_only(s: dict, seconds: float, device, args, probe) -> dict:
    """Generation alone (``pipeline.generate`` with ``on_frames``, as the stream runs it), no rendering:
    what the latents and the backbone's segments hold as the clip gets longer."""
    from bench.bench import _Peak
    from talker_core import pipeline as P

    done = [0]

    def on_frames(speech, motion) -> None:
        done[0] += speech.shape[0]
        probe.progress(done[0], probe.total, "render")  # the frames generated, in the probe's terms

    with _Peak(device) as peak:
        t0 = time.perf_counter()
        res = P.generate(
            s["bundle"],
            _request(seconds, args.long_steps, args.long_cfg),
            voice=s["voice"],
            face=s["face"],
            on_frames=on_frames,
        )
        wall = time.perf_counter() - t0
    clip = res.speech.frames / 25
    return {"clip_seconds": round(clip, 2), "wall_s": round(wall, 2), "rtf": round(wall / clip, 3), **peak.value()}


def _cli_file(seconds: float, overlap: bool, args, out: str, workdir: str) -> dict:
    """``python -m talker_core generate`` as a user runs it (its parser, checks, model loading from a folder,
    reference encoding, ``generate_one``), on the debug model set; with the stand-in renderer, LIA-X's
    ``render`` is replaced by the stand-in's (its encoder still encodes the face)."""
    from talker_core.cli import _build_parser
    from talker_core.media import write_wav
    from talker_core.models.liax import LiaXGenerator
    from talker_core.types import SAMPLE_RATE
    from talker_core.weights.debug_models import write_debug_models

    models = os.path.join(workdir, "models")
    write_debug_models(models, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    voice, face = os.path.join(workdir, "voice.wav"), os.path.join(workdir, "face.png")
    t = torch.arange(2 * SAMPLE_RATE) / SAMPLE_RATE  # 2 s of a 220 Hz tone as the reference voice
    write_wav(voice, 0.3 * torch.sin(2 * torch.pi * 220 * t)[None], SAMPLE_RATE)
    from PIL import Image

    Image.fromarray((torch.rand(512, 512, 3, generator=g) * 255).to(torch.uint8).numpy()).save(face)
    if args.renderer == "standin":
        standin = StandInRenderer()
        LiaXGenerator.render = lambda self, z, feats, alpha, check=None: standin.render(z, feats, alpha, check)
    argv = ["generate", "--models", models, "--text", TEXT, "--ref-audio", voice, "--ref-image", face]
    argv += ["--max-seconds", str(seconds), "--stop-threshold", "1", "--steps", str(args.long_steps)]
    argv += ["--cfg", str(args.long_cfg), "--preset", args.long_preset, "--render-chunk", str(args.frames)]
    argv += ["--overlap" if overlap else "--no-overlap", "--quiet", "--out", out]
    parsed = _build_parser("generate").parse_args(argv)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # its result line
        t0 = time.perf_counter()
        parsed._run(parsed)
        wall = time.perf_counter() - t0
    from talker_core.media import probe_media

    video = next(x for x in probe_media(out)["streams"] if x["type"] == "video")
    clip = video["frames"] / 25
    return {
        "clip_seconds": round(clip, 2),
        "overlap": overlap,
        "wall_s": round(wall, 2),
        "rtf": round(wall / max(clip, 1e-9), 3),
        "file_mib": round(os.path.getsize(out) / 2**20, 2),
    }


def _peak_of(r: dict):
    return r.get("peak_gpu_mib") if r.get("peak_gpu_mib") is not None else r.get("peak_rss_mib")


class _Probe:
    """What the process holds while a clip is made: resident set sampled against the frames rendered so
    far (from the progress reports), the live tensors at a quarter of the clip and at its end, and (with
    ``trim``) ``malloc_trim(0)`` before each sample, so that heap the allocator keeps but does not use
    is returned and only memory really held remains."""

    def __init__(self, total_frames: int, trim: bool, every: float = 0.5):
        import ctypes
        import threading

        self.total, self.every = total_frames, every
        self.trim = ctypes.CDLL("libc.so.6").malloc_trim if trim else None
        self.done = 0
        self.samples: list[tuple[int, float]] = []  # (frames rendered, RSS MiB)
        self.tensors: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-probe", daemon=True)

    def progress(self, done: int, total: int, stage: str, preview=None) -> None:
        if stage != "render":
            return
        self.done = done
        if "quarter" not in self.tensors and done >= self.total // 4:
            self.tensors["quarter"] = _live_tensor_mib()
        if done >= self.total and "end" not in self.tensors:
            self.tensors["end"] = _live_tensor_mib()

    def _loop(self) -> None:
        from bench.bench import _proc_status

        while not self._stop.wait(self.every):
            if self.trim is not None:
                self.trim(0)
            self.samples.append((self.done, (_proc_status("VmRSS") or 0) / 1024))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def summary(self) -> dict:
        """RSS at the middle and end of rendering, and its least-squares slope over the second half of
        the clip, in MiB per minute of video (within one run: no process-to-process noise)."""
        half = [(f, r) for f, r in self.samples if self.total // 2 <= f < self.total]
        out: dict[str, Any] = {"rss_samples": len(self.samples)}
        if self.samples:
            top = max(self.samples, key=lambda x: x[1])
            out["rss_max_sampled_mib"], out["rss_max_at_frame"] = round(top[1], 1), top[0]
        if len(half) >= 4:
            xs = [f / 25 / 60 for f, _ in half]
            ys = [r for _, r in half]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            var = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var > 0 else 0.0
            out.update(
                rss_mid_mib=round(ys[0], 1),
                rss_end_mib=round(ys[-1], 1),
                rss_max_second_half_mib=round(max(ys), 1),
                rss_slope_second_half_mib_per_min=round(slope, 1),
            )
        out["live_tensor_mib"] = {k: round(v, 2) for k, v in self.tensors.items()}
        step = max(1, len(self.samples) // 24)  # the curve, thinned: [frames rendered, RSS MiB]
        out["rss_curve"] = [[f, round(r)] for f, r in self.samples[::step]]
        return out


def _live_tensor_mib() -> float:
    """Bytes of every tensor storage the Python heap can reach (each storage once), in MiB."""
    import gc

    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                st = obj.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
        except Exception:  # noqa: BLE001 - tensors without storage (meta, sparse)
            continue
    return sum(seen.values()) / 2**20


def _child(spec: dict) -> dict:
    """One long-part run in this (fresh) process: its peak resident set is the run's alone."""
    import argparse

    from bench.bench import _proc_status, _resolve_device
    from talker_core.pipeline import Hooks
    from talker_core.types import FPS

    args = argparse.Namespace(**spec["args"])
    args.renderer = spec["renderer"]
    device = _resolve_device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    seconds = spec["seconds"]
    probe = _Probe(int(round(seconds * FPS)), trim=spec.get("malloc") == "trim")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "clip.mp4")
        if spec["what"] == "cli":
            import talker_core.cli.generate as G

            G._Progress = lambda quiet: probe.progress  # the CLI's progress display, read by the probe
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak from here on: the whole command, model loading included
            with probe:
                res = _cli_file(seconds, spec["overlap"], args, out, tmp)
            res["peak_rss_mib"] = round((_proc_status("VmHWM") or 0) / 1024, 1)
        else:
            s = _setup(spec["size"], device, dtype, args.seed, spec["renderer"])
            hooks = Hooks(progress=probe.progress)
            with probe:
                if spec["what"] == "node":
                    res = _node_file(s, seconds, device, args, out, hooks)
                elif spec["what"] == "generate":
                    res = _generate_only(s, seconds, device, args, probe)
                else:
                    res = _stream_file(s, seconds, spec["overlap"], device, args, out, hooks)
    res.update(probe.summary())
    res["malloc"] = spec.get("malloc", "default")
    return res


def _run_child(spec: dict) -> dict:
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import json, sys; from bench.stream_bench import _child; print(json.dumps(_child(json.loads(sys.argv[1]))))"
    env = dict(os.environ)
    if spec.get("malloc") == "trim":
        env["MALLOC_ARENA_MAX"] = "2"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], cwd=root, capture_output=True, text=True, timeout=7200, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"long-clip run {spec['what']} {spec['seconds']} s failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fit_growth(runs: list[dict]) -> Optional[float]:
    """Least-squares slope of the peak over the clip length, MiB per minute of video."""
    pts = [(r["clip_seconds"] / 60, _peak_of(r)) for r in runs if _peak_of(r) is not None]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / var, 1) if var > 0 else None


MODES = {
    "cli": ("cli", False),
    "cli_overlap": ("cli", True),
    "sequential": ("stream", False),
    "overlap": ("stream", True),
    "node": ("node", False),
    "generate": ("generate", False),
}


def kv_cache_sizes() -> dict:
    """The backbone's key/value cache: bytes per token (one token per 4-frame patch) at the debug and the
    release sizes, what a minute would add if one cache spanned it, and the bound per segment (the cache
    is started anew for every long-form segment of at most 30 s)."""
    from talker_core.fast.program import _ModelResources
    from talker_core.models.talker import TalkerConfig

    out = {}
    bucket = _ModelResources.CACHE_BUCKET
    for name, cfg, nbytes in (("debug", TalkerConfig.tiny(), 4), ("release", TalkerConfig(), 2)):
        llm = cfg.llm
        per_token = 2 * llm.num_hidden_layers * llm.num_key_value_heads * llm.head_dim * nbytes
        per_minute = per_token * 60 * cfg.fps / cfg.patch_size
        out[name] = {
            "dtype": "float32" if nbytes == 4 else "bfloat16",
            "bytes_per_token": per_token,
            "mib_per_minute_if_unbounded": round(per_minute / 2**20, 2),
            "segment_patches_max": cfg.max_patches,
            "static_cache_bucket_positions": bucket,
        }
    return out


def bench_long(size: str, device, dtype, args) -> dict:
    """Each run in a fresh process, so that its peak resident set is its own (heap kept from an
    earlier run would otherwise count)."""
    renderer = args.long_renderer if args.long_renderer != "auto" else ("liax" if device.type == "cuda" else "standin")
    if args.long_lengths:
        lengths = [float(x) for x in args.long_lengths.split(",") if x.strip()]
    else:
        lengths = [float(args.long_short_seconds), float(args.long_seconds)]
    plain = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    base = {"size": size, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "renderer": renderer}
    base["args"] = plain
    base["malloc"] = args.long_malloc
    res: dict[str, Any] = {
        "renderer": renderer,
        "preset": args.long_preset,
        "render_chunk": args.frames,
        "steps": args.long_steps,
        "cfg": args.long_cfg,
        "malloc": args.long_malloc,
        "kv_cache": kv_cache_sizes(),
    }
    modes = [m.strip() for m in args.long_modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"--long-modes: unknown mode {mode!r} ({', '.join(MODES)})")
        what, overlap = MODES[mode]
        key = "node_render_to_mp4" if what == "node" else mode
        runs = []
        for sec in lengths:
            runs.append(_run_child({**base, "what": what, "overlap": overlap, "seconds": sec}))
            log.info("long clip (%s, %g s): %s", key, sec, runs[-1])
        res[key] = {"runs": runs, "peak_growth_mib_per_minute": _fit_growth(runs)}
        log.info("long clip (%s): growth %s MiB/min", key, res[key]["peak_growth_mib_per_minute"])
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
        for key in [k for k in (*MODES, "node_render_to_mp4") if k in lg and isinstance(lg[k], dict)]:
            x = lg[key]
            parts = [
                f"{run['clip_seconds']:g} s: {_peak_of(run):.0f} MiB, {run['wall_s']} s"
                + (
                    f", slope {run['rss_slope_second_half_mib_per_min']} MiB/min"
                    if "rss_slope_second_half_mib_per_min" in run
                    else ""
                )
                for run in x["runs"]
            ]
            rows.append(
                (
                    size,
                    f"long clip {key} ({lg['renderer']} renderer, malloc {lg.get('malloc', 'default')})",
                    "; ".join(parts) + f"; growth {x['peak_growth_mib_per_minute']} MiB/min",
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
