"""Why does SSM hand most of a class's RGB images to one MS tile? The matcher's recipe, part by part.

SSM pairs every RGB training image with the most similar MS tile of its class in the matcher's
embedding space. With the issue-16 recipe the busiest MS tile of a class teaches about three
quarters of it at the first pairing, against about 62 % with the old recipe; the matcher's training
changed with the recipe (augmentation, BatchNorm re-estimation, cosine schedule), so which part
concentrates the pairing was not known. This script trains the matcher alone (the engine's own
stage, no teacher, no student) with each part switched off in turn, and as the app trains it by
default, for several seeds, and measures SSM's first pairing on the RGB training images as the
student stage makes it:

- teachers per class and the busiest teacher's share (the fidelity report's diversity columns);
- how tightly a class's embeddings gather, RGB images and MS tiles apart (mean pairwise cosine
  within the class): when the RGB images of a class sit close together and away from the MS tiles,
  one MS tile is the nearest neighbour of nearly all of them, a hub in the sense of Radovanović et
  al. (JMLR 2010);
- the cosine between each class's RGB and MS centroids (how far apart the two modalities sit), and
  how often the busiest teacher is simply the MS tile nearest the RGB images' centroid;
- the matcher's own score: each validation MS tile retrieves its own pseudo-RGB among all validation
  tiles' (top-1). That task is all its training sees: it never sees a real RGB image.

    .venv/bin/python tests/benchmarks/hubness.py --seeds 3 --report /tmp/hubness.md

Trained matchers are cached under ``--out`` (keyed by recipe and seed), so a re-run only reports.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from fidelity import PAIRS, QUICK_SETTINGS, write_base_config
from sembridge_engine.config import MatcherConfig, TrainConfig, apply_overrides, load_config
from sembridge_engine.data import resize_tiles
from sembridge_engine.events import ignore_event
from sembridge_engine.training.context import RunContext
from sembridge_engine.training.dataset import assemble_run_data
from sembridge_engine.training.rundir import RunFolder
from sembridge_engine.training.stages import matcher_stage
from sembridge_engine.training.student import initial_match
from speed import commit, machine_line

REPO = Path(__file__).resolve().parents[2]


def budget(epochs: int, batch_size: int, scheduler: str) -> str:
    """A matcher budget in words: the report names what each row trained, from the settings themselves."""
    return f"{epochs} epochs, batch {batch_size}, schedule '{scheduler}'"


QUICK_MATCHER = budget(QUICK_SETTINGS["matcher.epochs"], QUICK_SETTINGS["matcher.batch_size"],
                       QUICK_SETTINGS["train.scheduler"])
APP_MATCHER, APP_TRAIN = MatcherConfig(), TrainConfig()
RECIPES = {
    f"issue-16 recipe, quick budget ({QUICK_MATCHER})": [],
    "no augmentation": ["augment.dihedral=false", "augment.crop_min=1"],
    "no precise BN": ["train.precise_bn=false"],
    "constant learning rate": ["train.scheduler=none"],
    "none of the three": ["augment.dihedral=false", "augment.crop_min=1", "train.precise_bn=false",
                          "train.scheduler=none"],
    "issue-16 recipe, 4x the epochs": [f"matcher.epochs={4 * QUICK_SETTINGS['matcher.epochs']}"],
    f"the app's defaults ({budget(APP_MATCHER.epochs, APP_MATCHER.batch_size, APP_TRAIN.scheduler)})": [
        f"matcher.epochs={APP_MATCHER.epochs}", f"matcher.batch_size={APP_MATCHER.batch_size}",
        f"train.scheduler={APP_TRAIN.scheduler}"],
}


def matcher_settings() -> list[str]:
    """The fidelity quick budget's data and matcher settings, light pair."""
    keys = [key for key in QUICK_SETTINGS if key.startswith(("data.", "matcher.", "train."))]
    settings = {key: QUICK_SETTINGS[key] for key in keys} | {"matcher.arch": PAIRS["r34-shufflenet"]["matcher.arch"]}
    return [f"{key}={value}" for key, value in settings.items()]


def mean_within(embeddings: torch.Tensor) -> float:
    """Mean cosine between distinct rows (embeddings already unit length)."""
    n = len(embeddings)
    gram = embeddings @ embeddings.T
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


