"""Stop cleanly on SIGINT/SIGTERM: checkpoint at a safe point, say so in one line, exit 130/143.

Inside ``handle_signals`` the first signal stops the run: at once outside training, and at the
next batch boundary during training (``training_safe_points``), where the rolling checkpoint
saves and raises ``Interrupted``. A second signal, or ``grace`` seconds without reaching a
safe point (a process stuck in native code), prints the same line and ends the process at once
with the same exit code. A watcher thread fed by ``signal.set_wakeup_fd`` does that, so it
works while the main thread is busy in code that released the GIL. While a question waits for
an answer on the terminal (``keyboard_interrupts``), Ctrl-C answers it instead of stopping.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Iterator

MESSAGE = "interrupted; rerun the same command to resume from the last checkpoint"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 60.0
_STOP_WATCHING = b"\0"


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the run (a BaseException, like KeyboardInterrupt, so nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(MESSAGE)
        self.signum = int(signum)
        self.exit_code = exit_code(signum)


@dataclass
class _State:
    """What the handlers share: the first signal seen and how many training loops are running."""

    active: bool = False
    signum: int | None = None
    training: int = 0
    previous: dict[int, Any] = field(default_factory=dict)


_STATE = _State()


def exit_code(signum: int) -> int:
    """The shell's code for death by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def stop_requested() -> int | None:
    """The signal that asked the run to stop, or None."""
    return _STATE.signum


def raise_if_stop_requested() -> None:
    """At a safe point: raise ``Interrupted`` when a signal asked the run to stop."""
    if _STATE.signum is not None:
        raise Interrupted(_STATE.signum)


@contextmanager
def training_safe_points() -> Iterator[None]:
    """While training runs, defer the first signal to the next batch boundary instead of stopping at once."""
    _STATE.training += 1
    try:
        yield
    finally:
        _STATE.training -= 1


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Record the request; stop at once unless a training loop will reach a safe point."""
    if _STATE.signum is None:
        _STATE.signum = signum
    if not _STATE.training:
        raise Interrupted(signum)


@contextmanager
def handle_signals(grace: float = GRACE_SECONDS, ending: bool = False) -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers and the watcher for the duration of a command (main thread only).

    ``ending``: the process ends with the command (the CLI), so once a signal stopped it, further signals are
    ignored instead of handed to the previous handler: the exit code stays the first signal's (130 / 143).
    """
    if threading.current_thread() is not threading.main_thread() or _STATE.active:
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    watcher = threading.Thread(target=_watch, args=(reader, grace), name="scanlearn-signals", daemon=True)
    _STATE.previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    _STATE.active, _STATE.signum = True, None
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    watcher.start()
    try:
        yield
    finally:
        _restore(previous_fd, ending)
        writer.send(_STOP_WATCHING)
        watcher.join(timeout=5)
        reader.close()
        writer.close()


@contextmanager
def keyboard_interrupts() -> Iterator[None]:
    """While a question waits on the terminal, Ctrl-C raises KeyboardInterrupt there (the question's answer) instead of
    stopping the command; SIGTERM still stops it. Outside ``handle_signals`` (main thread) Python's own handler does."""
    if not _STATE.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_fd = signal.set_wakeup_fd(-1)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.set_wakeup_fd(previous_fd, warn_on_full_buffer=False)


def _restore(previous_fd: int, ending: bool = False) -> None:
    """Put back the handlers and wakeup fd that were there before ``handle_signals`` (ignore signals instead when
    the process is ``ending`` because of one)."""
    stopping = ending and _STATE.signum is not None
    for signum, handler in _STATE.previous.items():
        signal.signal(signum, signal.SIG_IGN if stopping else handler)
    signal.set_wakeup_fd(previous_fd)
    _STATE.active, _STATE.signum, _STATE.previous = False, None, {}


def _watch(reader: socket.socket, grace: float) -> None:
    """Count signals from the wakeup fd; on the second one, or ``grace`` s after the first, end the process."""
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([reader], [], [], timeout)
        if not ready:
            _exit_now(_STATE.signum or signal.SIGTERM)
        received = reader.recv(64)
        if not received or _STOP_WATCHING in received:
            return
        for signum in (s for s in received if s in SIGNALS):
            if deadline is not None:
                _exit_now(signum)
            deadline = time.monotonic() + grace


def _exit_now(signum: int) -> None:
    """Print the interruption line and end the process without unwinding (the main thread may be stuck)."""
    os.write(2, f"scanlearn: {MESSAGE} (stopped immediately)\n".encode())
    os._exit(exit_code(signum))


def _reset_in_child() -> None:
    """In a forked child (e.g. a DataLoader worker): the parent's handlers and wakeup fd do not apply."""
    if _STATE.active:
        try:
            signal.set_wakeup_fd(-1)
            for signum, handler in _STATE.previous.items():
                signal.signal(signum, handler)
        except ValueError:
            pass
        _STATE.active, _STATE.signum, _STATE.training = False, None, 0


os.register_at_fork(after_in_child=_reset_in_child)
