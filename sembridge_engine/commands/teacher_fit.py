"""`sembridge teacher-fit TEACHER_RUN RGB_ONLY_RUN`: do the teacher's class resemblances fit the RGB classes'?"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher_run", type=Path, help="a run folder with a trained teacher (checkpoints/teacher.pt)")
    parser.add_argument("rgb_only_run", type=Path,
                        help="a finished plain RGB run of the same project (distill.loss = 'none', no OT terms)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="softmax temperature of both views (default: the teacher run's KD temperature, else 4)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def describe(fit) -> list[str]:
    """The check as the command prints it: the numbers, the per-class table, the verdict."""
    n = len(fit.classes)
    width = max(len(name) for name in [*fit.classes, "class"]) + 2
    lines = [f"{n} classes, temperature {fit.temperature:g}",
             f"  same most-resembled class: {fit.same_top} of {n} (chance: {fit.chance_same_top:.1f})",
             f"  centred cosine: {fit.cosine:+.2f} (0: unrelated, 1: the same resemblances), permutation test p = {fit.p_value:.2g}",
             "",
             f"  {'class':<{width}}{'teacher: most like':<{width}}RGB: most like"]
    lines += [f"  {name:<{width}}{teacher:<{width}}{rgb}{'  (same)' if teacher == rgb else ''}"
              for name, teacher, rgb in fit.per_class]
    return [*lines, "", f"Verdict: {fit.verdict}."]


def run(args: argparse.Namespace) -> int:
    import json

    from sembridge_engine.training.checkpoint import CheckpointError
    from sembridge_engine.training.resemblance import teacher_fit

    try:
        fit = teacher_fit(args.teacher_run, args.rgb_only_run, temperature=args.temperature)
    except (ValueError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(fit.to_dict(), indent=2))
    else:
        print("\n".join([f"Teacher of {args.teacher_run} against the RGB-only student of {args.rgb_only_run}:",
                         *describe(fit)]))
    return 0
