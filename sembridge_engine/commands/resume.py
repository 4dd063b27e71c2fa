"""`sembridge resume DIR`: continue a cancelled or interrupted run from its last checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder to continue")


def run(args: argparse.Namespace) -> int:
    from ..training import resume
    from .train import run_with_progress

    return run_with_progress(lambda printer: resume(args.run_dir, callback=printer), f"cannot resume {args.run_dir}")
