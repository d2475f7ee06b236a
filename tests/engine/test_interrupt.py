"""Ctrl-C while a question waits on the terminal answers it; outside the question it still stops the command.

The signal handling of whole runs (safe points, grace timer, exit codes) is tested in tests/test_faults.py.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from scanlearn.engine.interrupt import handle_signals, Interrupted, keyboard_interrupts, stop_requested

pytestmark = pytest.mark.timeout(60)


def ctrl_c() -> None:
    """Send this process SIGINT and give the handler time to run."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)


def test_ctrl_c_at_a_question_raises_there_and_leaves_the_command_running():
    with pytest.raises(Interrupted), handle_signals():
        handler = signal.getsignal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt), keyboard_interrupts():
            ctrl_c()
        assert stop_requested() is None and signal.getsignal(signal.SIGINT) is handler
        ctrl_c()
