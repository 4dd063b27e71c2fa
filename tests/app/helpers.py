"""Small helpers shared by the app tests."""
from __future__ import annotations

from shiboken6 import isValid


def wait_worker(qtbot, worker, timeout: int) -> None:
    """Wait until a worker thread has finished, then let its queued result signals run.

    Polls rather than waiting for ``finished``: a handler connected before the start (the main
    window's) may already have deleted the worker, and a signal connected after the start can be
    missed, which left a finished run looking like a hung one."""
    qtbot.waitUntil(lambda: not isValid(worker) or worker.isFinished(), timeout=timeout)
    qtbot.wait(50)
