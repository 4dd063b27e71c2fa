"""Does the MS teacher's dark knowledge describe the RGB classes? Teacher vs RGB-only student similarities.

Usage: .venv/bin/python tests/benchmarks/dark_knowledge.py TEACHER_RUN RGB_ONLY_VARIANT_DIR

The fidelity report's seed-by-seed form of the engine's teacher fit check
(``sembridge_engine.training.resemblance``, ``sembridge teacher-fit`` and the app's "Does the teacher
fit?"), whose views and numbers it uses: the teacher's mean softened distribution over the other
student classes, per class, on every MS tile of the class, against the same from the RGB-only student
(variant (a)) on its validation and test images, seed by seed; the number of classes with the same
most-resembled class (chance: one in n - 1) and the centred cosine of the two non-target views (0:
unrelated; 1: the same resemblances; negative: opposite). As the level that two views of the same RGB
classes reach, the RGB-only students of different seeds are compared with each other too.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from sembridge_engine.training.checkpoint import load_checkpoint
from sembridge_engine.training.dataset import assemble_run_data
from sembridge_engine.training.resemblance import DEFAULT_TEMPERATURE, compare, non_target, rgb_view, teacher_means
from sembridge_engine.training.rundir import RunFolder

def views(teacher_run: Path, rgb_only: Path) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The teacher's non-target view and each finished RGB-only seed's; the data are loaded once."""
    runs = {int(path.name[4:]): RunFolder(path) for path in rgb_only.glob("seed*") if path.name[4:].isdigit()}
    runs = {seed: run for seed, run in sorted(runs.items()) if run.status == "finished"}
    teacher_checkpoint = RunFolder(teacher_run).checkpoint("teacher")
    if not runs or not teacher_checkpoint.is_file():
        return torch.empty(0), {}
    data = assemble_run_data(next(iter(runs.values())).config(), need_ms=True)
    teacher = non_target(teacher_means(load_checkpoint(teacher_checkpoint), data, DEFAULT_TEMPERATURE))
    return teacher, {seed: rgb_view(run, run.config(), data, DEFAULT_TEMPERATURE) for seed, run in runs.items()}


def agreement_lines(teacher_run: Path, rgb_only: Path) -> list[str]:
    """The fidelity report's paragraph: the teacher against each RGB-only seed, and, as the level two
    views of the same RGB classes reach, the RGB-only seeds against each other."""
    teacher_view, rgb = views(teacher_run, rgb_only)
    if not rgb:
        return []
    classes = teacher_view.shape[0]
    to_teacher = [compare(teacher_view, view) for view in rgb.values()]
    seeds = list(rgb.values())
    between = [compare(a, b) for i, a in enumerate(seeds) for b in seeds[i + 1:]]

    def summary(pairs: list[tuple[int, float]]) -> str:
        return (f"same most-resembled class in {statistics.mean(p[0] for p in pairs):.1f} of {classes} classes, "
                f"centred cosine {statistics.mean(p[1] for p in pairs):+.2f}")

    line = (f"Teacher's dark knowledge against the RGB domain's (`dark_knowledge.py`, T = {DEFAULT_TEMPERATURE:g}; chance: the "
            f"same most-resembled class in {classes / (classes - 1):.1f} of {classes}, cosine 0): teacher on MS tiles vs the "
            f"RGB-only student on RGB validation and test images, {len(to_teacher)} seeds: {summary(to_teacher)}")
    if between:
        line += f"; RGB-only students of different seeds against each other, {len(between)} pairs: {summary(between)}"
    return [line + "."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher_run", type=Path)
    parser.add_argument("rgb_only", type=Path, help="the RGB-only variant's folder (its seed* runs)")
    args = parser.parse_args()
    print("\n".join(agreement_lines(args.teacher_run, args.rgb_only)) or "no finished teacher or RGB-only run there")


if __name__ == "__main__":
    main()
