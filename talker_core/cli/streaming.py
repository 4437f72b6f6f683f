"""The command line's video output: generation → (optionally overlapped) rendering → MP4 encoder,
chunk by chunk (:func:`talker_core.pipeline.stream_talk`), so memory stays flat in the clip's length."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

OVERLAP = {"auto": None, "on": True, "off": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("video output")
    g.add_argument(
        "--overlap",
        default="auto",
        choices=list(OVERLAP),
        help="render while generating (auto: on when LIA-X runs on a GPU, where it helps; off on a CPU)",
    )
    g.add_argument(
        "--fragmented",
        action="store_true",
        help="write a fragmented MP4 that a player can open while it is being written (removed if the run fails)",
    )
    g.add_argument("--crf", type=int, default=18, help="x264 quality, 0 (lossless) – 51; default 18")
    g.add_argument("--preset", default="medium", help="x264 preset, ultrafast … veryslow (default medium)")


def check_arguments(args: argparse.Namespace) -> None:
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be 0–51, got {args.crf}")


def write_video(args, bundle, vae, liax, request, out_path, hooks, **inputs):
    """Stream one request into ``out_path``; returns the :class:`TalkResult`."""
    from talker_core import pipeline as P

    stream = P.stream_talk(
        bundle, vae, liax, request, hooks=hooks, render_chunk=args.render_chunk, overlap=OVERLAP[args.overlap], **inputs
    )
    written = P.stream_to_mp4(stream, out_path, crf=args.crf, preset=args.preset, fragmented=args.fragmented)
    t = written.times
    log.info(
        "%s: first audio after %.2f s, first frame after %.2f s, %d frames in %.1f s (overlap %s)",
        out_path,
        t.first_audio or 0.0,
        t.first_frame or 0.0,
        written.frames,
        t.done or 0.0,
        "on" if stream.overlap else "off",
    )
    return written.result
