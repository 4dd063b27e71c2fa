"""`sembridge resume DIR`: continue a cancelled or interrupted run from its last checkpoints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder to continue")


def run(args: argparse.Namespace) -> int:
    from ..training import resume
    from .train import ProgressPrinter, report

    printer = ProgressPrinter()
    try:
        result = resume(args.run_dir, callback=printer)
    except KeyboardInterrupt:
        printer.close()
        raise
    except Exception as error:
        printer.close()
        print(f"error: cannot resume {args.run_dir}: {error}", file=sys.stderr)
        return 1
    printer.close()
    return report(result)
