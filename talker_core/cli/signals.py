"""SIGTERM handled like Ctrl-C: the same unwinding, so every writer removes its temporary files.

A process manager, ``docker stop`` or a host shutting down sends SIGTERM; Python's default is to die at
once, leaving half-written ``.tmp`` files behind. Inside :func:`sigterm_as_interrupt` SIGTERM raises
:class:`Terminated`, a :class:`KeyboardInterrupt`, so ``finally`` blocks and ``except KeyboardInterrupt``
cleanups run exactly as for Ctrl-C. The command then exits with 128 + the signal number (130 for
Ctrl-C, 143 for SIGTERM), the shell's convention for a process stopped by a signal.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C."""

    signum = int(signal.SIGTERM)


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated(f"stopped by signal {signum}")


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the command (SIGINT for a plain KeyboardInterrupt)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (elsewhere signals are left alone)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