@torch.no_grad()
def measure(config, run_dir: Path) -> dict[str, float]:
    """Train (or take from the cache) the matcher of ``config`` and measure SSM's first pairing."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(config, RunFolder(run_dir), ignore_event, None)
    data = assemble_run_data(config, need_ms=True)
    with torch.enable_grad():
        matcher = matcher_stage(ctx, data)
    match, _score, _how = initial_match(ctx, data, matcher)
    size, batch = config.data.ms_tile_size, config.matcher.batch_size
    gallery = F.normalize(ctx.infer(matcher.encode_ms, data.ms_tiles, batch).float(), dim=1)
    queries = F.normalize(ctx.infer(lambda tiles: matcher.encode_rgb(resize_tiles(tiles, size)),
                                    data.rgb_tiles.subset(data.rgb_train), batch).float(), dim=1)
    labels = data.rgb_labels[data.rgb_train]
    per_class = []
    for label in range(len(data.student_classes)):
        rows = (labels == label).nonzero().squeeze(1)
        candidates = data.ms_membership[:, label].nonzero().squeeze(1)
        counts = torch.bincount(match[rows], minlength=len(data.ms_tiles))[candidates]
        rgb_centre, ms_centre = queries[rows].mean(0), gallery[candidates].mean(0)
        per_class.append({
            "teachers": int((counts > 0).sum()), "busiest": float(counts.max() / len(rows)),
            "hub_at_centre": float(counts.argmax() == (gallery[candidates] @ rgb_centre).argmax()),
            "rgb_within": mean_within(queries[rows]), "ms_within": mean_within(gallery[candidates]),
            "centroids": float(F.cosine_similarity(rgb_centre, ms_centre, dim=0)),
        })
    val = data.ms_tiles.subset(data.ms_val)
    ms_val = F.normalize(ctx.infer(matcher.encode_ms, val, batch).float(), dim=1)
    pseudo_rgb = F.normalize(ctx.infer(lambda tiles: matcher.encode_rgb(tiles[:, list(data.preset.rgb_indices)]),
                                       val, batch).float(), dim=1)
    retrieval = float(((ms_val @ pseudo_rgb.T).argmax(1) == torch.arange(len(ms_val))).float().mean())
    result = {key: statistics.mean(row[key] for row in per_class) for key in per_class[0]}
    return result | {"retrieval": retrieval}


def report(rows: dict[str, list[dict]], seeds: int, minutes: float) -> list[str]:
    lines = [
        "## Hub teachers: SSM's first pairing by matcher recipe (light pair, quick budget)",
        "",
        f"- {machine_line()}",
        f"- reported: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit()}; {seeds} seeds per recipe, "
        f"the matcher trained alone (`{PAIRS['r34-shufflenet']['matcher.arch']}`, the quick budget's "
        f"{QUICK_SETTINGS['matcher.epochs']} epochs unless the recipe says otherwise)",
        "",
        "Means over classes, then over seeds (± std over seeds). Within-class cosine: mean cosine between two "
        "embeddings of the same class; centroid cosine: between a class's RGB and MS mean embeddings.",
        "",
        "| matcher recipe | seeds | teachers per class | busiest teacher's share | RGB within-class cosine "
        "| MS within-class cosine | RGB-MS centroid cosine | busiest = MS tile nearest the RGB centroid "
        "| matcher: MS -> own pseudo-RGB top-1 (validation) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(values: list[float], percent: bool = False) -> str:
        scale = 100 if percent else 1
        mean = statistics.mean(values) * scale
        spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
        return f"{mean:.0f}% ± {spread:.0f}" if percent else f"{mean:.2f} ± {spread:.2f}"

    for name, results in rows.items():
        if not results:
            continue
        lines.append(
            f"| {name} | {len(results)} | {cell([r['teachers'] for r in results])} | "
            f"{cell([r['busiest'] for r in results], percent=True)} | {cell([r['rgb_within'] for r in results])} | "
            f"{cell([r['ms_within'] for r in results])} | {cell([r['centroids'] for r in results])} | "
            f"{cell([r['hub_at_centre'] for r in results], percent=True)} of classes | "
            f"{cell([r['retrieval'] for r in results], percent=True)} |")
    lines += ["", f"Wall time of this invocation: {minutes:.1f} min (cached matchers are not retrained)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench_runs" / "hubness")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SEMBRIDGE_CACHE_DIR"] = str(args.out / "cache")
    base = load_config(write_base_config(args.data, args.out))
    started = time.perf_counter()
    rows: dict[str, list[dict]] = {}
    for name, overrides in RECIPES.items():
        rows[name] = []
        for seed in range(args.seeds):
            config = apply_overrides(base, [*matcher_settings(), *overrides, f"train.seed={seed}",
                                            "student.use_teacher_cache=true"])
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            result = measure(config, args.out / "runs" / slug / f"seed{seed}")
            print(f"{name}, seed {seed}: {result}", flush=True)
            rows[name].append(result)
    text = "\n".join(report(rows, args.seeds, (time.perf_counter() - started) / 60))
    print(text)
    if args.report:
        args.report.write_text(text + "\n")


if __name__ == "__main__":
    main()
