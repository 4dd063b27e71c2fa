"""How good can the MS teacher get on a small archive? Stratified k-fold cross-validation of teacher recipes.

Usage: .venv/bin/python tests/benchmarks/teacher_cv.py [--data ../shared/data] [--folds 5] [--tile-size 48]
       [--recipes quick epochs100 ...] [--threads 2] [--report /tmp/teacher_cv.md]

The fidelity report's teacher OA is measured on 4 validation tiles per class (40 in all) and on the
epoch chosen on those same tiles, so it moves by 5-10 points with luck. Here every MS tile is a test
tile exactly once (k folds, stratified by class, the same folds for every recipe), and the model
scored is the last epoch's, after precise BN: nothing is selected on test tiles. Each recipe trains
with the engine's own pieces (backbone, optimiser, cosine schedule, [augment] geometry, seeded
batch order, precise BN); statistics are computed on each fold's training tiles only.

As a yardstick that sees no texture at all, a multinomial logistic regression on each tile's per-band
mean and standard deviation is cross-validated on the same folds: when it beats the CNN, the CNN is
not reading the spectra well from this few tiles.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from sembridge_engine.config import RunConfig
from sembridge_engine.data.transforms import compute_channel_stats
from sembridge_engine.models.backbones import build_backbone
from sembridge_engine.training.augment import Augmentation, dihedral
from sembridge_engine.training.dataset import assemble_run_data
from sembridge_engine.training.loops import (build_optimizer, build_scheduler, epoch_generator,
                                             recalibrate_batchnorm, shuffled_batches)
from speed import commit, machine_line

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Recipe:
    label: str
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    crop_min: float = 0.6


RECIPES = {
    "quick": Recipe("fidelity quick budget before this benchmark (30 epochs)"),
    "epochs100": Recipe("100 epochs", epochs=100),
    "epochs60_smooth": Recipe("60 epochs, label smoothing 0.1", epochs=60, label_smoothing=0.1),
    "epochs60_adamw": Recipe("60 epochs, AdamW weight decay 0.05", epochs=60, optimizer="adamw", weight_decay=0.05),
    "epochs60_crop025": Recipe("60 epochs, random crop down to 25 % of the area", epochs=60, crop_min=0.25),
}


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Fold number of every tile: each class dealt round-robin over the folds in a seeded order."""
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(len(labels), dtype=torch.long)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold_of[members] = torch.arange(len(members)) % folds
    return fold_of


def fold_tiles(ms_tiles, train: torch.Tensor) -> torch.Tensor:
    """All tiles normalised with the statistics of this fold's training tiles only."""
    ms_tiles.use_stats(None)
    ms_tiles.use_stats(compute_channel_stats(ms_tiles.subset(train)))
    return ms_tiles[torch.arange(len(ms_tiles))].float()


