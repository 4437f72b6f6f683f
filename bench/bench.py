"""Benchmark of Talker-T2AV: speed and memory of each stage, random weights, no download.

``python -m bench`` from the repository root (this folder is not part of the installed library). For each
size set (``debug``: the tiny test layouts; ``release``: the published sizes,
Qwen3-0.6B + two 8-layer width-1024 DiT heads, LIA-X scale 2 and 1, the
release WhisperX-VAE decoder) it measures:

- ``heads``: backbone + both flow heads (10 Euler steps, CFG pair,
  CFG-zero-star), patch encoders and stop head, milliseconds per patch (and per
  generated second), for three implementations in the same run, on the same
  weights, patch by patch in turn (so that a change of machine load hits all
  three alike):

  * ``baseline``: a straightforward eager implementation of the reference's
    per-patch loop, written here after ``infer.py`` (``ar_generate_motion_continuation``)
    and ``unified_cfm.py`` (``UnifiedCFM.solve_euler``) of the authors'
    repository: the full causal-LM call (``output_hidden_states``, logits of
    every position, a growing attention mask, transformers' dynamic cache), the
    CFG pair rebuilt from zeros at every Euler step, the estimator recomputing
    every token and the time embeddings at every step (and, like the
    reference, skipped on the steps CFG-zero-star zeroes);
  * ``plain``: this library's plain path (``TalkerGenerator(model)``, the eager step);
  * ``fast``: this library's fast path (``TalkerGenerator(model, step=FastPatchStep())``, what the pipeline runs).

  The three are checked to produce the same first patch (``max_abs_diff``).
- ``render``: LIA-X frames per second, one frame per call (as the reference
  renders) and ``--frames`` frames per call with the fast renderer settings.
- ``audio``: WhisperX-VAE decode speed (seconds of audio per wall second), with
  the published weight norm and folded.
- ``e2e``: wall seconds ÷ generated seconds for a ``--e2e-seconds`` T2AV clip
  (generation, audio decode, rendering). Measured where it fits the time
  budget (debug sizes, CUDA); otherwise estimated from the stage measurements
  (marked ``"estimated": true``).
- ``reference`` (``bench/reference.py``): when ``--reference-dir`` or
  ``$TALKER_REFERENCE_DIR`` names a checkout of the authors' repository, their own
  ``SpeechLLM.generate_speech_motion`` on this library's random weights, whole
  generations alternated with ours and the baseline; per-patch medians and the ratio
  ours/theirs. Also run with ``heads`` when the folder is named; skipped (with a
  message) when it is not.

Peak memory is the process's peak resident set on the CPU (reset per stage
through ``/proc/self/clear_refs`` where the kernel allows it) and
``torch.cuda.max_memory_allocated`` on CUDA. The JSON (``--json``) holds every
number and the environment (device, dtype, torch version, threads, machine
load); a table is printed.

Global torch settings (threads, flush-denormal, cuDNN benchmark) are changed
here only, inside :func:`run`, never at import.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "main"]

PATCH = 4
FPS = 25


# --------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="debug,release",
        help="comma-separated size sets: debug (tiny test layouts), release (published sizes)",
    )
    parser.add_argument(
        "--parts",
        default="heads,render,audio,e2e",
        help="comma-separated parts to measure: heads, render, audio, e2e, long, stream (bench/stream_bench.py), "
        "reference (the authors' own loop, bench/reference.py; also run with heads when --reference-dir "
        "or $TALKER_REFERENCE_DIR names their checkout)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="weights of backbone, heads, LIA-X and codec (the flow sampler stays float32)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave torch's default)")
    parser.add_argument("--patches", type=int, default=3, help="measured patches per implementation")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured patches / calls first")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="prompt length of the heads benchmark")
    parser.add_argument(
        "--variants",
        default="baseline,plain,fast",
        help="heads implementations, measured in turn patch by patch: baseline (reference-style "
        "eager loop), plain (the eager step), fast (FastPatchStep defaults), and the ablations "
        "fast_serial (no parallel heads), fast_unpacked_serial (no prepacked weights either), "
        "fast_pack_backbone (prepacked backbone weights too)",
    )
    parser.add_argument("--frames", type=int, default=2, help="frames per batched render call")
    parser.add_argument(
        "--liax-scales", default="", help="LIA-X scales to render (default: 2,1 for release, 0.125 for debug)"
    )
    parser.add_argument(
        "--render-plain",
        default="auto",
        choices=("auto", "always", "never"),
        help="also render with the reference-style path, one frame per call (auto: except for "
        "scale >= 1 on the CPU, where one such frame takes minutes)",
    )
    parser.add_argument("--audio-seconds", type=float, default=10.0, help="audio decoded by the codec benchmark")
    parser.add_argument(
        "--e2e-seconds",
        type=float,
        default=None,
        help="clip length of the end-to-end run (default 10 s; 2 s when measured on the CPU, "
        "where the debug renderer alone needs about half a second per frame)",
    )
    parser.add_argument(
        "--e2e-measure",
        default="auto",
        choices=("auto", "always", "never"),
        help="measure the end-to-end run (auto: on CUDA and for the debug sizes; "
        "otherwise estimate it from the stages)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-seconds", type=float, default=60.0, help="long part: the long clip's length")
    parser.add_argument("--long-short-seconds", type=float, default=4.0, help="long part: the short clip's length")
    parser.add_argument(
        "--long-renderer",
        default="auto",
        choices=["auto", "liax", "standin"],
        help="long part: real LIA-X or a negligible-cost stand-in (auto: LIA-X on CUDA, stand-in on a CPU)",
    )
    parser.add_argument(
        "--long-lengths",
        default="",
        help="long part: comma-separated clip lengths in seconds, each run in a fresh process (e.g. 20,120,600; "
        "default: --long-short-seconds,--long-seconds); the growth per minute is fitted over all of them",
    )
    parser.add_argument(
        "--long-modes",
        default="cli,cli_overlap,sequential,overlap,node",
        help="long part: which paths to run: cli and cli_overlap (python -m talker_core generate, --no-overlap / "
        "--overlap), sequential and overlap (stream_talk + stream_to_mp4), node (render_to_mp4, the Render Video "
        "File node's path), generate (generation alone, no rendering)",
    )
    parser.add_argument(
        "--long-steps", type=int, default=2, help="long part: flow steps per patch (2: fast; the path is the same)"
    )
    parser.add_argument("--long-cfg", type=float, default=1.0, help="long part: guidance (1.0: off, half the work)")
    parser.add_argument(
        "--long-malloc",
        default="default",
        choices=["default", "trim"],
        help="long part: trim = MALLOC_ARENA_MAX=2 and malloc_trim(0) before every RSS sample (tells heap "
        "fragmentation apart from memory really held)",
    )
    parser.add_argument("--long-preset", default="veryfast", help="long/stream parts: x264 preset of the MP4")
    parser.add_argument("--stream-seconds", type=float, default=0.0, help="stream part: clip length (0: 10 GPU, 2 CPU)")
    from bench import reference

    reference.add_arguments(parser)
    parser.add_argument("--json", dest="json_path", default="", help="write the results to this JSON file")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


# --------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _load() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class _Peak:
    """Peak memory of a stage: CUDA allocator peak, or the process's peak RSS (reset when possible)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset_ok = False

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.reset_ok = True
            except OSError:
                self.reset_ok = False
        return self

    def __exit__(self, *exc):
        return False

    def value(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {"peak_gpu_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}
        rss = _proc_status("VmHWM")
        out = {"peak_rss_mib": round(rss / 1024, 1) if rss else None}
        if not self.reset_ok:
            out["peak_rss_note"] = "process peak since start (could not reset)"
        return out


def _proc_status(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return None


def _env(device: torch.device, dtype: torch.dtype) -> dict:
    env = {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "load_avg_start": _load(),
        "onednn": torch.backends.mkldnn.is_available(),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


# --------------------------------------------------------------------------- reference-style baseline


def _ref_rmsnorm(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(torch.mean(x**2, dim=-1, keepdim=True) + eps) * scale


def _ref_rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """(B, L, N, E) adjacent-pair rotary at positions 0…L−1, rebuilt per call like the reference's table lookup."""
    b, length, n, e = x.shape
    theta = 1.0 / (base ** (torch.arange(0, e, 2, device=x.device) / e))
    ang = torch.outer(torch.arange(length, device=x.device), theta).float()
    w = torch.stack([torch.cos(ang), torch.sin(ang)], dim=-1)[None, :, None].to(x.dtype)  # (1, L, 1, E/2, 2)
    x = x.reshape(b, length, n, e // 2, 2)
    out = torch.stack(
        [w[..., 0] * x[..., 0] - w[..., 1] * x[..., 1], w[..., 0] * x[..., 1] + w[..., 1] * x[..., 0]], dim=-1
    )
    return out.reshape(b, length, n, e)


def _ref_block(block, x: torch.Tensor) -> torch.Tensor:
    """One pre-norm block as the reference's ``llama4nar.Block`` computes it."""
    attn, mlp = block.attn, block.mlp
    b, length, d = x.shape
    h = _ref_rmsnorm(x, block.norm1.scale)
    q, k, v = F.linear(h, attn.qkv.weight).chunk(3, dim=-1)
    q = _ref_rope(q.reshape(b, length, attn.n_head, attn.head_dim)).transpose(1, 2)
    k = _ref_rope(k.reshape(b, length, attn.n_head, attn.head_dim)).transpose(1, 2)
    v = v.reshape(b, length, attn.n_head, attn.head_dim).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, d)
    x = x + F.linear(y, attn.proj.weight)
    h = _ref_rmsnorm(x, block.norm2.scale)
    return x + F.linear(F.silu(F.linear(h, mlp.fc1.weight)) * F.linear(h, mlp.fc2.weight), mlp.proj.weight)


def _ref_sinusoid(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    half = dim // 2
    emb = torch.exp(torch.arange(half, dtype=t.dtype, device=t.device) * -(math.log(10000) / (half - 1)))
    emb = scale * t.unsqueeze(1) * emb.unsqueeze(0)
    return torch.cat((emb.sin(), emb.cos()), dim=-1)


def _ref_estimator(head, x, mu, t, cond, global_cond, dt) -> torch.Tensor:
    """The DiT velocity as the reference's ``VoxCPMLocDiT.forward`` computes it: every token, every call."""

    def lin(m, z):
        return F.linear(z, m.weight, m.bias)

    width = head.config.hidden_size
    wd = head.in_proj.weight.dtype
    x, mu, cond, global_cond = x.to(wd), mu.to(wd), cond.to(wd), global_cond.to(wd)
    xt = lin(head.in_proj, x.transpose(1, 2).contiguous())
    ct = lin(head.cond_proj, cond.transpose(1, 2).contiguous())
    gt = lin(head.global_cond_proj, global_cond.unsqueeze(1).contiguous())
    prefix = ct.shape[1]
    te = lin(head.time_mlp.linear_2, F.silu(lin(head.time_mlp.linear_1, _ref_sinusoid(t, width).to(xt.dtype))))
    de = lin(
        head.delta_time_mlp.linear_2, F.silu(lin(head.delta_time_mlp.linear_1, _ref_sinusoid(dt, width).to(xt.dtype)))
    )
    seq = torch.cat([(mu + te + de).unsqueeze(1), gt, ct, xt], dim=1)
    h = lin(head.decoder.input_proj, seq)
    for block in head.decoder.blocks:
        h = _ref_block(block, h)
    h = _ref_rmsnorm(h, head.decoder.norm.scale)[:, prefix + 2 :]
    return lin(head.out_proj, h).transpose(1, 2).contiguous().float()


def _ref_cfm(head, noise, mu, cond, global_cond, steps, temperature, cfg, sway) -> torch.Tensor:
    """``UnifiedCFM.forward`` + ``solve_euler`` (CFG-zero-star on), written out plainly."""
    x = noise * temperature
    t_span = torch.linspace(1, 0, steps + 1, device=mu.device, dtype=mu.dtype)
    t_span = t_span + sway * (torch.cos(torch.pi / 2 * t_span) - 1 + t_span)
    t, dt = t_span[0], t_span[0] - t_span[1]
    zero_init_steps = max(1, int(len(t_span) * 0.04))
    b, c = x.shape[0], x.shape[1]
    for step in range(1, len(t_span)):
        if step <= zero_init_steps:
            dphi = torch.zeros_like(x)
        else:
            x_in = torch.zeros([2 * b, c, x.size(2)], device=x.device, dtype=x.dtype)
            mu_in = torch.zeros([2 * b, mu.size(1)], device=x.device, dtype=x.dtype)
            t_in = torch.zeros([2 * b], device=x.device, dtype=x.dtype)
            dt_in = torch.zeros([2 * b], device=x.device, dtype=x.dtype)
            cond_in = torch.zeros([2 * b, c, cond.size(2)], device=x.device, dtype=x.dtype)
            gc_in = torch.zeros([2 * b, global_cond.size(1)], device=x.device, dtype=x.dtype)
            x_in[:b], x_in[b:] = x, x
            mu_in[:b] = mu
            t_in[:b], t_in[b:] = t.unsqueeze(0), t.unsqueeze(0)
            cond_in[:b], cond_in[b:] = cond, cond
            gc_in[:b], gc_in[b:] = global_cond, global_cond
            out = _ref_estimator(head, x_in, mu_in, t_in, cond_in, gc_in, dt_in)
            pos, neg = torch.split(out, [b, b], dim=0)
            st = (
                torch.sum(pos.view(b, -1) * neg.view(b, -1), dim=1, keepdim=True)
                / (torch.sum(neg.view(b, -1) ** 2, dim=1, keepdim=True) + 1e-8)
            ).view(b, 1, 1)
            dphi = neg * st + cfg * (pos - neg * st)
        x = x - dt * dphi
        t = t - dt
        if step < len(t_span) - 1:
            dt = t - t_span[step + 1]
    return x


def _ref_patch_encoder(enc, x: torch.Tensor) -> torch.Tensor:
    """``llama4nar.PatchEncoder.forward``: (B, T, P, D) → (B, T, H), every position normalised."""
    b, t, p, _ = x.shape
    x = F.linear(x, enc.input_proj.weight, enc.input_proj.bias)
    x = torch.cat([enc.cls_token.expand(b, t, 1, -1).to(x.dtype), x], dim=2).reshape(b * t, p + 1, -1)
    for block in enc.blocks:
        x = _ref_block(block, x)
    return _ref_rmsnorm(x, enc.norm.scale)[:, 0].reshape(b, t, -1)


class ReferenceLoop:
    """Straightforward eager implementation of the reference's joint T2AV loop (no prefix).

    Per patch: stop head (host read), speech CFM, motion CFM (both in float32 with
    a zero-filled context), patch encoders, one causal-LM step through
    ``model.llm`` with ``output_hidden_states`` and a growing attention mask.
    Noise comes from a CPU generator in the engine's order, so that the first
    patch can be compared with the library's.
    """

    def __init__(
        self, model, prompt_ids, speaker, first_motion, seed: int, steps=10, temperature=0.3, cfg=2.0, sway=1.0
    ):
        self.model = model
        self.steps, self.temperature, self.cfg, self.sway = steps, temperature, cfg, sway
        dev = model.device
        self.rng = torch.Generator().manual_seed(seed)
        self.spk = speaker.reshape(1, -1).to(dev).float()
        self.first = first_motion.reshape(1, -1).to(dev).float()
        self.speech_hist: list[torch.Tensor] = []
        self.motion_hist: list[torch.Tensor] = []
        with torch.no_grad():
            emb = model.llm.get_input_embeddings()(prompt_ids.to(dev))
            self.mask = torch.ones((1, emb.shape[1]), dtype=torch.long, device=dev)
            out = model.llm(inputs_embeds=emb, attention_mask=self.mask, use_cache=True, output_hidden_states=True)
        self.past = out.past_key_values
        self.h = out.hidden_states[-1][:, -1, :]
        self.embed_dtype = emb.dtype

    def _cond(self, hist: list[torch.Tensor], channels: int) -> torch.Tensor:
        cond = torch.zeros((1, channels, PATCH), device=self.h.device, dtype=torch.float32)
        if hist:
            cond[:, :, :] = hist[-1].transpose(0, 1).unsqueeze(0)
        return cond

    @torch.no_grad()
    def patch(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        m = self.model
        logits = m.head_stop(self.h.float().unsqueeze(1))
        p_stop = torch.sigmoid(logits.float())[0, 0].item()
        mu = self.h.float()
        noise_s = torch.randn((1, m.config.speech_dim, PATCH), generator=self.rng).to(mu.device)
        speech = _ref_cfm(
            m.speech_cfm.estimator,
            noise_s,
            mu,
            self._cond(self.speech_hist, m.config.speech_dim),
            self.spk,
            self.steps,
            self.temperature,
            self.cfg,
            self.sway,
        )
        noise_m = torch.randn((1, m.config.motion_dim, PATCH), generator=self.rng).to(mu.device)
        motion = _ref_cfm(
            m.motion_cfm.estimator,
            noise_m,
            mu,
            self._cond(self.motion_hist, m.config.motion_dim),
            self.first,
            self.steps,
            self.temperature,
            self.cfg,
            self.sway,
        )
        self.speech_hist.append(speech[0].transpose(0, 1))
        self.motion_hist.append(motion[0].transpose(0, 1))
        dt = self.embed_dtype
        ps, pm = m.projector_speech.linear1, m.projector_motion.linear1
        e_s = F.linear(speech.transpose(1, 2).to(dt), ps.weight, ps.bias)
        e_m = F.linear(motion.transpose(1, 2).to(dt), pm.weight, pm.bias)
        token = _ref_patch_encoder(m.speech_patch_encoder, e_s.unsqueeze(1)) + _ref_patch_encoder(
            m.motion_patch_encoder, e_m.unsqueeze(1)
        )
        self.mask = torch.cat([self.mask, torch.ones((1, 1), dtype=torch.long, device=self.mask.device)], dim=1)
        out = m.llm(
            inputs_embeds=token,
            attention_mask=self.mask,
            past_key_values=self.past,
            use_cache=True,
            output_hidden_states=True,
        )
        self.past = out.past_key_values
        self.h = out.hidden_states[-1][:, -1, :]
        return speech, motion, p_stop


# --------------------------------------------------------------------------- heads


def _talker(size: str, device, dtype, seed: int):
    from talker_core.models.talker import TalkerConfig, TalkerModel

    torch.manual_seed(seed)
    cfg = TalkerConfig.tiny() if size == "debug" else TalkerConfig()
    model = TalkerModel(cfg).eval()
    return model.to(device=device, dtype=dtype)


_FAST_VARIANTS = ("plain", "fast", "fast_serial", "fast_unpacked_serial", "fast_pack_backbone")


def _step_option(name: str):
    """The ``TalkerGenerator(step=...)`` argument of a heads variant."""
    from talker_core.fast import FastPatchStep, FastPath

    if name == "plain":
        return None
    return FastPatchStep(
        {
            "fast": FastPath(),
            "fast_serial": FastPath(parallel_heads=False),
            "fast_unpacked_serial": FastPath(packed_linears=False, parallel_heads=False),
            "fast_pack_backbone": FastPath(pack_backbone=True),
        }[name]
    )


def bench_heads(size: str, device, dtype, args) -> dict:
    from talker_core.generation.engine import (
        GenerationMode,
        SamplingSettings,
        TalkerGenerator,
    )

    with _Peak(device) as peak:
        t0 = time.perf_counter()
        model = _talker(size, device, dtype, args.seed)
        build_s = time.perf_counter() - t0
        cfg = model.config
        g = torch.Generator().manual_seed(args.seed + 1)
        prompt = torch.randint(0, cfg.llm.vocab_size, (1, args.prompt_tokens), generator=g)
        speaker = torch.randn(cfg.speaker_dim, generator=g)
        first_motion = torch.randn(cfg.motion_dim, generator=g)
        n_total = args.warmup + args.patches
        settings = SamplingSettings(seed=args.seed)

        variants: dict[str, Any] = {}
        prefill_ms: dict[str, float] = {}
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [n for n in names if n != "baseline" and n not in _FAST_VARIANTS]
        if unknown:
            raise ValueError(f"unknown heads variant(s) {unknown}; known: baseline, {', '.join(_FAST_VARIANTS)}")
        if "baseline" in names:
            t = time.perf_counter()
            variants["baseline"] = ReferenceLoop(model, prompt, speaker, first_motion, args.seed)
            _sync(device)
            prefill_ms["baseline"] = (time.perf_counter() - t) * 1e3
        for name in names:
            if name == "baseline":
                continue
            engine = TalkerGenerator(model, step=_step_option(name))
            t = time.perf_counter()
            state, _ = engine.prefill(
                prompt,
                speaker,
                ref_speech=None,
                ref_motion=None,
                first_motion=first_motion,
                prefix_frames=0,
                mode=GenerationMode.JOINT,
                forced_speech=None,
                forced_motion=None,
                settings=settings,
                patches=n_total,
            )
            _sync(device)
            prefill_ms[name] = (time.perf_counter() - t) * 1e3
            variants[name] = (engine, state)

        times: dict[str, list[float]] = {k: [] for k in variants}
        first: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for i in range(n_total):
                for name, v in variants.items():
                    _sync(device)
                    t = time.perf_counter()
                    if name == "baseline":
                        speech, motion, _ = v.patch()
                    else:
                        engine, state = v
                        float(model.stop_probability(state.h)[0])  # the stop check, as in generate()
                        speech, motion = engine.step(state)
                    _sync(device)
                    dt = (time.perf_counter() - t) * 1e3
                    if i >= args.warmup:
                        times[name].append(dt)
                    if i == 0:
                        first[name] = torch.cat([speech.float().cpu().flatten(), motion.float().cpu().flatten()])
                    log.info("%s heads %s patch %d: %.1f ms", size, name, i, dt)
    out: dict[str, Any] = {
        "build_s": round(build_s, 2),
        "prompt_tokens": args.prompt_tokens,
        "patches_measured": args.patches,
        "warmup": args.warmup,
        **peak.value(),
    }
    for name, ts in times.items():
        ms = _median(ts)
        out[name] = {
            "ms_per_patch": round(ms, 2),
            "ms_per_generated_second": round(ms * FPS / PATCH, 1),
            "all_ms": [round(x, 2) for x in ts],
            "prefill_ms": round(prefill_ms[name], 1),
        }
        if name != "baseline" and "baseline" in times:
            # paired ratios (the same patch index measured back to back) are robust to load changes
            out[name]["over_baseline_paired_median"] = round(
                _median([a / b for a, b in zip(ts, times["baseline"], strict=True)]), 3
            )
    ref = first.get("fast")
    if ref is not None:
        out["max_abs_diff_first_patch_vs_fast"] = {
            k: float((v - ref).abs().max()) for k, v in first.items() if k != "fast"
        }
    if "baseline" in out and "fast" in out:
        out["fast_over_baseline"] = round(out["fast"]["ms_per_patch"] / out["baseline"]["ms_per_patch"], 3)
        out["fast_over_baseline_paired_median"] = out["fast"]["over_baseline_paired_median"]
        out["cpu_target_half_met"] = out["fast_over_baseline_paired_median"] <= 0.5
    if "plain" in out and "fast" in out:
        out["fast_over_plain"] = round(out["fast"]["ms_per_patch"] / out["plain"]["ms_per_patch"], 3)
    del model, variants
    return out


# --------------------------------------------------------------------------- render


def _liax(scale: float, device, dtype, seed: int):
    from talker_core.models.liax import LiaXConfig, LiaXGenerator

    torch.manual_seed(seed)
    gen = LiaXGenerator(LiaXConfig(scale=scale)).eval()
    return gen.to(device=device, dtype=dtype)


def bench_render(size: str, scale: float, device, dtype, args) -> dict:
    from talker_core.models.liax import LiaXGenerator  # noqa: F401  (import errors surface here)

    with _Peak(device) as peak:
        gen = _liax(scale, device, dtype, args.seed)
        g = torch.Generator().manual_seed(args.seed + 2)
        image = (torch.rand(1, 3, 512, 512, generator=g) * 2 - 1).to(device, dtype)
        with torch.inference_mode():
            t = time.perf_counter()
            z, feats = gen.encode_identity(image)
            _sync(device)
            encode_s = time.perf_counter() - t
            alpha = (torch.randn(max(args.frames, 1), gen.cfg.motion_dim, generator=g) * 0.5).to(device, dtype)
            out: dict[str, Any] = {"scale": scale, "encode_identity_s": round(encode_s, 3)}

            heavy = device.type == "cpu" and scale >= 1
            reps, warm = (1, 0) if heavy else (3, args.warmup)
            plain = args.render_plain == "always" or (args.render_plain == "auto" and not heavy)

            def timed(fn: Callable[[], Any]) -> float:
                ts = []
                for i in range(warm + reps):
                    _sync(device)
                    t0 = time.perf_counter()
                    fn()
                    _sync(device)
                    if i >= warm:
                        ts.append(time.perf_counter() - t0)
                return _median(ts)

            if plain:
                with gen.render_settings(fast=False):
                    out["plain_single_fps"] = round(1.0 / timed(lambda: gen.render(z, feats, alpha[:1])), 4)
            with gen.render_settings(fast=True):
                if alpha.shape[0] > 1 and not heavy:
                    out["fast_single_fps"] = round(1.0 / timed(lambda: gen.render(z, feats, alpha[:1])), 4)
                out["fast_batched_fps"] = round(alpha.shape[0] / timed(lambda: gen.render(z, feats, alpha)), 4)
                out["batch"] = alpha.shape[0]
            if heavy:
                out["note"] = "one timed call, no warm-up (CPU, scale >= 1)"
    out.update(peak.value())
    return out


# --------------------------------------------------------------------------- audio


def _vae(size: str, device, dtype, seed: int):
    from talker_core.models.whisperx_vae import (
        WhisperEncoderConfig,
        WhisperXVAE,
        WhisperXVAEConfig,
    )

    torch.manual_seed(seed)
    if size == "debug":
        cfg = WhisperXVAEConfig.tiny()
    else:
        # release codec; the Whisper branch (encode only) shrunk to one layer: decode never runs it
        cfg = WhisperXVAEConfig(whisper=WhisperEncoderConfig(n_audio_layer=1))
    return WhisperXVAE(cfg).eval().to(device=device, dtype=dtype)


def bench_audio(size: str, device, dtype, args) -> dict:
    with _Peak(device) as peak:
        vae = _vae(size, device, dtype, args.seed)
        frames = max(1, int(round(args.audio_seconds * FPS)))
        g = torch.Generator().manual_seed(args.seed + 3)
        lat = torch.randn(1, frames, vae.cfg.codec_decoder.z_dim, generator=g).to(device, dtype)
        seconds = frames / FPS
        out: dict[str, Any] = {"audio_seconds": seconds}
        reps = 1 if (device.type == "cpu" and size == "release") else 3
        for name in ("weight_norm", "folded"):
            if name == "folded":
                vae.fold_weight_norm()
            ts = []
            with torch.inference_mode():
                for i in range(args.warmup + reps):
                    _sync(device)
                    t = time.perf_counter()
                    vae.decode(lat)
                    _sync(device)
                    if i >= args.warmup:
                        ts.append(time.perf_counter() - t)
            out[name] = {"decode_s": round(_median(ts), 3), "x_realtime": round(seconds / _median(ts), 2)}
    out.update(peak.value())
    del vae
    return out


# --------------------------------------------------------------------------- end to end


def bench_e2e(size: str, device, dtype, args) -> dict:
    """One T2AV clip of ``--e2e-seconds``: generation (stop head off), audio decode, rendering;
    once in sequence and once with rendering overlapping generation (the bench's StreamingRenderer; the
    pipeline's own overlapped path, ``stream_talk``, is what the ``stream`` and ``long`` parts time)."""
    from bench.streaming_renderer import StreamingRenderer
    from talker_core.generation.engine import SamplingSettings, TalkerGenerator

    seconds = args.e2e_seconds or (10.0 if device.type == "cuda" else 2.0)
    patches = max(1, math.ceil(seconds * FPS / PATCH))
    scale = 0.125 if size == "debug" else 2
    chunk = max(1, args.frames)
    with _Peak(device) as peak:
        model = _talker(size, device, dtype, args.seed)
        vae = _vae(size, device, dtype, args.seed).fold_weight_norm()
        gen = _liax(scale, device, dtype, args.seed)
        cfg = model.config
        g = torch.Generator().manual_seed(args.seed + 4)
        prompt = torch.randint(0, cfg.llm.vocab_size, (1, args.prompt_tokens), generator=g)
        speaker = torch.randn(cfg.speaker_dim, generator=g)
        image = (torch.rand(1, 3, 512, 512, generator=g) * 2 - 1).to(device, dtype)
        settings = SamplingSettings(seed=args.seed, stop_min_patches=patches)
        engine = TalkerGenerator(model)
        with torch.inference_mode():
            z, feats = gen.encode_identity(image)
            alpha0 = gen.motion_code(z).float()
            # motion codes of random weights: rendered as raw codes scaled down
            engine.generate(prompt, speaker, first_motion=alpha0[0].cpu(), settings=settings, max_patches=2)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            out = engine.generate(prompt, speaker, first_motion=alpha0[0].cpu(), settings=settings, max_patches=patches)
            _sync(device)
            t1 = time.perf_counter()
            vae.decode(out.gen_speech[None].to(device, dtype))
            _sync(device)
            t2 = time.perf_counter()
            motion = out.gen_motion
            for s in range(0, motion.shape[0], chunk):
                gen.render(z, feats, (motion[s : s + chunk] * 0.1).to(device, dtype)).float().cpu()
            _sync(device)
            t3 = time.perf_counter()
            # overlapped: frames render in a worker (own CUDA stream) while patches are generated
            stream = StreamingRenderer(gen, z, feats, chunk=chunk)
            out2 = engine.generate(
                prompt,
                speaker,
                first_motion=alpha0[0].cpu(),
                settings=settings,
                max_patches=patches,
                on_patch=lambda i, s, m: stream.push(m[0].t() * 0.1),
            )
            vae.decode(out2.gen_speech[None].to(device, dtype))
            stream.close()
            _sync(device)
            t4 = time.perf_counter()
    clip = out.gen_speech.shape[0] / FPS
    res = {
        "estimated": False,
        "clip_seconds": clip,
        "liax_scale": scale,
        "render_chunk": chunk,
        "generate_s": round(t1 - t0, 3),
        "decode_s": round(t2 - t1, 3),
        "render_s": round(t3 - t2, 3),
        "wall_s": round(t3 - t0, 3),
        "rtf": round((t3 - t0) / clip, 3),
        "wall_overlap_s": round(t4 - t3, 3),
        "rtf_overlap": round((t4 - t3) / clip, 3),
        **peak.value(),
    }
    del model, vae, gen
    return res


def _estimate_e2e(result: dict, args) -> Optional[dict]:
    """RTF of a ``--e2e-seconds`` clip composed from the stage measurements of one size."""
    heads, audio = result.get("heads"), result.get("audio")
    render = next((r for r in result.get("render", []) if r.get("scale") == 2), None)
    if not heads or "fast" not in heads or not audio or not render:
        return None
    seconds = args.e2e_seconds or 10.0
    patches = math.ceil(seconds * FPS / PATCH)
    gen_s = heads["fast"]["prefill_ms"] / 1e3 + patches * heads["fast"]["ms_per_patch"] / 1e3
    dec_s = seconds / audio["folded"]["x_realtime"]
    ren_s = seconds * FPS / render["fast_batched_fps"]
    return {
        "estimated": True,
        "clip_seconds": seconds,
        "liax_scale": 2,
        "generate_s": round(gen_s, 2),
        "decode_s": round(dec_s, 2),
        "render_s": round(ren_s, 2),
        "wall_s": round(gen_s + dec_s + ren_s, 2),
        "rtf": round((gen_s + dec_s + ren_s) / seconds, 3),
    }


# --------------------------------------------------------------------------- driver


def _table(results: dict) -> str:
    env = results["env"]
    lines = [
        f"device {env['device']} ({env.get('gpu') or env['cpu']}), dtype {env['dtype']}, torch {env['torch']}, "
        f"threads {env['threads']}, load {env.get('load_avg_start')} → {env.get('load_avg_end')}"
    ]
    rows = [("size", "measure", "value")]
    for size, r in results["sizes"].items():
        h = r.get("heads")
        if h:
            for name in [k for k in h if isinstance(h[k], dict) and "ms_per_patch" in h[k]]:
                ratio = h[name].get("over_baseline_paired_median")
                rows.append(
                    (
                        size,
                        f"heads {name} ms/patch (ms per gen. s)",
                        f"{h[name]['ms_per_patch']:.1f} ({h[name]['ms_per_generated_second']:.0f})"
                        + (f"  ×{ratio:.3f} of baseline" if ratio is not None else ""),
                    )
                )
            if "fast_over_baseline_paired_median" in h:
                rows.append(
                    (
                        size,
                        "heads fast/baseline (paired median)",
                        f"{h['fast_over_baseline_paired_median']:.3f}  target ≤0.5: "
                        f"{'met' if h['cpu_target_half_met'] else 'NOT met'}",
                    )
                )
            rows.append((size, "heads peak memory", _mem(h)))
        for rr in r.get("render", []):
            parts = []
            for k in ("plain_single_fps", "fast_single_fps", "fast_batched_fps"):
                if k in rr:
                    parts.append(f"{k.replace('_fps', '')} {rr[k]:.3g}")
            rows.append((size, f"LIA-X scale {rr['scale']:g} frames/s", ", ".join(parts) + f"  [{_mem(rr)}]"))
        a = r.get("audio")
        if a:
            rows.append(
                (
                    size,
                    f"audio decode ×realtime ({a['audio_seconds']:g} s)",
                    f"weight-norm {a['weight_norm']['x_realtime']:.2f}, folded {a['folded']['x_realtime']:.2f}"
                    f"  [{_mem(a)}]",
                )
            )
        e = r.get("e2e")
        if e:
            rows.append(
                (
                    size,
                    f"e2e T2AV RTF ({e['clip_seconds']:g} s clip, scale {e['liax_scale']:g})"
                    + (" ESTIMATED" if e.get("estimated") else ""),
                    f"{e['rtf']:.3f}  (gen {e['generate_s']} s, decode {e['decode_s']} s, "
                    f"render {e['render_s']} s)"
                    + (f"; overlapped {e['rtf_overlap']:.3f}" if "rtf_overlap" in e else ""),
                )
            )
    from bench import reference, stream_bench

    for size, r in results["sizes"].items():
        rows.extend(reference.table_rows(size, r))
        rows.extend(stream_bench.table_rows(size, r))
    widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _mem(d: dict) -> str:
    if d.get("peak_gpu_mib") is not None:
        return f"peak GPU {d['peak_gpu_mib']:.0f} MiB"
    if d.get("peak_rss_mib") is not None:
        return f"peak RSS {d['peak_rss_mib']:.0f} MiB"
    return "peak n/a"


def run(args: argparse.Namespace) -> int:
    device = _resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights must not hit the slow denormal path
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = [s for s in sizes if s not in ("debug", "release")] + [
        p for p in parts if p not in ("heads", "render", "audio", "e2e", "long", "stream", "reference")
    ]
    if unknown:
        raise ValueError(f"unknown size or part: {unknown}")
    plain_args = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    results: dict[str, Any] = {"env": _env(device, dtype), "args": plain_args, "sizes": {}}
    if device.type == "cpu":
        results["env"]["note"] = (
            "CPU run: GPU numbers (CUDA graphs, bf16 rendering) are not measured here. "
            "The fast path samples the two heads in two worker threads of "
            f"{max(1, torch.get_num_threads() // 2)} intra-op thread(s) each."
        )
    from bench import reference

    ref_sizes = {s.strip() for s in args.reference_sizes.split(",") if s.strip()}
    ref_named = reference.reference_dir(args) is not None
    if ref_named:
        reference.check_reference_dir(reference.reference_dir(args))  # fail before minutes of other parts
    elif "heads" in parts:
        log.info("reference part %s", reference.SKIPPED)
    for size in sizes:
        r: dict[str, Any] = {}
        results["sizes"][size] = r
        if "heads" in parts:
            log.info("%s: heads", size)
            r["heads"] = bench_heads(size, device, dtype, args)
        if size in ref_sizes and ("reference" in parts or (ref_named and "heads" in parts)):
            log.info("%s: reference (the authors' loop)", size)
            r["reference"] = reference.bench_reference(size, device, dtype, args)
        if "render" in parts:
            scales = (
                [float(s) for s in args.liax_scales.split(",") if s.strip()]
                if args.liax_scales
                else ([0.125] if size == "debug" else [2.0, 1.0])
            )
            r["render"] = []
            for scale in scales:
                log.info("%s: render scale %g", size, scale)
                r["render"].append(bench_render(size, scale if scale < 1 else int(scale), device, dtype, args))
        if "audio" in parts:
            log.info("%s: audio", size)
            r["audio"] = bench_audio(size, device, dtype, args)
        if "e2e" in parts:
            measure = args.e2e_measure == "always" or (
                args.e2e_measure == "auto" and (device.type == "cuda" or size == "debug")
            )
            if measure:
                log.info("%s: end to end", size)
                r["e2e"] = bench_e2e(size, device, dtype, args)
            else:
                est = _estimate_e2e(r, args)
                if est is not None:
                    r["e2e"] = est
        if parts & {"long", "stream"}:
            from bench import stream_bench

            if "long" in parts:
                log.info("%s: long clip", size)
                r["long"] = stream_bench.bench_long(size, device, dtype, args)
            if "stream" in parts:
                log.info("%s: streaming", size)
                r["stream"] = stream_bench.bench_stream(size, device, dtype, args)
    results["env"]["load_avg_end"] = _load()
    print(_table(results))
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
