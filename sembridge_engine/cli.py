"""`sembridge` command line: a thin client of the engine.

Each sub-command lives in ``sembridge_engine/commands/<name>.py`` (a hyphen of the command an
underscore there) and exposes ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports
happen inside ``run`` so ``sembridge --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence
from pathlib import Path

COMMANDS = {
    "inspect": "Summarise an MS archive or RGB imagery folder and list its problems.",
    "train": "Train teacher, matcher and student from a run configuration.",
    "resume": "Continue a cancelled or interrupted run from its last checkpoint.",
    "export": "Export a run's student as a model bundle (.sembridge).",
    "classify": "Classify image tiles with a model bundle.",
    "label": "Label a GeoTIFF scene with a model bundle and write GIS outputs.",
    "assess": "Check a labelled class map against reference points, polygons or a raster (accuracy report).",
    "teacher-fit": "Check whether a teacher's class resemblances fit the RGB classes' (what distillation can transfer).",
}


def _command_module(name: str):
    return importlib.import_module(f"sembridge_engine.commands.{name.replace('-', '_')}")


def build_parser(commands: Sequence[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sembridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in ((name, COMMANDS[name]) for name in commands):
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        _command_module(name).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None, commands: Sequence[str] = tuple(COMMANDS)) -> int:
    """Run one sub-command; ``commands`` limits the choice (the labelling-only build offers classify and label)."""
    # Idle OpenMP threads sleep instead of spinning: the engine's decoder threads and other
    # processes share the cores, and spinning slowed training 2-3x on a busy 2-core machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser(commands).parse_args(argv)
    try:
        return int(_command_module(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"error: {args.command}: out of memory; try smaller tiles, batches or inputs", file=sys.stderr)
        return 1
    except Exception as error:  # the last resort: one line for the user, the traceback in a log file
        print(f"error: {args.command} failed: {type(error).__name__}: {error} "
              f"(details in {_write_crash_log(args.command)})", file=sys.stderr)
        return 1


def _write_crash_log(command: str) -> Path:
    import time
    import traceback

    from platformdirs import user_log_dir

    folder = Path(user_log_dir("sembridge-studio"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cli-{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return path


if __name__ == "__main__":
    sys.exit(main())