def train_and_test(recipe: Recipe, arch: str, tiles: torch.Tensor, labels: torch.Tensor, classes: int,
                   train: torch.Tensor, test: torch.Tensor, seed: int) -> tuple[int, int]:
    """Correct predictions on ``test`` of a teacher trained by ``recipe`` on ``train``: of the tiles as
    they are, and of the softmax averaged over the 8 dihedral views of each tile."""
    config = RunConfig()
    config.train.optimizer, config.train.weight_decay, config.train.scheduler = recipe.optimizer, recipe.weight_decay, "cosine"
    config.teacher.epochs, config.teacher.batch_size, config.teacher.lr = recipe.epochs, recipe.batch_size, recipe.lr
    torch.manual_seed(seed)
    model = build_backbone(arch, tiles.shape[1], classes)
    optimizer = build_optimizer(model.parameters(), config.teacher, config)
    scheduler = build_scheduler(optimizer, recipe.epochs, config)
    augment = Augmentation(dihedral=True, crop_min=recipe.crop_min)
    for epoch in range(recipe.epochs):
        model.train()
        generator = epoch_generator(seed, "teacher", epoch)
        for positions in shuffled_batches(len(train), recipe.batch_size, generator):
            index = train[positions]
            loss = F.cross_entropy(model(augment(tiles[index], generator)), labels[index],
                                   label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    recalibrate_batchnorm([model], model, tiles[train], torch.device("cpu"), recipe.batch_size,
                          epoch_generator(seed, "probe", 0))
    model.eval()
    with torch.no_grad():
        views = [model(dihedral(tiles[test], torch.full((len(test),), view))).softmax(1) for view in range(8)]
    return tuple(int((probabilities.argmax(1) == labels[test]).sum()) for probabilities in (views[0], sum(views)))


def spectral_baseline(tiles: torch.Tensor, labels: torch.Tensor, classes: int, train: torch.Tensor, test: torch.Tensor,
                      penalty: float = 1e-3) -> int:
    """Correct predictions of an L2-penalised logistic regression on per-band mean and standard deviation
    (the penalty was the best of 1e-3, 1e-2 and 1e-1 on the EuroSAT folds: a slightly optimistic yardstick)."""
    features = torch.cat([tiles.mean((2, 3)), tiles.std((2, 3))], 1).double()
    features = (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)
    weights = torch.zeros(features.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(features[train] @ weights + bias, labels[train]) + penalty * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return int(((features[test] @ weights + bias).argmax(1) == labels[test]).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tile-size", type=int, default=48, help="MS tile size (the fidelity quick budget's is 48)")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = RunConfig()
    config.data.ms_path, config.data.rgb_path = str(args.data / "ms"), str(args.data / "rgb")
    config.data.ms_tile_size, config.data.rgb_tile_size = args.tile_size, 16
    data = assemble_run_data(config, need_ms=True)
    labels, classes = data.ms_labels, len(data.ms_classes)
    fold_of = stratified_folds(labels, args.folds, args.seed)
    splits = [((fold_of != fold).nonzero().flatten(), (fold_of == fold).nonzero().flatten()) for fold in range(args.folds)]
    fold_inputs = [fold_tiles(data.ms_tiles, train) for train, _ in splits]

    lines = [f"- machine: {machine_line()}", f"- reported: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit()}",
             f"- MS archive: {len(labels)} tiles, {classes} classes, {args.tile_size} px; {args.folds}-fold stratified "
             f"cross-validation (about {len(splits[0][0]) // classes} training tiles per class per fold), `{args.arch}`, "
             f"{torch.get_num_threads()} threads", "",
             "| recipe | cross-validated OA % | per fold | with the 8 dihedral views averaged | minutes |",
             "|---|---|---|---|---|"]

    def add_row(label: str, correct: list[int], seconds: float, averaged: list[int] | None = None) -> None:
        per_fold = " / ".join(f"{100 * c / len(test):.0f}" for c, (_, test) in zip(correct, splits))
        views = "" if averaged is None else f"{100 * sum(averaged) / len(labels):.1f}"
        lines.append(f"| {label} | {100 * sum(correct) / len(labels):.1f} | {per_fold} | {views} | {seconds / 60:.1f} |")
        print(lines[-1], flush=True)

    started = time.perf_counter()
    add_row("logistic regression on band means and standard deviations (no CNN)",
            [spectral_baseline(tiles, labels, classes, train, test) for tiles, (train, test) in zip(fold_inputs, splits)],
            time.perf_counter() - started)
    for key in args.recipes:
        recipe, started = RECIPES[key], time.perf_counter()
        correct, averaged = zip(*(train_and_test(recipe, args.arch, tiles, labels, classes, train, test, args.seed * 100 + fold)
                                  for fold, (tiles, (train, test)) in enumerate(zip(fold_inputs, splits))))
        add_row(f"`{key}`: {recipe.label}", list(correct), time.perf_counter() - started, list(averaged))
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
