"""Training in a child process, so nothing of it holds the UI process's GIL.

A training thread inside the app froze the window for up to 1.4 s on an idle 2-core machine
(3.4 s on a loaded one) at the end of a run: exporting the bundle, converting and checking the
ONNX model and writing predictions hold the GIL in long stretches, and so do the first epochs and
stage starts (tests/benchmarks/bench_gui_stall.py). In a child process the engine has its own
interpreter; the app only receives its events.

The child is started with the "spawn" method (a fresh interpreter on every platform, safe with
threads and CUDA, and what a frozen app supports with ``multiprocessing.freeze_support``). Engine
events are plain dataclasses and travel pickled through a queue; the outcome follows as one tuple.
This module imports no Qt: the child never loads it.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

# Outcome messages the child puts on the queue after the engine's events.
DONE, CANCELLED, ERROR = "done", "cancelled", "error"
PARENT_CHECK_SECONDS = 1.0
BACKGROUND_NICENESS = 10
NICENESS_ENV = "SEMBRIDGE_TRAINING_NICENESS"  # e.g. 0 where the run should compete as an equal (the tests)
BATCH_EVENT_SECONDS = 0.05  # the monitor shows at most 20 batch updates a second; fewer messages wake it less


def _cancel_when_asked(stop, token, parent_pid: int) -> None:
    """Child thread: forward the parent's stop request to the engine's cancel token; a parent that
    died (its process id gone) counts as a stop, so an orphaned run ends at its next batch."""
    while not stop.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != parent_pid:
            break
    token.cancel()


def lower_priority() -> None:
    """Let the window come first: on a busy machine the UI thread otherwise waits behind the
    training threads for a core (the run loses nothing when the machine is otherwise idle)."""
    import psutil

    niceness = int(os.environ.get(NICENESS_ENV, BACKGROUND_NICENESS))
    if niceness <= 0:
        return
    try:
        psutil.Process().nice(psutil.BELOW_NORMAL_PRIORITY_CLASS if os.name == "nt" else niceness)
    except (psutil.Error, OSError):
        pass  # not allowed here: train at normal priority


class EventSender:
    """The engine's callback in the child: every event goes to the app, except batch progress,
    sent at most every BATCH_EVENT_SECONDS (and always for an epoch's last batch)."""

    def __init__(self, events) -> None:
        from sembridge_engine.events import BatchProgress

        self.events, self.batch_type, self.last_batch = events, BatchProgress, 0.0

    def __call__(self, event: Any) -> None:
        if isinstance(event, self.batch_type) and event.done < event.total:
            now = time.monotonic()
            if now - self.last_batch < BATCH_EVENT_SECONDS:
                return
            self.last_batch = now
        self.events.put(event)


def run_training(config: Any, resume_dir: str | None, events, stop, parent_pid: int) -> None:
    """The child's entry point: train (or resume), sending every engine event, then the outcome."""
    lower_priority()
    from sembridge_engine import training
    from sembridge_engine.events import CancelToken, Cancelled

    token = CancelToken()
    threading.Thread(target=_cancel_when_asked, args=(stop, token, parent_pid), daemon=True).start()
    send = EventSender(events)
    try:
        if resume_dir:
            result = training.resume(Path(resume_dir), callback=send, cancel=token)
        else:
            result = training.train(config, callback=send, cancel=token)
        events.put((DONE, result))
    except Cancelled:
        events.put((CANCELLED, None))
    except Exception as exc:  # reported to the app, which shows it; the traceback goes to its log
        events.put((ERROR, (str(exc).strip() or type(exc).__name__, traceback.format_exc())))
