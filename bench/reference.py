"""The ``reference`` part: the authors' own per-patch loop timed against ours, in one process.

When ``--reference-dir`` or the ``TALKER_REFERENCE_DIR`` environment variable names a
checkout of the authors' repository (``zhenye234/Talker-T2AV``, kept outside this
repository), this part imports *their* modules from it (``speech_llm``, which pulls in
``llama4nar``, ``local_dit`` and ``unified_cfm``), builds their ``SpeechLLM`` at the
size set's sizes on this library's random weights, and times their
``SpeechLLM.generate_speech_motion`` (whose per-patch loop is the one of their
``infer.py``): 10 flow steps, CFG 2.0 with CFG-zero-star, temperature 0.3, sway 1.0,
joint speech + motion, no prefix. Whole generations of theirs, of our default path
(``TalkerGenerator(model, step=FastPatchStep())``, what the pipeline runs) and of the
bench's reference-style ``baseline`` (``bench.bench.ReferenceLoop``) alternate, the
order rotating every round, so that a change of machine load hits all three alike.
Per-patch times are the intervals between consecutive backbone calls (theirs: a
forward hook on their ``llm``; ours: ``on_prefill`` and ``on_patch``; baseline: each
``patch()``), so each covers the stop check, both heads, the patch encoders and one
backbone step.

What is not theirs, and why (each listed in the result's ``stand_ins``):

- the backbone: their ``init_model`` loads ``Qwen/Qwen3-0.6B`` from the hub through
  ``liger_kernel``'s ``AutoLigerKernelForCausalLM`` (Triton kernels for RMSNorm,
  SwiGLU and rotary; GPU only). Here the backbone is transformers'
  ``Qwen3ForCausalLM`` built from a ``Qwen3Config`` at the published sizes (the very
  module object of our model, so the weights are shared and nothing is downloaded);
  on the CPU the Liger kernels are not applied (plain-torch modules, the same math);
  on CUDA they are applied to a copy when ``liger_kernel`` imports. If
  ``liger_kernel`` cannot be imported at all, a stand-in module providing the one name
  their ``speech_llm`` imports (``AutoLigerKernelForCausalLM``, never called here) is
  registered for the duration of the import.
- the speaker encoder (their vendored ``speaker_verification``, WavLM-Large + ECAPA,
  imports torchaudio and loads a checkpoint): a stand-in returning the bench's
  speaker embedding. It runs once before the loop in their code.
- the codec (WhisperX-VAE, a checkpoint): a stand-in whose ``encode`` gives the latent
  width and whose ``decode`` records the generated latents. Both run outside the loop.

Their files are never edited; the stand-ins and their modules are removed from
``sys.modules`` and their folder from ``sys.path`` when the part ends. Nothing here is
imported unless the folder is named.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)

ENV_VAR = "TALKER_REFERENCE_DIR"
ENTRY_MODULE = "speech_llm"
ENTRY_FILE = ENTRY_MODULE + ".py"
# the authors' recipe (infer.py defaults = the paper's), which our SamplingSettings defaults also follow
STEPS, TEMPERATURE, CFG = 10, 0.3, 2.0
SKIPPED = (
    f"skipped: no checkout of the authors' repository named (set {ENV_VAR} or pass --reference-dir "
    "to a checkout of zhenye234/Talker-T2AV kept outside this repository)"
)
_STAND_IN_MARK = "__talker_bench_stand_in__"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--reference-dir",
        default=None,
        help=f"checkout of the authors' repository (default: ${ENV_VAR}); when named, the reference part "
        "times their SpeechLLM.generate_speech_motion against our default path in the same run",
    )
    parser.add_argument(
        "--reference-rounds", type=int, default=3, help="reference part: measured rounds (one generation each)"
    )
    parser.add_argument(
        "--reference-sizes",
        default="release",
        help="reference part: size sets it runs at (their code builds the DiT heads at the release sizes)",
    )


def reference_dir(args) -> Optional[str]:
    """The named checkout (``--reference-dir``, else ``$TALKER_REFERENCE_DIR``), or None."""
    path = getattr(args, "reference_dir", None) or os.environ.get(ENV_VAR) or None
    return os.path.abspath(os.path.expanduser(path)) if path else None


def check_reference_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise ValueError(f"reference dir {path!r} (--reference-dir / {ENV_VAR}) is not a folder")
    if not os.path.isfile(os.path.join(path, ENTRY_FILE)):
        raise ValueError(
            f"reference dir {path!r} has no {ENTRY_FILE}: name the root of a checkout of the authors' "
            "repository zhenye234/Talker-T2AV (the folder holding speech_llm.py, llama4nar.py, local_dit.py)"
        )


# --------------------------------------------------------------------------- stand-ins


class SpeakerStandIn(torch.nn.Module):
    """Stand-in for their WavLM-Large + ECAPA speaker encoder: returns the bench's embedding."""

    def __init__(self, embedding: torch.Tensor):
        super().__init__()
        self.register_buffer("embedding", embedding.reshape(1, -1).float().clone(), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.embedding.to(wav.device).expand(wav.shape[0], -1)


class CodecStandIn(torch.nn.Module):
    """Stand-in for their WhisperX-VAE: ``encode`` gives one frame of zeros (their code reads the latent
    width from it), ``decode`` keeps the latents it is given and returns silence (960 samples a frame)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoded: list[torch.Tensor] = []

    def encode(self, audio: torch.Tensor, feat: Any = None, return_layout: str = "btc") -> torch.Tensor:
        return torch.zeros(audio.shape[0], 1, self.latent_dim, device=audio.device)

    def decode(self, latents: torch.Tensor, latent_layout: str = "btc") -> torch.Tensor:
        self.decoded.append(latents.detach().float().cpu())
        return torch.zeros(latents.shape[0], 1, latents.shape[1] * 960, device=latents.device)


class _SpeakerSlot:
    """What the stand-in ``speaker_verification.init_model`` hands out (set before their model is built)."""

    embedding: Optional[torch.Tensor] = None


def _speaker_verification_stand_in() -> types.ModuleType:
    mod = types.ModuleType("speaker_verification")
    mod.__doc__ = "talker bench stand-in for the authors' vendored WavLM-Large speaker encoder"

    def init_model(model_name: str = "wavlm_large", checkpoint: Optional[str] = None) -> torch.nn.Module:
        if _SpeakerSlot.embedding is None:
            raise RuntimeError("bench stand-in speaker encoder used before the bench set its embedding")
        return SpeakerStandIn(_SpeakerSlot.embedding)

    mod.init_model = init_model  # type: ignore[attr-defined]
    setattr(mod, _STAND_IN_MARK, True)
    return mod


def _liger_stand_in() -> tuple[types.ModuleType, types.ModuleType]:
    pkg = types.ModuleType("liger_kernel")
    sub = types.ModuleType("liger_kernel.transformers")
    sub.__doc__ = "talker bench stand-in: liger_kernel could not be imported"

    class AutoLigerKernelForCausalLM:
        """The one name their speech_llm imports from liger_kernel; the bench builds the backbone itself."""

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise NotImplementedError(
                "bench stand-in for liger_kernel: the benchmark builds the Qwen3 backbone from a Qwen3Config "
                "and never loads it from the hub"
            )

    sub.AutoLigerKernelForCausalLM = AutoLigerKernelForCausalLM  # type: ignore[attr-defined]
    pkg.transformers = sub  # type: ignore[attr-defined]
    for m in (pkg, sub):
        setattr(m, _STAND_IN_MARK, True)
    return pkg, sub


def _liger_importable() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure (no package, no triton) means: stand in
        return False
    return True


@contextlib.contextmanager
def reference_modules(path: str) -> Iterator[tuple[types.ModuleType, list[str]]]:
    """Import their ``speech_llm`` from ``path`` with the stand-ins; undo it all on exit.

    Yields the module and the stand-ins used (plain sentences, for the result).
    """
    check_reference_dir(path)
    saved_path = list(sys.path)
    saved = {name: sys.modules.get(name) for name in (ENTRY_MODULE, "speaker_verification")}
    inserted: list[str] = []
    notes = [
        "speaker encoder: bench stand-in returning the bench's speaker embedding (their vendored WavLM-Large "
        "speaker_verification needs torchaudio and a checkpoint; it runs once, before the loop)",
        "codec: bench stand-in (their WhisperX-VAE needs a checkpoint; encode/decode run outside the loop)",
    ]
    sys.modules["speaker_verification"] = _speaker_verification_stand_in()
    inserted.append("speaker_verification")
    if not _liger_importable():
        pkg, sub = _liger_stand_in()
        for name, m in (("liger_kernel", pkg), ("liger_kernel.transformers", sub)):
            saved.setdefault(name, sys.modules.get(name))
            sys.modules[name] = m
            inserted.append(name)
        notes.append(
            "liger_kernel: not importable here; a bench stand-in provides the one name their speech_llm imports "
            "(AutoLigerKernelForCausalLM, used only by their init_model, which the bench does not call)"
        )
    sys.modules.pop(ENTRY_MODULE, None)
    sys.path.insert(0, path)
    root = os.path.realpath(path) + os.sep
    try:
        import importlib

        try:
            mod = importlib.import_module(ENTRY_MODULE)
        except ImportError as exc:
            raise _import_hint(exc, path) from exc
        origin = os.path.realpath(getattr(mod, "__file__", "") or "")
        if not origin.startswith(root):
            raise ValueError(f"imported {ENTRY_MODULE} from {origin!r}, not from the reference dir {path!r}")
        yield mod, notes
    finally:
        sys.path[:] = saved_path
        for name in list(sys.modules):
            m = sys.modules.get(name)
            f = getattr(m, "__file__", None)
            if name in inserted or (f and os.path.realpath(f).startswith(root)):
                del sys.modules[name]
        for name, m in saved.items():
            if m is not None:
                sys.modules[name] = m
        _SpeakerSlot.embedding = None


def _import_hint(exc: ImportError, path: str) -> RuntimeError:
    return RuntimeError(
        f"the authors' code in {path!r} needs {exc.name or exc}, which is not installed here: "
        "pip install -r bench/requirements-reference.txt (einops, pydantic) into the environment that runs the bench"
    )


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


# --------------------------------------------------------------------------- their model


def build_theirs(mod: types.ModuleType, model, speaker: torch.Tensor, device: torch.device) -> tuple[Any, dict]:
    """Their ``SpeechLLM`` at our model's sizes, holding our model's weights (shared, not copied).

    Returns the model and a record of what was shared: every tensor of theirs whose
    name and shape our state dict has is ours (``load_state_dict(assign=True)``); the
    rest (their rotary tables, computed from the sizes; any name we lack) keeps their
    own initialisation and is listed.
    """

    cfg = model.config
    width = model.llm.config.hidden_size
    margs = mod.ModelArguments(
        speech_embedding_dim=cfg.speech_dim,
        motion_embedding_dim=cfg.motion_dim,
        patch_size=cfg.patch_size,
        delay=cfg.delay,
        context_patches=cfg.context_patches,
        patch_encoder_n_layer=cfg.patch_encoder.n_layer,
        patch_encoder_n_head=cfg.patch_encoder.n_head,
    )
    notes: list[str] = []
    llm = model.llm
    if device.type == "cuda":
        llm = copy.deepcopy(model.llm)  # Liger patches a module in place: keep ours untouched
        try:
            from liger_kernel.transformers import apply_liger_kernel_to_qwen3

            apply_liger_kernel_to_qwen3(model=llm)
            notes.append("backbone: transformers Qwen3 with their Liger kernels applied (a copy of ours)")
        except Exception as exc:  # noqa: BLE001
            notes.append(f"backbone: Liger kernels not applied ({type(exc).__name__}: {exc}); plain transformers")
    else:
        notes.append(
            "backbone: transformers Qwen3ForCausalLM at the published sizes, the same module object as ours "
            "(their init_model loads it through liger_kernel, whose Triton kernels do not run on a CPU; "
            "here transformers' plain-torch RMSNorm, SwiGLU and rotary, the same math)"
        )
    # their init_model passes a fresh config (AutoConfig of the hub name); ours carries an attention choice
    fresh = type(model.llm.config)(**model.llm.config.to_dict())
    fresh.use_cache = False
    _SpeakerSlot.embedding = speaker
    codec = CodecStandIn(cfg.speech_dim)
    theirs = mod.SpeechLLM(
        llm,
        codec,
        mod.ProjectorConv1d(margs, cfg.speech_dim, width),
        mod.ProjectorConv1d(margs, cfg.motion_dim, width),
        fresh,
        margs,
    )
    ours_sd = model.state_dict()
    stand_in_prefixes = ("spk.", "pretrained_speech_encoder.")
    take, own = {}, []
    for name, t in theirs.state_dict().items():
        if name.startswith(stand_in_prefixes) or (name.startswith("llm.") and llm is model.llm):
            continue
        o = ours_sd.get(name)
        if o is not None and tuple(o.shape) == tuple(t.shape):
            take[name] = o
        else:
            own.append(name)
    theirs.load_state_dict(take, strict=False, assign=True)
    theirs = theirs.to(device).eval()
    backbone = sum(1 for k in theirs.state_dict() if k.startswith("llm.")) if llm is model.llm else 0
    shared = {"tensors_from_ours": len(take) + backbone, "their_own_init": own, "backbone_shared": llm is model.llm}
    return theirs, {"weights": shared, "notes": notes}


def _head_check(theirs, model, prompt, speaker, first_motion, seed: int, device: torch.device) -> Optional[float]:
    """Their two flow heads (``UnifiedCFM``) from the baseline's prefill state with the baseline's noise:
    the largest difference to the baseline's first patch. Small = their modules hold our weights and
    compute what the baseline does. CPU only (their noise comes from the global generator of the device)."""
    if device.type != "cpu":
        return None
    from bench.bench import ReferenceLoop

    cfg = model.config
    with torch.no_grad():
        loop = ReferenceLoop(model, prompt, speaker, first_motion, seed)
        h = loop.h.float().clone()
        speech, motion, _ = loop.patch()
        ctx = cfg.context_patches * cfg.patch_size
        torch.manual_seed(seed)
        kw = dict(
            n_timesteps=STEPS,
            patch_size=cfg.patch_size,
            temperature=TEMPERATURE,
            cfg_value=CFG,
            sway_sampling_coef=1.0,
            use_cfg_zero_star=True,
        )
        s = theirs.speech_cfm(
            mu=h, cond=torch.zeros(1, cfg.speech_dim, ctx), global_cond=speaker.reshape(1, -1).float(), **kw
        )
        m = theirs.motion_cfm(
            mu=h, cond=torch.zeros(1, cfg.motion_dim, ctx), global_cond=first_motion.reshape(1, -1).float(), **kw
        )
    return max(float((s - speech).abs().max()), float((m - motion).abs().max()))


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _diffs(stamps: list[float]) -> list[float]:
    return [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:], strict=False)]


def bench_reference(size: str, device: torch.device, dtype: torch.dtype, args) -> dict:
    """Alternate whole generations of theirs, ours (fast) and the baseline; per-patch medians and ratios."""
    path = reference_dir(args)
    if path is None:
        log.info("reference part %s", SKIPPED)
        return {"skipped": SKIPPED}
    if device.type == "cpu" and dtype != torch.float32:
        msg = (
            f"skipped: their code runs {dtype} only under CUDA autocast (heads in float32, inputs cast to the "
            "backbone dtype); on the CPU the reference part runs in float32"
        )
        log.info("reference part %s", msg)
        return {"skipped": msg}
    from bench.bench import ReferenceLoop, _talker
    from talker_core.fast import FastPatchStep
    from talker_core.generation.engine import SamplingSettings, TalkerGenerator

    patches = max(1, args.patches)
    rounds = max(1, args.reference_rounds)
    t0 = time.perf_counter()
    model = _talker(size, device, dtype, args.seed)
    cfg = model.config
    g = torch.Generator().manual_seed(args.seed + 1)
    prompt = torch.randint(0, cfg.llm.vocab_size, (1, args.prompt_tokens), generator=g)
    speaker = torch.randn(cfg.speaker_dim, generator=g)
    first_motion = torch.randn(cfg.motion_dim, generator=g)
    settings = SamplingSettings(seed=args.seed)
    if (settings.steps, settings.temperature, settings.cfg) != (STEPS, TEMPERATURE, CFG) or not (
        settings.cfg_zero_star and settings.sway == 1.0
    ):
        raise RuntimeError(
            f"our default sampling settings {settings} no longer match the authors' recipe the reference part "
            f"times (steps {STEPS}, temperature {TEMPERATURE}, cfg {CFG}, sway 1.0, CFG-zero-star): update "
            "bench/reference.py"
        )
    engine = TalkerGenerator(model, step=FastPatchStep())
    build_ours_s = time.perf_counter() - t0

    with reference_modules(path) as (mod, notes):
        t0 = time.perf_counter()
        try:
            theirs, built = build_theirs(mod, model, speaker, device)
        except ImportError as exc:  # their SpeechLLM imports llama4nar (einops), unified_cfm (pydantic) lazily
            raise _import_hint(exc, path) from exc
        build_theirs_s = time.perf_counter() - t0
        codec = theirs.pretrained_speech_encoder

        stamps: list[float] = []

        def stamp(*_a) -> None:
            _sync(device)
            stamps.append(time.perf_counter())

        head_check = _head_check(theirs, model, prompt, speaker, first_motion, settings.seed, device)
        hook = theirs.llm.register_forward_hook(lambda *_a: stamp())
        length = prompt.shape[1]

        def run_theirs(n: int) -> tuple[list[float], torch.Tensor]:
            stamps.clear()
            codec.decoded.clear()
            if device.type == "cpu":
                torch.manual_seed(settings.seed)  # their noise: the global generator, speech then motion
            out = theirs.generate_speech_motion(
                input_ids=prompt.to(device),
                feat=torch.zeros(1, 1, 128, 1, device=device),
                mel_len=torch.tensor([n * cfg.patch_size]),
                audio=torch.zeros(1, 1, 960 * n * cfg.patch_size, device=device),
                audio16k=torch.zeros(1, 1, 640 * n * cfg.patch_size, device=device),
                speech_span=torch.tensor([[length, length + n]]),
                first_motion=first_motion.to(device),
                prefix_seconds=0.0,
                fps=cfg.fps,
                cfm_steps=STEPS,
                cfm_temperature=TEMPERATURE,
                cfm_cfg=CFG,
                # exactly n patches: the stop head is read at patch n and votes stop
                use_stop=True,
                stop_threshold=0.0,
                min_gen_patches=n,
                stop_k=1,
            )
            ts = _diffs(stamps)
            if len(ts) != n:
                raise RuntimeError(f"their generate_speech_motion ran {len(ts)} backbone steps, expected {n}")
            motion = out[3]
            speech = codec.decoded[0] if codec.decoded else torch.zeros(1, 0, cfg.speech_dim)
            first = torch.cat(
                [speech[0, : cfg.patch_size].flatten(), motion[0, : cfg.patch_size].float().cpu().flatten()]
            )
            return ts, first

        def run_ours(n: int) -> tuple[list[float], torch.Tensor]:
            marks: list[float] = []
            first: list[torch.Tensor] = []

            def on_patch(i, s, m) -> None:
                stamp_into(marks)
                if i == 0:
                    first.append(torch.cat([s[0].t().float().cpu().flatten(), m[0].t().float().cpu().flatten()]))

            engine.generate(
                prompt,
                speaker,
                first_motion=first_motion,
                settings=SamplingSettings(seed=settings.seed, stop_min_patches=n),
                max_patches=n,
                on_prefill=lambda _o: stamp_into(marks),
                on_patch=on_patch,
            )
            return _diffs(marks), first[0]

        def run_baseline(n: int) -> tuple[list[float], torch.Tensor]:
            marks: list[float] = []
            loop = ReferenceLoop(model, prompt, speaker, first_motion, settings.seed)
            stamp_into(marks)
            first = None
            for i in range(n):
                s, m, _ = loop.patch()
                stamp_into(marks)
                if i == 0:
                    first = torch.cat([s[0].t().float().cpu().flatten(), m[0].t().float().cpu().flatten()])
            assert first is not None
            return _diffs(marks), first

        def stamp_into(marks: list[float]) -> None:
            _sync(device)
            marks.append(time.perf_counter())

        runners: dict[str, Callable[[int], tuple[list[float], torch.Tensor]]] = {
            "ours": run_ours,
            "theirs": run_theirs,
            "baseline": run_baseline,
        }
        names = list(runners)
        per: dict[str, list[list[float]]] = {k: [] for k in names}
        firsts: dict[str, torch.Tensor] = {}
        try:
            with torch.no_grad():
                if args.warmup > 0:
                    for name in names:
                        runners[name](min(patches, max(1, args.warmup)))
                for r in range(rounds):
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        ts, first = runners[name](patches)
                        per[name].append(ts)
                        firsts.setdefault(name, first)
                        log.info(
                            "%s reference round %d %s: %s ms/patch", size, r, name, ", ".join(f"{x:.0f}" for x in ts)
                        )
        finally:
            hook.remove()
        digest = _file_digest(os.path.join(path, ENTRY_FILE))

    out: dict[str, Any] = {
        "reference_dir": path,
        "speech_llm_sha256_16": digest,
        "their_entry": "speech_llm.SpeechLLM.generate_speech_motion (joint, no prefix)",
        "ours": "TalkerGenerator(model, step=FastPatchStep()) (the pipeline's default path)",
        "settings": {"steps": STEPS, "temperature": TEMPERATURE, "cfg": CFG, "sway": 1.0, "cfg_zero_star": True},
        "patches_per_generation": patches,
        "rounds": rounds,
        "build_ours_s": round(build_ours_s, 2),
        "build_theirs_s": round(build_theirs_s, 2),
        "stand_ins": notes + built["notes"],
        "weights": built["weights"],
    }
    for name in names:
        flat = [x for ts in per[name] for x in ts]
        out[name + "_ms_per_patch"] = round(_median(flat), 2)
        out[name + "_all_ms"] = [[round(x, 1) for x in ts] for ts in per[name]]

    def ratio(a: str, b: str) -> dict:
        paired = [_median(x) / _median(y) for x, y in zip(per[a], per[b], strict=True)]
        return {
            "of_medians": round(out[a + "_ms_per_patch"] / out[b + "_ms_per_patch"], 3),
            "paired_median": round(_median(paired), 3),
            "per_round": [round(p, 3) for p in paired],
        }

    out["ours_over_theirs"] = ratio("ours", "theirs")
    out["baseline_over_theirs"] = ratio("baseline", "theirs")
    out["ours_over_baseline"] = ratio("ours", "baseline")
    if head_check is not None:
        out["their_heads_vs_baseline_first_patch_max_abs_diff"] = head_check
    # their generate_speech_motion puts the task token before the prompt (their infer.py, which ours and the
    # baseline follow, does not), so their first patch starts from another backbone state: informative only
    out["max_abs_diff_first_patch_vs_ours"] = {
        k: float((v - firsts["ours"]).abs().max()) for k, v in firsts.items() if k != "ours"
    }
    return out


def table_rows(size: str, r: dict) -> list[tuple[str, str, str]]:
    ref = r.get("reference")
    if not ref:
        return []
    if "skipped" in ref:
        return [(size, "reference (authors' code)", ref["skipped"])]
    o = ref["ours_over_theirs"]
    rows = [
        (
            size,
            "reference ms/patch: ours (fast) / theirs / baseline",
            f"{ref['ours_ms_per_patch']:.1f} / {ref['theirs_ms_per_patch']:.1f} / {ref['baseline_ms_per_patch']:.1f}",
        ),
        (
            size,
            "reference ours/theirs (paired median; of medians)",
            f"{o['paired_median']:.3f}; {o['of_medians']:.3f}  (baseline/theirs "
            f"{ref['baseline_over_theirs']['paired_median']:.3f}, ours/baseline "
            f"{ref['ours_over_baseline']['paired_median']:.3f})",
        ),
    ]
    check = ref.get("their_heads_vs_baseline_first_patch_max_abs_diff")
    if check is not None:
        rows.append((size, "reference their heads vs baseline, same state+noise", f"max |diff| {check:.2g}"))
    for note in ref["stand_ins"]:
        rows.append((size, "reference stand-in", note))
    return rows
