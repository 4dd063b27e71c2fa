"""Background workers: each runs one engine job in a QThread and turns engine events into Qt
signals, so the UI thread never trains, reads imagery or labels scenes itself.

Signals are throttled: BatchProgress arrives at most ``MAX_UPDATES_PER_SECOND`` times a second
(plus the last batch of each epoch), because every signal costs the UI thread a repaint and the
training thread a GIL hand-over.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QThread, Signal

from sembridge_engine.events import (
    BatchProgress, CancelToken, Cancelled, CheckpointSaved, EpochFinished, LogLine,
    MatchingUpdated, RunFailed, RunFinished, StageFinished, StageStarted,
)

MAX_UPDATES_PER_SECOND = 20
log = logging.getLogger(__name__)

Job = Callable[[Callable[[Any], None], CancelToken], Any]
_running: set["EngineWorker"] = set()


def stop_all_workers(timeout_ms: int = 120000) -> None:
    """Cancel every running worker and wait for it (on quit, and between tests)."""
    for worker in list(_running):
        worker.cancel()
    for worker in list(_running):
        worker.wait(timeout_ms)
        _running.discard(worker)


class EngineWorker(QThread):
    """Runs ``job(callback, cancel)`` in its own thread.

    Outcome signals: ``succeeded(result)`` or ``failed(message, cancelled)``, then QThread's own
    ``finished``. The result object is whatever the engine function returned.
    """

    stageStarted = Signal(str, int)
    stageFinished = Signal(str)
    batchProgress = Signal(str, int, int, int)
    epochFinished = Signal(str, int, int, object)
    matchingUpdated = Signal(int, str, float)
    checkpointSaved = Signal(str, int, str)
    logLine = Signal(str, str)
    runFinished = Signal(str, object)
    succeeded = Signal(object)
    failed = Signal(str, bool)

    def __init__(self, job: Job, parent=None) -> None:
        super().__init__(parent)
        self._job = job
        self.cancel_token = CancelToken()
        self.result: Any = None
        self.error: str = ""
        self.was_cancelled = False
        self._last_progress = 0.0
        self._min_interval = 1.0 / MAX_UPDATES_PER_SECOND
        self.finished.connect(lambda: _running.discard(self))

    def start(self, *args) -> None:
        _running.add(self)
        super().start(*args)

    def cancel(self) -> None:
        """Ask the job to stop at its next cancellation check (the next batch)."""
        self.cancel_token.cancel()

    def run(self) -> None:
        try:
            self.result = self._job(self.on_event, self.cancel_token)
        except Cancelled:
            self.was_cancelled = True
            self.error = "Cancelled by the user."
        except Exception as exc:  # a failed job is reported to the UI, never kills the app
            log.error("background job failed:\n%s", traceback.format_exc())
            self.error = str(exc).strip() or type(exc).__name__
        if self.error:
            self.failed.emit(self.error, self.was_cancelled)
        else:
            self.succeeded.emit(self.result)

    def on_event(self, event: Any) -> None:
        """Engine callback (worker thread): forward as signals, dropping surplus progress."""
        if isinstance(event, BatchProgress):
            now = time.monotonic()
            if event.done < event.total and now - self._last_progress < self._min_interval:
                return
            self._last_progress = now
            self.batchProgress.emit(event.stage, event.epoch, event.done, event.total)
        elif isinstance(event, EpochFinished):
            self.epochFinished.emit(event.stage, event.epoch, event.epochs, dict(event.metrics))
        elif isinstance(event, StageStarted):
            self.stageStarted.emit(event.stage, event.epochs)
        elif isinstance(event, StageFinished):
            self.stageFinished.emit(event.stage)
        elif isinstance(event, MatchingUpdated):
            self.matchingUpdated.emit(event.epoch, event.kind, float(event.changed_fraction))
        elif isinstance(event, CheckpointSaved):
            self.checkpointSaved.emit(event.stage, event.epoch, event.path)
        elif isinstance(event, LogLine):
            self.logLine.emit(event.message, event.level)
        elif isinstance(event, RunFinished):
            self.runFinished.emit(event.run_dir, dict(event.summary))
        elif isinstance(event, RunFailed):
            self.was_cancelled = self.was_cancelled or event.cancelled
            if event.cancelled:
                self.error = "Cancelled by the user."
            else:
                self.error = event.error


def warm_up_engine() -> None:
    """Do once, at start-up while the window is idle, what a run would otherwise do on its first
    steps: import what it imports lazily (POT at the first transport cost, the exporter and ONNX
    runtime at the end), open one GeoTIFF (GDAL set-up) and let torch set up its CPU kernels and
    autograd with one tiny forward/backward pass. These hold the GIL for long stretches and would
    otherwise freeze the UI at the start of the first run."""
    import importlib

    for module in ("sembridge_engine.training", "sembridge_engine.bundle", "sembridge_engine.labelling.scene",
                   "safetensors.torch", "ot", "onnxruntime", "torch.onnx"):
        try:
            importlib.import_module(module)
        except ImportError:
            log.warning("could not pre-import %s", module)
    import torch

    from resources import demo_project
    from sembridge_engine.data.readers import read_image
    from sembridge_engine.models.backbones import available_backbones, build_backbone

    for tile in sorted((demo_project() / "ms").glob("*/*.tif"))[:1]:
        read_image(tile)  # GDAL registers its drivers on the first read

    small = "shufflenet_v2_x0_5"
    model = build_backbone(small if small in available_backbones() else available_backbones()[0], 3, 2)
    model(torch.zeros(2, 3, 32, 32)).sum().backward()
    del model
    # The imports above leave ~450k long-lived objects (modules, functions, types) that every
    # full garbage collection walks: ~230 ms holding the GIL on whichever thread triggers it, which
    # froze the UI early in the first run. Collect once now, then move the survivors to the
    # permanent generation so later collections skip them (they live as long as the app anyway).
    import gc

    gc.collect()
    gc.freeze()


class TrainWorker(EngineWorker):
    """training.train(config) or, with ``resume_dir``, training.resume(run_dir), in a child process
    (app/training_process.py explains why); this thread relays the child's events as signals.

    ``threads``: CPU threads the child trains with (0: every core but one). ``processStarted``
    carries what the child reports of itself (its pid, thread counts and niceness as it runs)."""

    processStarted = Signal(dict)

    def __init__(self, config: Any = None, *, resume_dir: Path | None = None, threads: int = 0, parent=None) -> None:
        if (config is None) == (resume_dir is None):
            raise ValueError("TrainWorker needs either a config or a run folder to resume")
        self.config = config
        self.run_dir = Path(resume_dir) if resume_dir else None
        self.resuming = resume_dir is not None
        self.threads = threads
        self.child_report: dict = {}
        self._stop = None
        super().__init__(self._train, parent)

    def cancel(self) -> None:
        super().cancel()
        if self._stop is not None:
            self._stop.set()

    def on_event(self, event: Any) -> None:
        if isinstance(event, (RunFinished, RunFailed)):
            self.run_dir = Path(event.run_dir)
        super().on_event(event)

    def _train(self, _callback, cancel):
        import multiprocessing
        import os
        import queue

        from app import training_process

        context = multiprocessing.get_context("spawn")
        events, self._stop = context.Queue(), context.Event()
        if cancel.cancelled:
            self._stop.set()
        child = context.Process(target=training_process.run_training, name="sembridge-training", daemon=True,
                                args=(self.config, str(self.run_dir) if self.resuming else None, events, self._stop,
                                      os.getpid(), self.threads))
        child.start()
        try:
            while True:
                try:
                    item = events.get(timeout=1.0)  # blocks without the GIL; wakes to see whether the child died
                except queue.Empty:
                    if not child.is_alive():
                        raise RuntimeError(f"the training process stopped unexpectedly (exit code {child.exitcode}); "
                                           "the run can be resumed from its last checkpoint") from None
                    continue
                if not isinstance(item, tuple):
                    self.on_event(item)
                    continue
                outcome, payload = item
                if outcome == training_process.STARTED:
                    self.child_report = payload
                    log.info("training process %(pid)s: %(torch_threads)s CPU threads, %(interop_threads)s inter-op "
                             "threads, niceness %(niceness)s", payload)
                    self.processStarted.emit(payload)
                    continue
                if outcome == training_process.DONE:
                    self.run_dir = Path(payload.run_dir)
                    return payload
                if outcome == training_process.CANCELLED:
                    raise Cancelled("cancelled by the user")
                message, details = payload
                log.error("training process failed:\n%s", details)
                raise RuntimeError(message)
        finally:
            child.join(30)
            if child.is_alive():
                child.terminate()


def run_in_worker(function: Callable[..., Any], *args: Any, parent=None, **kwargs: Any) -> EngineWorker:
    """A worker for an engine function that takes ``callback=`` and ``cancel=`` keywords."""

    def job(callback, cancel):
        return function(*args, callback=callback, cancel=cancel, **kwargs)

    return EngineWorker(job, parent)


def plain_worker(function: Callable[..., Any], *args: Any, parent=None, **kwargs: Any) -> EngineWorker:
    """A worker for a function without events (file discovery, bundle loading, planning)."""

    def job(callback, cancel):
        return function(*args, **kwargs)

    return EngineWorker(job, parent)
