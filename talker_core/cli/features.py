"""``generate`` options for face framing, paste-back, dialogue and the demo references.

Kept apart from :mod:`talker_core.cli.generate` so that its call sites stay one line each.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def _crop_box(text: str) -> tuple[int, int, int]:
    try:
        parts = [int(p) for p in text.replace(" ", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or parts[2] < 1 or parts[0] < 0 or parts[1] < 0:
        raise argparse.ArgumentTypeError(f"expected X,Y,SIZE (non-negative integers, SIZE ≥ 1), got {text!r}")
    return parts[0], parts[1], parts[2]


def _speaker(text: str) -> tuple[str, str, str]:
    tag, sep, rest = text.partition("=")
    files = rest.split(",")
    if not sep or not tag.strip() or len(files) != 2 or not all(f.strip() for f in files):
        raise argparse.ArgumentTypeError(
            f"expected TAG=VOICE_FILE,FACE_FILE (e.g. A=alice.wav,alice.png), got {text!r}"
        )
    return tag.strip(), files[0].strip(), files[1].strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from talker_core.media.framing import FRAMING_MODES
    from talker_core.media.paste import BACKGROUND_ENDS
    from talker_core.pipeline.dialogue import LAYOUTS

    f = parser.add_argument_group("face framing and paste-back")
    f.add_argument(
        "--framing",
        choices=FRAMING_MODES,
        default="detect",
        help="detect: find the face and frame head and shoulders as LIA-X was trained (centre crop when no "
        "face is found); centre: the centred square (default detect)",
    )
    f.add_argument("--crop", type=_crop_box, metavar="X,Y,SIZE", help="use this square of the face image instead")
    f.add_argument(
        "--paste-back",
        action="store_true",
        help="composite the rendered face back into the original image or --ref-video at full resolution",
    )
    f.add_argument(
        "--background-end",
        choices=BACKGROUND_ENDS,
        default="loop",
        help="paste-back into --ref-video shorter than the result: loop it (default) or hold its last frame; "
        "a longer one is cut",
    )
    f.add_argument("--feather", type=float, default=0.1, help="paste-back seam width, share of the face square (0.1)")
    f.add_argument("--no-colour-match", action="store_true", help="paste-back without matching the colours")
    d = parser.add_argument_group("dialogue")
    d.add_argument("--dialogue", metavar="SCRIPT", help="a script of 'A: …' / 'B: …' turns (UTF-8 text file)")
    d.add_argument(
        "--speaker",
        type=_speaker,
        action="append",
        default=None,
        metavar="TAG=VOICE,FACE",
        help="a dialogue speaker: its tag, voice recording and face image (repeat per speaker)",
    )
    d.add_argument("--layout", choices=LAYOUTS, default="side_by_side", help="dialogue layout (default side_by_side)")
    d.add_argument(
        "--carry-seconds",
        type=float,
        default=2.0,
        help="dialogue: seconds of a speaker's previous turn fed to their next (prosody carries over; 2)",
    )


def face_options(args) -> dict:
    """Keyword arguments of :func:`talker_core.pipeline.encode_face` from the command line."""
    return {"framing": getattr(args, "framing", "detect"), "crop": getattr(args, "crop", None)}


def clip_crop(args, frames, name: str):
    """One square for every frame of a face clip (--ref-video, --drive-video): detected, or --crop / --framing."""
    from talker_core.media.framing import choose_clip_crop

    return choose_clip_crop(frames, name=name, **face_options(args))


def video_writer(args):
    """The ``writer`` of :func:`talker_core.cli.generate.generate_one` with --paste-back, else None:
    ``writer(face)`` gives the :class:`~talker_core.media.paste.Compositor` that pastes each rendered
    batch into the original picture (--ref-image) or the frames of --ref-video, decoded as they are
    needed, so memory stays flat in the clip's length."""
    if not getattr(args, "paste_back", False):
        return None
    from talker_core.media.paste import Compositor

    def compose_for(face):
        from talker_core import media

        if face is None or face.crop is None:
            raise ValueError("--paste-back needs the face's crop box; encode the face from --ref-image or --ref-video")
        if args.ref_image:
            background = media.load_image(args.ref_image)
        elif args.ref_video:
            background = args.ref_video
        else:
            raise ValueError("--paste-back needs the original picture: give --ref-image or --ref-video")
        return Compositor(
            background,
            face.crop,
            args.feather,
            not args.no_colour_match,
            getattr(args, "background_end", "loop"),
        )

    return compose_for


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def apply_demo_defaults(args, mode: str) -> None:
    """Check the paste-back options, and fill --ref-audio / --ref-image with the downloaded demo media when a
    mode needs them and none is given."""
    from talker_core.pipeline import Mode
    from talker_core.weights.download import find_demo

    if getattr(args, "dialogue", None):
        return
    paste_back = getattr(args, "paste_back", False)
    if paste_back and mode == Mode.SPEECH:
        raise ValueError("--paste-back composites video frames; it cannot be combined with --speech-only")
    if paste_back and mode == Mode.V2A and not (args.ref_image or args.ref_video):
        raise ValueError("--paste-back needs the original picture: give --ref-image or --ref-video")
    if not 0.0 <= getattr(args, "feather", 0.1) <= 0.5:
        raise ValueError(f"--feather must be in 0..0.5, got {args.feather}")
    demo = find_demo(args.models)
    need_voice = mode in (Mode.T2AV, Mode.SPEECH, Mode.V2A) and not args.ref_audio
    need_face = mode in (Mode.T2AV, Mode.A2V) and not (args.ref_video or args.ref_image)
    for needed, key, flag in ((need_voice, "voice", "ref_audio"), (need_face, "face", "ref_image")):
        if not needed:
            continue
        if demo[key] is None:
            raise ValueError(
                f"mode {mode} needs --{flag.replace('_', '-')}; give one, or run `python -m talker_core download "
                f"--models {args.models}` once to get the demo voice and face (the authors' samples)"
            )
        setattr(args, flag, str(demo[key]))
        _say(f"no --{flag.replace('_', '-')} given: using the demo {key} {demo[key]} (the authors' sample)")


