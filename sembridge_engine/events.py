"""Typed progress events and cooperative cancellation shared by every engine job.

The engine never talks to a UI directly: long jobs (training, labelling, loading) take an
``EventCallback`` and a ``CancelToken``. The GUI turns events into Qt signals, the CLI into a
progress bar, tests into lists.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class StageStarted:
    stage: str
    epochs: int


@dataclass(frozen=True)
class StageFinished:
    stage: str


@dataclass(frozen=True)
class BatchProgress:
    """One unit of work inside a stage (a training batch, a labelling block)."""

    stage: str
    epoch: int
    done: int
    total: int


@dataclass(frozen=True)
class EpochFinished:
    stage: str
    epoch: int
    epochs: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MatchingUpdated:
    epoch: int
    kind: str
    changed_fraction: float
    table_path: str = ""


@dataclass(frozen=True)
class CheckpointSaved:
    stage: str
    epoch: int
    path: str


@dataclass(frozen=True)
class LogLine:
    message: str
    level: str = "info"


@dataclass(frozen=True)
class RunFinished:
    run_dir: str
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFailed:
    run_dir: str
    error: str
    cancelled: bool = False


Event = (
    StageStarted | StageFinished | BatchProgress | EpochFinished | MatchingUpdated
    | CheckpointSaved | LogLine | RunFinished | RunFailed
)
EventCallback = Callable[[Event], None]


def ignore_event(event: Event) -> None:
    """Default callback for callers that do not listen."""


class Cancelled(Exception):
    """Raised inside a job when its CancelToken was set; the job's last checkpoint stays valid."""


class CancelToken:
    """Thread-safe flag a UI sets and a job checks between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")
