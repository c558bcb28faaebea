"""SIGTERM and SIGHUP stop a command as Ctrl-C does: what is half-written is removed, one line says so.

Why: ``timeout``, ``docker stop``, a closed SSH terminal and process supervisors send SIGTERM or SIGHUP, whose default
action kills Python at once: no ``finally`` runs, so a video's ``<name>.partial.mp4`` (gigabytes for a long clip) was
left behind without a word, while Ctrl-C removed it and said so. Here both raise :class:`Terminated`, a
``KeyboardInterrupt``, so every clean-up written for Ctrl-C runs for them too. A signal the command was started with
ignored (SIGHUP under ``nohup``) stays ignored.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: What :func:`stop_signals_as_interrupts` turns into :class:`Terminated`.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a command runs; its exit status is 128 + the signal's number (143, 129)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


def raises_terminated(signum: int) -> bool:
    """Whether ``signum`` is turned into :class:`Terminated` now (:func:`stop_signals_as_interrupts` is active)."""
    return signal.getsignal(signum) is _raise_terminated


def stop_exception(signum: int) -> KeyboardInterrupt:
    """The exception a stop by ``signum`` raises: KeyboardInterrupt for SIGINT, :class:`Terminated` for the rest."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


@contextmanager
def stop_signals_as_interrupts(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While the block runs, ``signals`` raise :class:`Terminated` in the main thread, where each still has its
    default action (an ignored or handled one is left as it is); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in signals:
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped_line(exc: KeyboardInterrupt, unfinished: str) -> int:
    """Print the one line for a stop on stderr (``interrupted (Ctrl-C):`` or ``terminated (SIGTERM):`` then
    ``unfinished``, what was not written) and return its exit status: 130, 143 or 129."""
    if isinstance(exc, Terminated):
        print(f"terminated ({exc.name}): {unfinished}", file=sys.stderr)
        return exc.exit_status
    print(f"interrupted (Ctrl-C): {unfinished}", file=sys.stderr)
    return 130


def run_stoppable(run: Callable[[], int], unfinished: str) -> int:
    """``run()``'s exit status; stopped by Ctrl-C, SIGTERM or SIGHUP, :func:`stopped_line`'s."""
    with stop_signals_as_interrupts():
        try:
            return run()
        except KeyboardInterrupt as exc:
            return stopped_line(exc, unfinished)


def stoppable(main: Callable[..., int]) -> Callable[..., int]:
    """A command's ``main`` run with SIGTERM and SIGHUP raising :class:`Terminated`, so that its own Ctrl-C
    handling (clean-up, then :func:`stopped_line`) runs for them too: before, ``timeout`` or ``docker stop`` killed
    the export and calibration commands at once, their ``.partial`` files left behind without a word."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        with stop_signals_as_interrupts():
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt as exc:  # outside the command's own handling: while its libraries load
                return stopped_line(exc, "stopped while starting; nothing was written")

    return run