def run_dialogue(args) -> int:
    """``generate --dialogue SCRIPT``: every speaker's turns, one MP4."""
    import time

    import torch

    from talker_core import media
    from talker_core import pipeline as P
    from talker_core.cli.generate import _pick_device, _pick_dtype, _Progress
    from talker_core.pipeline.dialogue import Speaker, dialogue_to_mp4, generate_dialogue, parse_script
    from talker_core.weights import loaders

    script = Path(args.dialogue)
    if not script.is_file():
        raise ValueError(f"--dialogue {script}: no such file")
    if not args.speaker:
        raise ValueError("--dialogue needs a --speaker TAG=VOICE,FACE for every speaker of the script")
    for tag, voice_file, face_file in args.speaker:
        for f in (voice_file, face_file):
            if not Path(f).is_file():
                raise ValueError(f"--speaker {tag}: {f}: no such file")
    if len({t for t, _, _ in args.speaker}) != len(args.speaker):
        raise ValueError("--speaker: each tag may be given once")
    turns = parse_script(script.read_text(encoding="utf-8"), [t for t, _, _ in args.speaker])
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4 (got {out.name})")
    found = loaders.find_models(Path(args.models))
    missing = {k: found[k] for k in loaders.KINDS}
    if any(v is None for v in missing.values()):
        raise ValueError(loaders.missing_models_message(Path(args.models), missing))
    device = _pick_device(args.device)
    dtype = _pick_dtype(args.dtype, device)
    hooks = P.Hooks(progress=_Progress(args.quiet))
    t0 = time.perf_counter()
    paths = {k: v for k, v in missing.items() if v is not None}  # all four, checked above
    bundle = loaders.load_talker(paths["talker"], device=device, dtype=dtype, attn_implementation=args.attn)
    vae = loaders.load_whisperx_vae(paths["whisperx_vae"], device=device, dtype=torch.float32)
    speaker_encoder = loaders.load_speaker_encoder(paths["speaker"], device=device)
    liax = loaders.load_liax(paths["liax"], device=device, dtype=dtype)
    speakers = {}
    for tag, voice_file, face_file in args.speaker:
        wav, sr = media.load_audio(voice_file, max_seconds=P.MAX_REFERENCE_SECONDS)
        voice = P.encode_voice(vae, speaker_encoder, wav, sr)
        face = P.encode_face(liax, media.load_image(face_file), name=f"speaker {tag} face", **face_options(args))
        speakers[tag] = Speaker(voice, face)
    request = P.TalkRequest(
        seed=(args.seed or [0])[0],
        steps=args.steps,
        cfg=args.cfg,
        temperature=args.temperature,
        max_seconds=args.max_seconds,
        stop_threshold=args.stop_threshold,
    )
    dialogue = generate_dialogue(bundle, vae, turns, speakers, request, carry_seconds=args.carry_seconds, hooks=hooks)
    dialogue_to_mp4(liax, dialogue, speakers, out, args.layout, chunk=args.render_chunk, hooks=hooks)
    print(
        f"{out}: dialogue of {len(turns)} turn{'s' if len(turns) != 1 else ''}, {len(speakers)} speakers, {dialogue.seconds:.2f} s "
        f"({args.layout}) in {time.perf_counter() - t0:.1f} s wall"
    )
    return 0
