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

The child leaves the window a core: it trains with all cores but one (at least one; 1 on a 2-core
machine) and at the lowest priority. Thread counts are fixed through the environment before the
child imports torch or numpy (OpenMP, MKL and OpenBLAS read them when they load) and again through
torch, so no library starts a thread per core. ``SEMBRIDGE_TRAINING_THREADS`` (or the app setting
``training_threads``) gives a run more or fewer threads.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

# Messages the child puts on the queue beside the engine's events: STARTED first (how it runs),
# then one outcome.
STARTED, DONE, CANCELLED, ERROR = "started", "done", "cancelled", "error"
PARENT_CHECK_SECONDS = 1.0
BACKGROUND_NICENESS = 19  # the lowest priority a process can give itself on POSIX
NICENESS_ENV = "SEMBRIDGE_TRAINING_NICENESS"  # e.g. 0 where the run should compete as an equal (the tests)
THREADS_ENV = "SEMBRIDGE_TRAINING_THREADS"  # e.g. the core count, for a run that may take every core
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_IMPORTED_AT_ENTRY: set[str] = set()  # of torch and numpy, those the child had loaded before limit_threads
BATCH_EVENT_SECONDS = 0.05  # the monitor shows at most 20 batch updates a second; fewer messages wake it less


def _cancel_when_asked(stop, token, parent_pid: int) -> None:
    """Child thread: forward the parent's stop request to the engine's cancel token; a parent that
    died (its process id gone) counts as a stop, so an orphaned run ends at its next batch."""
    while not stop.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != parent_pid:
            break
    token.cancel()


def usable_cores() -> int:
    """Cores this process may run on (affinity / container limits where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def training_threads(requested: int = 0) -> int:
    """CPU threads for a run started from the app: ``requested`` (the app setting) or the
    THREADS_ENV override when positive, else every core but one, and at least one."""
    override = os.environ.get(THREADS_ENV, "").strip()
    if requested <= 0 and override.isdigit():
        requested = int(override)
    return requested if requested > 0 else max(1, usable_cores() - 1)


def limit_threads(threads: int) -> None:
    """Cap every thread pool of the child at ``threads``: through the environment (read by OpenMP,
    MKL and OpenBLAS when they load, so this must run before torch or numpy are imported) and
    through torch (its intra-op and inter-op pools), which also covers a library loaded earlier."""
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # the inter-op pool already ran work in this process: its size can no longer change


def lower_priority() -> None:
    """Let the window come first: on a busy machine the UI thread otherwise waits behind the
    training threads for a core (the run loses nothing when the machine is otherwise idle)."""
    import psutil

    niceness = int(os.environ.get(NICENESS_ENV, BACKGROUND_NICENESS))
    if niceness <= 0:
        return
    process = psutil.Process()
    try:
        process.nice(psutil.IDLE_PRIORITY_CLASS if os.name == "nt" else niceness)
        if hasattr(psutil, "IOPRIO_CLASS_BE"):
            process.ionice(psutil.IOPRIO_CLASS_BE, value=7)  # its tile reads queue behind the app's
    except (psutil.Error, OSError):
        pass  # not allowed here: train at normal priority


def describe_process(threads_asked: int) -> dict:
    """How the child really runs, read back from the OS and torch (for the app's log and the tests)."""
    import psutil
    import torch

    return {"pid": os.getpid(), "threads_asked": threads_asked, "torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "niceness": psutil.Process().nice(),
            "environment": {name: os.environ.get(name) for name in (*THREAD_ENV_VARS, "OMP_WAIT_POLICY")},
            "imported_before_limits": sorted(_IMPORTED_AT_ENTRY)}


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


def run_training(config: Any, resume_dir: str | None, events, stop, parent_pid: int, threads: int = 0) -> None:
    """The child's entry point: train (or resume) with ``threads`` CPU threads (0: training_threads()),
    sending how it runs, every engine event, then the outcome."""
    _IMPORTED_AT_ENTRY.update(name for name in ("torch", "numpy") if name in sys.modules)
    threads = training_threads(threads)
    limit_threads(threads)
    lower_priority()
    events.put((STARTED, describe_process(threads)))
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
