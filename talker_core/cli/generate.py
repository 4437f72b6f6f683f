"""``python -m talker_core generate``: text (or driving audio/video) in, MP4 (or WAV) out.

Modes follow from the inputs given:

=================  ===============================================================
T2AV (default)     --text, --ref-audio, --ref-video or --ref-image
A2V                --drive-audio (speech given, face animated), --ref-video/--ref-image
V2A                --drive-video (silent talking clip, speech dubbed), --ref-audio
speech only        --speech-only --text --ref-audio  (writes a .wav)
=================  ===============================================================

``--prefix-seconds`` feeds that much of the reference clip as a prefix (style cloning);
it needs --ref-video (or --ref-motion) for the motion and --ref-audio for the voice.
Several ``--text`` or ``--seed`` values run as a batch sharing the loaded models.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from talker_core.cli import checks

log = logging.getLogger(__name__)

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The options naming input files (besides --text-file), as argparse ``dest`` names.
INPUT_FILES = checks.INPUT_FILES


# TalkRequest fields set from the command line, one option each (``--name-with-dashes``)
_TABLE_OPTIONS = (
    "steps",
    "cfg",
    "temperature",
    "sway",
    "cfg_zero_star",
    "prefix_seconds",
    "max_seconds",
    "segment_prefix_seconds",
    "stop_threshold",
)


def _add_param_option(group, name: str) -> None:
    """One option from :data:`talker_core.params.PARAMS`: its type, default, range and help."""
    from talker_core.params import param

    spec = param(name)
    flag = "--" + name.replace("_", "-")
    if spec.kind is bool:
        group.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=spec.default,
            help=f"{spec.help} (default: %(default)s)",
        )
        return

    def parse(text: str):
        try:
            value = spec.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a number ({spec.range_text}), got {text!r}") from None
        try:
            spec.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    parse.__name__ = spec.kind.__name__  # argparse names the type in its messages
    group.add_argument(
        flag, type=parse, default=spec.default, help=f"{spec.help} ({spec.range_text}; default {spec.default:g})"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("inputs")
    g.add_argument(
        "--models",
        default="models",
        metavar="DIR",
        help="folder with the model files (layout in the README; default: ./models)",
    )
    g.add_argument(
        "--text",
        action="append",
        default=None,
        help="what to say; repeat for a batch. Long texts are split at sentences (long form)",
    )
    g.add_argument("--text-file", metavar="FILE", help="read the text from a UTF-8 file instead")
    g.add_argument("--ref-audio", metavar="FILE", help="reference voice (any audio or video file; ≤ 30 s used)")
    g.add_argument(
        "--ref-video",
        metavar="FILE",
        help="reference talking clip: its first frame is the face; with --prefix-seconds its motion is cloned",
    )
    g.add_argument("--ref-image", metavar="FILE", help="reference face image (instead of --ref-video)")
    g.add_argument(
        "--ref-motion",
        metavar="FILE",
        help="precomputed LIA-X motion of the reference (the authors' .pt format), for the prefix",
    )
    g.add_argument("--drive-audio", metavar="FILE", help="A2V: speech to animate the face with")
    g.add_argument("--drive-video", metavar="FILE", help="V2A: silent talking clip to dub")
    g.add_argument("--speech-only", action="store_true", help="generate speech only (writes audio)")
    g.add_argument(
        "--rerender-face",
        action="store_true",
        help="V2A: render the face anew through LIA-X (512×512) instead of keeping the clip's own frames",
    )
    g.add_argument(
        "--out",
        default="out.mp4",
        metavar="FILE",
        help="output file (.mp4; .wav for --speech-only). Batches add _1, _2, …",
    )
    s = parser.add_argument_group("sampling")
    s.add_argument(
        "--seed", type=int, action="append", default=None, help="random seed (repeat for a batch; default 0)"
    )
    for name in _TABLE_OPTIONS:  # defaults, ranges and help: talker_core.params
        _add_param_option(s, name)
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps … (default auto)")
    r.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="model precision (auto: bf16 on CUDA, fp32 elsewhere)",
    )
    from talker_core.models.talker import ATTN_HELP, ATTN_IMPLEMENTATIONS

    r.add_argument(
        "--attn",
        default=ATTN_IMPLEMENTATIONS[0],
        choices=ATTN_IMPLEMENTATIONS,
        help="backbone attention implementation: " + "; ".join(f"{k}: {v}" for k, v in ATTN_HELP.items()),
    )
    r.add_argument("--render-chunk", type=int, default=8, help="frames rendered per batch (default 8)")
    add_video_arguments(parser)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    from talker_core.cli import features

    features.add_arguments(parser)


def _crf(text: str) -> int:
    from talker_core.media.output import CRF_MAX, CRF_MIN

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crf takes a whole number {CRF_MIN}..{CRF_MAX}, got {text!r}") from None
    if not CRF_MIN <= value <= CRF_MAX:
        raise argparse.ArgumentTypeError(f"--crf must be in {CRF_MIN}..{CRF_MAX}, got {value}")
    return value


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The MP4 options: --crf, --preset, --fragmented (the writer's ranges and defaults) and --overlap."""
    from talker_core.media.output import CRF_DEFAULT, CRF_MAX, CRF_MIN, PRESET_DEFAULT, PRESETS

    v = parser.add_argument_group("video file")
    # None = not given: the writer's default, and no complaint where the option does not apply
    v.add_argument(
        "--crf",
        type=_crf,
        default=None,
        help=f"H.264 quality, {CRF_MIN} (lossless) .. {CRF_MAX} (worst); lower is bigger (default {CRF_DEFAULT})",
    )
    v.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help=f"x264 speed/size trade-off: slower presets give smaller files (default {PRESET_DEFAULT})",
    )
    v.add_argument(
        "--fragmented",
        action="store_true",
        default=None,
        help="write a fragmented MP4 (one fragment a second) that a player can open while it is being written; "
        "it appears under --out at once and is removed if the run fails",
    )
    v.add_argument(
        "--overlap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="render frames while later patches are generated (default: on when rendering on a GPU, off on a CPU, "
        "where the two would share the same cores)",
    )


@dataclass(frozen=True)
class VideoSettings:
    """How the MP4 of a rendered clip is written (None: the writer's default / auto)."""

    crf: Optional[int] = None
    preset: Optional[str] = None
    fragmented: bool = False
    overlap: Optional[bool] = None

    def writer_options(self) -> dict:
        """Keyword arguments of :class:`~talker_core.media.Mp4Writer` (and of the functions that open one)."""
        from talker_core.media.output import CRF_DEFAULT, PRESET_DEFAULT

        return dict(
            crf=CRF_DEFAULT if self.crf is None else self.crf,
            preset=PRESET_DEFAULT if self.preset is None else self.preset,
            fragmented=bool(self.fragmented),
        )


def video_settings(args: argparse.Namespace) -> VideoSettings:
    return VideoSettings(
        crf=getattr(args, "crf", None),
        preset=getattr(args, "preset", None),
        fragmented=bool(getattr(args, "fragmented", None)),
        overlap=getattr(args, "overlap", None),
    )


def _given_video_options(args) -> list[str]:
    """The video-file options given on the command line (their defaults are None)."""
    out = [f"--{name}" for name in ("crf", "preset", "fragmented") if getattr(args, name, None) is not None]
    overlap = getattr(args, "overlap", None)
    if overlap is not None:
        out.append("--overlap" if overlap else "--no-overlap")
    return out


def _check_video_options(args, mode: str) -> None:
    """--crf/--preset/--fragmented shape an MP4; --overlap needs frames to render (raise ValueError otherwise)."""
    from talker_core.pipeline import Mode

    given = _given_video_options(args)
    if not given:
        return
    if mode == Mode.SPEECH:
        raise ValueError(f"{given[0]} is for video; --speech-only writes a .wav")
    overlap = [g for g in given if g.endswith("overlap")]
    if overlap and getattr(args, "paste_back", False):
        raise ValueError(f"{overlap[0]} does not apply to --paste-back (it renders after generation); leave it out")
    if overlap and mode == Mode.V2A and not getattr(args, "rerender_face", False):
        raise ValueError(f"{overlap[0]}: V2A keeps the clip's own frames, nothing is rendered; add --rerender-face")


class _Progress:
    """A one-line progress display on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int, stage: str, preview=None) -> None:
        now = time.perf_counter()
        if self.quiet or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{stage:>9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a device name (use cpu, cuda, cuda:N, mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but this PyTorch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 …")
    if device.type == "mps" and not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
        raise ValueError(
            "--device mps was asked for, but this PyTorch has no usable MPS (Apple-silicon GPU) support; "
            "use --device cpu (or auto)"
        )
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: only cpu, cuda, cuda:N and mps are supported")
    return device


def _pick_dtype(name: str, device):
    import torch

    from talker_core.weights.loaders import check_precision

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, DTYPES[name])
    try:
        check_precision(device, dtype)
    except ValueError as exc:
        raise ValueError(f"--dtype {name}: {exc}") from exc
    return dtype


def _texts(args) -> list[str]:
    if args.text_file:
        if args.text:
            raise ValueError("give --text or --text-file, not both")
        path = Path(args.text_file)
        try:
            return [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as exc:
            raise ValueError(f"--text-file {path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    return list(args.text or [""])


def _names():
    from talker_core.pipeline import InputNames

    return InputNames(
        text="--text",
        voice="--ref-audio",
        face="--ref-video or --ref-image",
        forced_speech="--drive-audio",
        forced_motion="--drive-video",
        speech_only="--speech-only",
    )


def _mode(args) -> str:
    from talker_core.pipeline import Mode

    return Mode.from_inputs(
        speech_only=bool(args.speech_only),
        forced_speech=bool(args.drive_audio),
        forced_motion=bool(args.drive_video),
        names=_names(),
    )


def _check_inputs(args, mode: str) -> None:
    from talker_core.pipeline import Mode

    checks.check_input_files(args)
    if args.ref_video and args.ref_image:
        raise ValueError("give --ref-video or --ref-image for the face, not both")
    Mode.check(
        mode,
        voice=bool(args.ref_audio),
        face=bool(args.ref_video or args.ref_image),
        forced_speech=bool(args.drive_audio),
        forced_motion=bool(args.drive_video),
        names=_names(),
    )
    out = Path(args.out)
    if mode == Mode.SPEECH and out.suffix.lower() != ".wav":
        raise ValueError(f"--speech-only writes audio: give an --out ending in .wav (got {out.name})")
    if mode != Mode.SPEECH and out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4 (got {out.name})")
    if args.render_chunk < 1:
        raise ValueError("--render-chunk must be at least 1")
    if getattr(args, "rerender_face", False) and mode != Mode.V2A:
        raise ValueError("--rerender-face is for V2A (--drive-video) only")
    _check_video_options(args, mode)


def _outputs(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i + 1}{out.suffix}") for i in range(count)]


@dataclass
class Plan:
    """What one ``generate`` invocation will do, checked before any model is loaded."""

    mode: str
    requests: list  # TalkRequest, one per output
    need: set  # model kinds to load


def plan(args: argparse.Namespace) -> Plan:
    """Check the arguments and build the requests (raises ValueError naming the option at fault)."""
    from talker_core import pipeline as P
    from talker_core.cli import features

    mode = _mode(args)
    features.apply_demo_defaults(args, mode)
    _check_inputs(args, mode)
    texts = _texts(args)
    seeds = list(args.seed or [0])
    requests = []
    for text in texts:
        for seed in seeds:
            requests.append(
                P.TalkRequest(
                    text=text,
                    mode=mode,
                    seed=seed,
                    **{name: getattr(args, name) for name in _TABLE_OPTIONS},
                )
            )
    if mode in (P.Mode.T2AV, P.Mode.SPEECH):
        for text in texts:
            reason = P.unspeakable_reason(text)
            if reason is not None:
                raise ValueError(f"{'--text-file' if args.text_file else '--text'}: {reason}; give the words to speak")
    need = {"talker", "whisperx_vae"}
    if args.ref_audio:
        need.add("speaker")
    if mode != P.Mode.SPEECH:
        need.add("liax")
    return Plan(mode, requests, need)


class Models:
    """The model files of one folder on one device, each loaded on first use and then kept."""

    def __init__(self, models_dir, device: str = "auto", dtype: str = "auto", attn: str = "sdpa"):
        from talker_core.weights import loaders

        self.dir = Path(models_dir)
        self.found = loaders.find_models(self.dir)
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self.attn = attn
        self._loaded: dict = {}

    def require(self, need) -> None:
        """Raise ValueError listing what is missing when a needed model file is not in the folder."""
        from talker_core.weights import loaders

        missing = {k: v for k, v in self.found.items() if k in need}
        if any(v is None for v in missing.values()):
            raise ValueError(loaders.missing_models_message(self.dir, missing))

    def get(self, kind: str):
        if kind not in self._loaded:
            import torch

            from talker_core.weights import loaders

            self.require({kind})
            path, device, dtype = self.found[kind], self.device, self.dtype
            assert path is not None  # require() raised otherwise
            log.info("loading %s from %s on %s (%s)", kind, path, device, dtype)
            if kind == "talker":
                model = loaders.load_talker(path, device=device, dtype=dtype, attn_implementation=self.attn)
            elif kind == "whisperx_vae":
                model = loaders.load_whisperx_vae(path, device=device, dtype=torch.float32)
            elif kind == "speaker":
                model = loaders.load_speaker_encoder(path, device=device)
            elif kind == "liax":
                model = loaders.load_liax(path, device=device, dtype=dtype)
            else:
                raise ValueError(f"unknown model kind {kind!r}")
            self._loaded[kind] = model
        return self._loaded[kind]


def read_inputs(args: argparse.Namespace, mode: str) -> dict:
    """Decode every reference and driving file (no model needed): a bad file is reported before any model loads."""
    from talker_core import media
    from talker_core import pipeline as P
    from talker_core.types import FPS

    got: dict = {}
    if args.ref_audio:
        got["ref_audio"] = media.load_audio(args.ref_audio, max_seconds=P.MAX_REFERENCE_SECONDS)
    if args.ref_image:
        got["ref_image"] = media.load_image(args.ref_image)
    elif args.ref_video:
        # Only the frames the request uses: the first (identity) and the prefix.
        prefix_s = args.prefix_seconds if not args.ref_motion else 0.0
        got["ref_frames"], _ = media.load_video_frames(
            args.ref_video, max_seconds=max(prefix_s, 1.0 / FPS) + 0.2, target_fps=FPS
        )
        got["prefix_seconds"] = prefix_s
    if args.ref_motion:
        got["ref_motion"] = P.motion_from_reference_pt(args.ref_motion)
    if mode == P.Mode.A2V:
        wav, sr = got["drive_audio"] = media.load_audio(args.drive_audio, max_seconds=args.max_seconds)
        checks.warn_if_cut("--drive-audio", Path(args.drive_audio), args.max_seconds, wav.shape[-1] / sr)
    if mode == P.Mode.V2A:
        frames, _ = media.load_video_frames(args.drive_video, max_seconds=args.max_seconds, target_fps=FPS)
        checks.warn_if_cut("--drive-video", Path(args.drive_video), args.max_seconds, frames.shape[0] / FPS)
        got["drive_frames"] = frames
    return got


def encode_inputs(args: argparse.Namespace, mode: str, models: Models, hooks, decoded: Optional[dict] = None) -> dict:
    """Reference and driving media -> the conditioning keyword arguments of :func:`pipeline.generate`.

    ``decoded`` is what :func:`read_inputs` returned (read here when not given).
    """
    from talker_core import pipeline as P
    from talker_core.cli.features import clip_crop, face_options
    from talker_core.types import FPS

    decoded = read_inputs(args, mode) if decoded is None else decoded
    liax = models.get("liax") if mode != P.Mode.SPEECH else None
    voice = face = forced_speech = forced_motion = None
    reference_motion = decoded.get("ref_motion")
    if "ref_audio" in decoded:
        voice = P.encode_voice(models.get("whisperx_vae"), models.get("speaker"), *decoded["ref_audio"])
    if "ref_image" in decoded:
        face = P.encode_face(liax, decoded["ref_image"], **face_options(args))
    elif "ref_frames" in decoded:
        frames, prefix_s = decoded["ref_frames"], decoded["prefix_seconds"]
        box = clip_crop(args, frames, "--ref-video")  # one square for the whole clip
        face = P.encode_face(liax, frames[0], crop=box, name="--ref-video")
        if prefix_s > 0:
            used = frames[: max(1, int((prefix_s + 1e-6) * FPS))]  # the prefix only: the rest was read ahead
            reference_motion = P.encode_motion(liax, used, FPS, max_seconds=prefix_s + 1e-6, hooks=hooks, crop=box)
    if "drive_audio" in decoded:
        wav, sr = decoded["drive_audio"]
        forced_speech = P.encode_speech(models.get("whisperx_vae"), wav, sr, max_seconds=args.max_seconds, hooks=hooks)
    if "drive_frames" in decoded:
        frames = decoded["drive_frames"]
        box = clip_crop(args, frames, "--drive-video")
        forced_motion = P.encode_motion(liax, frames, FPS, max_seconds=args.max_seconds, hooks=hooks, crop=box)
        if face is None:
            face = P.encode_face(liax, frames[0], crop=box, name="--drive-video")
    return dict(
        voice=voice,
        face=face,
        reference_motion=reference_motion,
        forced_speech=forced_speech,
        forced_motion=forced_motion,
    )


def generate_one(
    models: Models,
    request,
    inputs: dict,
    out_path: Path,
    render_chunk: int,
    hooks,
    keep_frames=None,
    writer=None,
    video: Optional[VideoSettings] = None,
):
    """Generate one request and write it to ``out_path`` (.wav for speech, else .mp4); returns the TalkResult.

    A rendered clip is streamed: generation → LIA-X rendering → the MP4 encoder, a batch at a time
    (:func:`~talker_core.pipeline.stream_talk` + :func:`~talker_core.pipeline.stream_to_mp4`), so memory
    stays flat in the clip's length; ``video.overlap`` (None: on when LIA-X is on a GPU) renders while
    later patches are generated. ``video`` also sets the MP4's crf, preset and fragmented layout.

    ``writer(face)`` gives the ``compose`` of :func:`talker_core.pipeline.render_to_mp4` (paste-back:
    each rendered batch composited into the original picture before it is written; generation first,
    then rendering).

    ``keep_frames`` (V2A): the driving clip's frames at 25 fps, written as they are under the new speech
    (without the reference prefix) instead of rendering the face through LIA-X.
    """
    from talker_core import media
    from talker_core import pipeline as P
    from talker_core.types import FPS, SAMPLE_RATE, SpeechLatents

    video = video or VideoSettings()
    vae = models.get("whisperx_vae")
    if request.mode != P.Mode.SPEECH and keep_frames is None and writer is None:
        # frames straight into the encoder a batch at a time: memory flat in the clip's length
        stream = P.stream_talk(
            models.get("talker"),
            vae,
            models.get("liax"),
            request,
            hooks=hooks,
            render_chunk=render_chunk,
            overlap=video.overlap,
            **inputs,
        )
        with checks.writing(out_path):
            return P.stream_to_mp4(stream, out_path, **video.writer_options()).result

    result = P.generate(models.get("talker"), request, hooks=hooks, **inputs)
    speech = SpeechLatents(result.speech.latents[result.prefix_frames :]) if keep_frames is not None else result.speech
    with checks.writing(out_path):
        if request.mode == P.Mode.SPEECH:
            media.write_wav(out_path, P.decode_speech(vae, speech), SAMPLE_RATE)
        elif keep_frames is not None:
            audio = P.decode_speech(vae, speech)
            media.write_mp4(
                out_path,
                keep_frames[: speech.frames],
                FPS,
                audio=audio,
                sample_rate=SAMPLE_RATE,
                **video.writer_options(),
            )
        else:  # paste-back: each rendered batch composited into the original picture, then encoded
            assert result.motion is not None  # joint modes return motion
            compose = writer(inputs["face"])
            try:
                P.render_to_mp4(
                    models.get("liax"),
                    inputs["face"],
                    result.motion,
                    out_path,
                    vae=vae,
                    speech=speech,
                    chunk=render_chunk,
                    hooks=hooks,
                    compose=compose,
                    **video.writer_options(),
                )
            finally:
                compose.close()
    return result


def run(args: argparse.Namespace) -> int:
    from talker_core import pipeline as P
    from talker_core.cli import features
    from talker_core.types import FPS

    if args.dialogue:
        given = _given_video_options(args)
        if given:
            raise ValueError(f"{given[0]} does not apply to --dialogue yet (it writes with the default settings)")
        return features.run_dialogue(args)
    job = plan(args)
    outputs = _outputs(Path(args.out), len(job.requests))
    checks.check_outputs(outputs, args)
    models = Models(args.models, args.device, args.dtype, args.attn)
    models.require(job.need)
    hooks = P.Hooks(progress=_Progress(args.quiet))
    started = time.perf_counter()
    decoded = read_inputs(args, job.mode)  # every input decoded before any model loads
    for kind in sorted(job.need):
        models.get(kind)
    inputs = encode_inputs(args, job.mode, models, hooks, decoded)
    load_seconds = time.perf_counter() - started
    keep = decoded["drive_frames"] if job.mode == P.Mode.V2A and not args.rerender_face else None

    for request, out_path in zip(job.requests, outputs, strict=True):
        t0 = time.perf_counter()
        result = generate_one(
            models,
            request,
            inputs,
            out_path,
            args.render_chunk,
            hooks,
            keep_frames=keep,
            writer=features.video_writer(args),
            video=video_settings(args),
        )
        wall = time.perf_counter() - t0
        seconds = result.speech.frames / FPS
        print(
            f"{out_path}: {seconds:.2f} s ({result.generated_seconds:.2f} s generated, "
            f"{result.segments} segment{'s' if result.segments != 1 else ''}) in {wall:.1f} s wall, "
            f"RTF {wall / max(seconds, 1e-9):.2f} [{job.mode}, seed {request.seed}]"
        )
    log.info("model loading and reference encoding took %.1f s", load_seconds)
    return 0
