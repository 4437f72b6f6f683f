"""Device checks that no other benchmark part makes: one patch under ``torch.profiler``, the fast
program against the eager step on the same seed, bf16 against fp32, and CPU against CUDA.

``python -m bench.gpu_profile --device cuda --size release --json OUT.json`` (``--size debug
--device cpu`` is the dry run). Random weights; prints one JSON object and writes it to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch


def _model(size: str, device: str, dtype: torch.dtype, seed: int):
    from talker_core.models.talker import TalkerConfig, TalkerModel

    torch.manual_seed(seed)
    cfg = TalkerConfig() if size == "release" else TalkerConfig.tiny()
    return TalkerModel(cfg).eval().to(device=device, dtype=dtype)


def _engine(model, step, patches: int, seed: int):
    """A joint-generation engine and its prefilled state (random prompt, speaker and first pose)."""
    from talker_core.generation.engine import GenerationMode, SamplingSettings, TalkerGenerator

    cfg = model.config
    g = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, cfg.llm.vocab_size, (1, 32), generator=g)
    speaker, first_motion = torch.randn(cfg.speaker_dim, generator=g), torch.randn(cfg.motion_dim, generator=g)
    engine = TalkerGenerator(model, step=step)
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
        settings=SamplingSettings(seed=seed),
        patches=patches,
    )
    return engine, state


def _first_patches(model, step, patches: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Speech and motion of the first ``patches`` patches of a joint generation, and ms per patch."""
    engine, state = _engine(model, step, patches + 1, seed)
    speech, motion, times = [], [], []
    with torch.no_grad():
        for _ in range(patches):
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            s, m = engine.step(state)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t) * 1e3)
            speech.append(s.float().cpu())
            motion.append(m.float().cpu() if m is not None else torch.zeros(0))
    steady = sorted(times[1:] or times)[len(times[1:] or times) // 2]
    return torch.cat(speech, -1), torch.cat(motion, -1), steady


def _diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    d = (a - b).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "ref_max": float(b.abs().max())}


def run(args) -> dict[str, Any]:
    from talker_core.fast import FastPatchStep, FastPath

    out: dict[str, Any] = {"size": args.size, "device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
    fp32 = _model(args.size, args.device, torch.float32, args.seed)
    eager_s, eager_m, eager_ms = _first_patches(fp32, None, args.patches, args.seed)
    plain_s, plain_m, plain_ms = _first_patches(
        fp32, FastPatchStep(FastPath(cuda_graphs=False)), args.patches, args.seed
    )
    fast_s, fast_m, fast_ms = _first_patches(fp32, FastPatchStep(FastPath()), args.patches, args.seed)
    out["ms_per_patch_fp32"] = {"eager": eager_ms, "fast_no_graphs": plain_ms, "fast": fast_ms}
    out["fast_program_vs_eager_fp32"] = {"speech": _diff(fast_s, eager_s), "motion": _diff(fast_m, eager_m)}
    out["graphs_vs_no_graphs_fp32"] = {"speech": _diff(fast_s, plain_s), "motion": _diff(fast_m, plain_m)}
    if args.device != "cpu":
        cpu = _model(args.size, "cpu", torch.float32, args.seed)
        cpu_s, cpu_m, _ = _first_patches(cpu, None, min(args.patches, 2), args.seed)
        n = cpu_s.shape[-1]
        out["cuda_vs_cpu_fp32_first_patches"] = {
            "speech": _diff(eager_s[..., :n], cpu_s),
            "motion": _diff(eager_m[..., :n], cpu_m),
        }
        del cpu
    bf16 = _model(args.size, args.device, torch.bfloat16, args.seed)
    bf_s, bf_m, bf_ms = _first_patches(bf16, FastPatchStep(FastPath()), args.patches, args.seed)
    out["ms_per_patch_bf16_fast"] = bf_ms
    out["bf16_vs_fp32_fast"] = {"speech": _diff(bf_s, fast_s), "motion": _diff(bf_m, fast_m)}

    # one patch of the default (bf16 fast) path under the profiler: top kernels, launches, host time
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    engine, state = _engine(bf16, FastPatchStep(FastPath()), 4, args.seed)
    with torch.no_grad():
        engine.step(state)  # warm-up (graph capture)
        with profile(activities=activities) as prof:
            engine.step(state)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
    events = prof.key_averages()
    sort = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    out["profile_one_patch"] = {
        "table": events.table(sort_by=sort, row_limit=15),
        "kernel_launches": int(
            sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cudaGraphLaunch")))
        ),
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="release", choices=("debug", "release"))
    p.add_argument("--patches", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args()
    out = run(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
