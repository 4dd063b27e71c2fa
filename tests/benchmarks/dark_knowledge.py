"""Does the MS teacher's dark knowledge describe the RGB classes? Teacher vs RGB-only student similarities.

Usage: .venv/bin/python tests/benchmarks/dark_knowledge.py TEACHER_RUN RGB_ONLY_VARIANT_DIR

Vanilla KD hands the student, besides the class, the teacher's view of which other classes a tile
resembles (its softened non-target probabilities). That helps when the two modalities share those
resemblances. Here the teacher's view is its mean softened distribution over the other student
classes, per class, on every MS tile of the class; the RGB domain's own view is the same from the
RGB-only student (variant (a)) on its validation and test images, seed by seed. Two numbers compare
them: how many classes have the same most-resembled class (chance: one in n - 1), and the cosine
between the two non-target distributions after subtracting the uniform one (0: unrelated; 1: the same
resemblances; negative: opposite). As the level that two views of the same RGB classes reach, the
RGB-only students of different seeds are compared with each other too.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sembridge_engine.data.splits import stratified_split
from sembridge_engine.data.transforms import ChannelStats
from sembridge_engine.models.backbones import build_backbone
from sembridge_engine.training.checkpoint import load_checkpoint
from sembridge_engine.training.dataset import assemble_run_data
from sembridge_engine.training.rundir import RunFolder

TEMPERATURE = 4.0   # the KD loss's default (Hinton's)


def _best_model(run: RunFolder, stage: str) -> tuple[torch.nn.Module, dict]:
    """The stage's kept (best) model of a run, from its checkpoint, and the checkpoint's meta."""
    state = load_checkpoint(run.checkpoint(stage))
    meta = state["meta"]
    model = build_backbone(meta["arch"], meta["in_channels"], meta["num_classes"])
    model.load_state_dict(state["best"]["state"] if state["best"] else state["modules"][state["stage"]])
    return model.eval(), meta


def non_target(mean_probabilities: torch.Tensor) -> torch.Tensor:
    """(n, n) per-class mean distributions -> (n, n-1) distributions over the other classes."""
    n = mean_probabilities.shape[0]
    others = mean_probabilities[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    return others / others.sum(1, keepdim=True)


def class_means(logits: torch.Tensor, members: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean softened distribution of each class's tiles; ``members`` (N, n) bool."""
    probabilities = F.softmax(logits / temperature, 1)
    return torch.stack([probabilities[members[:, c]].mean(0) for c in range(members.shape[1])])


def compare(first: torch.Tensor, second: torch.Tensor) -> tuple[int, float]:
    """(classes with the same most-resembled class, mean centred cosine) of two non-target views."""
    uniform = 1.0 / first.shape[1]
    return (int((first.argmax(1) == second.argmax(1)).sum()),
            F.cosine_similarity(first - uniform, second - uniform, dim=1).mean().item())


@torch.no_grad()
def views(teacher_run: Path, rgb_only: Path) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The teacher's non-target view and each finished RGB-only seed's; the data are loaded once."""
    runs = {int(path.name[4:]): RunFolder(path) for path in rgb_only.glob("seed*") if path.name[4:].isdigit()}
    runs = {seed: run for seed, run in sorted(runs.items()) if run.status == "finished"}
    teacher_folder = RunFolder(teacher_run)
    if not runs or not teacher_folder.checkpoint("teacher").is_file():
        return torch.empty(0), {}
    teacher, teacher_meta = _best_model(teacher_folder, "teacher")
    config = next(iter(runs.values())).config()
    data = assemble_run_data(config, need_ms=True)
    data.use_ms_stats(ChannelStats(**teacher_meta["ms_stats"]))
    teacher_logits = teacher(data.ms_tiles[torch.arange(len(data.ms_tiles))])[:, data.teacher_columns]
    classes = torch.arange(len(data.student_classes))
    rgb = {}
    for seed, run in runs.items():
        student, meta = _best_model(run, "student")
        data.rgb_tiles.use_stats(ChannelStats(**meta["rgb_stats"]))
        _, val, test = stratified_split(data.rgb_labels.numpy(), tuple(config.data.rgb_split), seed)
        held_out = torch.from_numpy(np.concatenate([val, test]))
        members = data.rgb_labels[held_out][:, None] == classes[None, :]
        rgb[seed] = non_target(class_means(student(data.rgb_tiles[held_out]), members, TEMPERATURE))
    return non_target(class_means(teacher_logits, data.ms_membership, TEMPERATURE)), rgb


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

    line = (f"Teacher's dark knowledge against the RGB domain's (`dark_knowledge.py`, T = {TEMPERATURE:g}; chance: the "
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
