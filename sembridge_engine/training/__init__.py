"""The staged SemBridge training pipeline: train(config) and resume(run_dir) -> RunResult.

The pipeline (and torch with it) is imported on first use of these names, so clients that only
read run folders (``training.rundir``: the app's runs list and monitor) start without torch."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import RunResult, resume, train

__all__ = ["RunResult", "resume", "train"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
