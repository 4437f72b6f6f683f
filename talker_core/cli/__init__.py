"""``python -m talker_core <command> ...``: the command-line entry point.

Commands are listed in :data:`COMMANDS` by name, each with a one-line help and
the module holding its two functions, ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the command being run is imported, so
``--help`` and light commands stay fast and a command whose optional
dependencies are missing does not break the others. To add a command (e.g.
``generate`` in :mod:`talker_core.pipeline`, ``download`` in
:mod:`talker_core.weights.download`), add one :class:`Command` line to
:data:`COMMANDS`.

Errors a user can act on (a bad file, a bad argument, a missing model) are
printed as one line without a traceback and give exit status 1; ``--traceback``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

__all__ = ["Command", "COMMANDS", "main"]

log = logging.getLogger(__name__)

PROG = "python -m talker_core"


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line and where its ``add_arguments``/``run`` functions live."""

    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def load(self):
        mod = importlib.import_module(self.module)
        return getattr(mod, self.add_arguments), getattr(mod, self.run)


COMMANDS: dict[str, Command] = {
    "make-debug-models": Command(
        "write a tiny random-weight model set in the published formats and layout",
        __name__,
        "_add_debug_arguments",
        "_run_debug",
    ),
    "convert": Command(
        "convert a published model file to safetensors (tensors + config, no pickle)",
        __name__,
        "_add_convert_arguments",
        "_run_convert",
    ),
    "generate": Command("generate a talking video (T2AV, A2V, V2A) or speech", "talker_core.cli.generate"),
    "batch": Command("run many jobs from a JSON Lines file, resumable (locally or on Ray)", "talker_core.cli.batch"),
    "download": Command("fetch the released model files into a models folder", "talker_core.weights.download"),
    "check-models": Command(
        "check a models folder: what each file holds and whether it loads", "talker_core.cli.check_models"
    ),
}


# --------------------------------------------------------------------------- built-in commands


def _add_debug_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the model set into (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")


def _run_debug(args: argparse.Namespace) -> int:
    from talker_core.weights.debug_models import write_debug_models

    paths = write_debug_models(args.out_dir, seed=args.seed)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    from talker_core.weights.components import COMPONENTS, KINDS

    folders = " or ".join(f"the {c.release} folder" for c in COMPONENTS.values() if c.is_folder)
    parser.add_argument("src", metavar="SRC", help=f"published file (or {folders})")
    parser.add_argument(
        "dst",
        metavar="DST",
        help="output .safetensors file, or a folder (for a model folder: receives its weights file and "
        "the tokenizer files)",
    )
    parser.add_argument(
        "--kind", choices=KINDS, default=None, help="which component SRC holds (default: detected from its content)"
    )


def _run_convert(args: argparse.Namespace) -> int:
    from talker_core.weights.loaders import convert_to_safetensors

    out = convert_to_safetensors(args.src, args.dst, kind=args.kind)
    print(out)
    return 0


# --------------------------------------------------------------------------- entry point


def _build_parser(selected: Optional[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Talker-T2AV without ComfyUI.")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if name == selected:
            add_arguments, run = cmd.load()
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def _selected_command(argv: Sequence[str]) -> Optional[str]:
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).strip().splitlines() if part.strip())
    return text or type(exc).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv
    try:
        parser = _build_parser(_selected_command(argv))
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except (ImportError, AttributeError) as exc:
        if show_traceback:
            raise
        print(f"error: this command is not available ({_one_line(exc)})", file=sys.stderr)
        return 1

    if args.verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    elif not logging.getLogger().handlers:  # warnings (truncated or clipped inputs...) as one plain line each
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    from talker_core.cli.signals import Terminated, exit_status, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM: temporary files are already removed by the writers
        print("stopped (SIGTERM)" if isinstance(exc, Terminated) else "interrupted", file=sys.stderr)
        return exit_status(exc)
    except Exception as exc:  # one line for the user; --traceback for developers
        if args.traceback:
            raise
        from talker_core.checkpoint import CheckpointError
        from talker_core.weights.download import DownloadError

        known = isinstance(exc, (CheckpointError, DownloadError, ValueError, OSError))
        prefix = "error" if known else f"error ({type(exc).__name__})"
        print(f"{prefix}: {_one_line(exc)}", file=sys.stderr)
        return 1
