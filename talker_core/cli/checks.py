"""Checks the command line makes before any model loads: inputs readable, outputs writable and distinct.

Everything here runs in well under a second, so a wrong path, an unwritable folder or an output that
would replace one of the inputs is reported at once, not after minutes of generation. Messages name the
command-line flag (``--out``, ``--ref-audio``...) and the path as the user typed it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

INPUT_FILES = ("ref_audio", "ref_video", "ref_image", "ref_motion", "drive_audio", "drive_video")  # media inputs
INPUT_FLAGS = (*INPUT_FILES, "text_file")


def flag_name(attr: str) -> str:
    return "--" + attr.replace("_", "-")


def given_inputs(args) -> list[tuple[str, Path]]:
    """(flag, path) of every input file named on the command line."""
    return [(flag_name(a), Path(getattr(args, a)).expanduser()) for a in INPUT_FLAGS if getattr(args, a, None)]


def check_input_files(args) -> None:
    """Each input path is an existing, non-empty, readable regular file (folder / pipe / device / missing told apart)."""
    from talker_core.media._common import describe_non_file

    for flag, path in given_inputs(args):
        problem = describe_non_file(path)
        if problem is not None:
            raise ValueError(f"{flag} {path} {problem}; give the path of a file")
        if path.stat().st_size == 0:
            raise ValueError(f"{flag} {path} is empty (0 bytes); give a complete file")
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise ValueError(f"{flag} {path} cannot be read ({exc.strerror or exc}); make it readable") from exc


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file (links, hard links, letter case on case-insensitive disks, '..')."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist: then they cannot be the same existing file
        return False


def _nearest_existing_folder(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_writable_folder(flag: str, out: Path) -> None:
    folder = _nearest_existing_folder(out.absolute())
    if not folder.is_dir():
        raise ValueError(f"{flag} {out}: {folder} is a file, not a folder; choose an output path inside a folder")
    try:  # the only reliable test (permissions, read-only disks, quotas, root squash): create and remove a file
        fd, probe = tempfile.mkstemp(prefix=".talker-write-test-", dir=folder)
    except OSError as exc:
        raise ValueError(
            f"{flag} {out}: the folder {folder} is not writable ({exc.strerror or exc}); choose a writable location"
        ) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_outputs(outputs: Sequence[Path], args, flag: str = "--out") -> None:
    """Every output path is a writable file location that is none of the input files."""
    from talker_core.media._common import describe_non_file

    inputs = given_inputs(args)
    for out in outputs:
        out = Path(out).expanduser()
        for in_flag, in_path in inputs:
            if _same_file(out, in_path):
                raise ValueError(
                    f"{flag} {out} is the same file as {in_flag} {in_path}: writing it would replace your input; "
                    "choose another output name"
                )
        problem = describe_non_file(out)
        if out.exists() and problem is not None:
            if out.is_dir():
                raise ValueError(f"{flag} {out} is a folder; give a file name, e.g. {out / 'out.mp4'}")
            raise ValueError(f"{flag} {out} {problem}; give the path of a regular file to write")
        _check_writable_folder(flag, out)


_TEMP_NAME = re.compile(r"\S*\.tmp\.[A-Za-z0-9]+")


@contextlib.contextmanager
def writing(out: Path, flag: str = "--out") -> Iterator[None]:
    """Errors while writing ``out`` become one line naming ``flag`` and ``out``, never an internal temporary name."""
    try:
        yield
    except OSError as exc:
        raise ValueError(
            f"{flag} {out} could not be written ({exc.strerror or exc}); choose a writable location"
        ) from exc
    except ValueError as exc:
        text = _TEMP_NAME.sub(str(out), str(exc))
        if text == str(exc):
            raise
        raise ValueError(text) from exc


def warn_if_cut(flag: str, path: Path, max_seconds: float, decoded_seconds: float) -> None:
    """Warn when decoding stopped at ``--max-seconds`` before the end the file's header states."""
    from talker_core.media import MediaError, probe_media

    if decoded_seconds < max_seconds - 0.04:
        return  # the whole file (or all that could be decoded, which the reader reported) is used
    try:
        info = probe_media(path)
    except MediaError:  # pragma: no cover - it was just decoded
        return
    durations = [s["duration"] for s in info["streams"] if s["type"] in ("audio", "video") and s["duration"]]
    seconds = max(durations) if durations else info["duration"]
    if seconds is not None and seconds > max_seconds + 0.04:
        log.warning(
            "%s %s is %.2f s long; only the first %.2f s are used (--max-seconds). Raise --max-seconds to use all of it",
            flag,
            path,
            seconds,
            max_seconds,
        )
