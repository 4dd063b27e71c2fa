"""Small helpers shared by the app tests."""
from __future__ import annotations


def wait_worker(qtbot, worker, timeout: int) -> None:
    """Wait for a worker thread's ``finished`` signal, then let its queued result signals run."""
    if not worker.isFinished():
        with qtbot.waitSignal(worker.finished, timeout=timeout):
            pass
    qtbot.wait(50)
