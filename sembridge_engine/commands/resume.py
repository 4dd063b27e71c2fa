"""`sembridge resume DIR`: continue a cancelled or interrupted run from its last checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder to continue")


def run(args: argparse.Namespace) -> int:
    from ..training import resume
    from ..training.rundir import RunFolder
    from .train import run_with_progress

    device = RunFolder(args.run_dir).setting("train.device", "auto")  # torchrun: nccl on CUDA, gloo on CPU
    return run_with_progress(lambda callback, cancel, dist: resume(args.run_dir, callback=callback, cancel=cancel, dist=dist),
                             f"cannot resume {args.run_dir}", device)
