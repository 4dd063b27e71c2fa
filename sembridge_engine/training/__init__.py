"""The staged SemBridge training pipeline: train(config) and resume(run_dir) -> RunResult."""
from .pipeline import RunResult, resume, train

__all__ = ["RunResult", "resume", "train"]
