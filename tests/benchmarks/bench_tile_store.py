"""On-disk tile store vs in-memory tiles: student-epoch time and peak RSS for archives of 10,000+ tiles.

The archives are the real shared tiles repeated with distinct augmentations: each EuroSAT MS tile
and each UC Merced image (resized to 64 px once, as a tile archive stores it) in the 8 dihedral
orientations, and beyond those with a small brightness offset per copy. Two sizes (about 5,000 and
10,000+ tiles per modality) show whether memory grows with the archive.

Each measurement is one `sembridge` training run in its own process (so peak RSS is that run's):
an untrained ShuffleNetV2 x0.5 teacher (epochs 0: its bank of outputs is computed, no teacher
training), vanilla KD on random same-class pairs, one student epoch. Reported per run: the
student epoch's training loop (wall and CPU seconds, stage start to last batch) and the process's
peak RSS; the tile stores are built beforehand in a separate process (their build time is printed).

Usage: python tests/benchmarks/bench_tile_store.py [--data ../shared/data] [--workdir /tmp/sembridge-bench-store] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SIZES = {"small": (25, 8), "large": (50, 15)}  # copies per MS tile, per RGB image
RGB_SIDE = 64


def _dihedral(array, variant: int):
    import numpy as np

    turned = np.rot90(array, k=variant % 4, axes=(-2, -1))
    return np.ascontiguousarray(turned[..., ::-1] if variant % 8 >= 4 else turned)


def prepare(data: Path, workdir: Path, name: str) -> tuple[Path, Path]:
    """The archive of one size: MS GeoTIFFs and RGB PNGs, written once and kept for later runs."""
    import numpy as np
    import rasterio
    from PIL import Image

    ms_copies, rgb_copies = SIZES[name]
    ms_root, rgb_root = workdir / name / "ms", workdir / name / "rgb"
    done = workdir / name / ".complete"
    if done.exists():
        return ms_root, rgb_root
    for tile in sorted(data.glob("ms/*/*.tif")):
        with rasterio.open(tile) as source:
            profile, pixels = source.profile, source.read()
        (ms_root / tile.parent.name).mkdir(parents=True, exist_ok=True)
        for copy in range(ms_copies):
            varied = np.clip(_dihedral(pixels, copy).astype(np.int64) + 7 * (copy // 8), 0, 65535).astype(np.uint16)
            with rasterio.open(ms_root / tile.parent.name / f"{tile.stem}_{copy}.tif", "w", **profile) as target:
                target.write(varied)
    for image in sorted(data.glob("rgb/*/*.tif")):
        pixels = np.asarray(Image.open(image).convert("RGB").resize((RGB_SIDE, RGB_SIDE), Image.BILINEAR)).transpose(2, 0, 1)
        (rgb_root / image.parent.name).mkdir(parents=True, exist_ok=True)
        for copy in range(rgb_copies):
            varied = np.clip(_dihedral(pixels, copy).astype(np.int64) + 3 * (copy // 8), 0, 255).astype(np.uint8)
            Image.fromarray(varied.transpose(1, 2, 0)).save(rgb_root / image.parent.name / f"{image.stem}_{copy}.png")
    done.touch()
    return ms_root, rgb_root


def overrides(ms_root: Path, rgb_root: Path, budget_gb: float) -> list[str]:
    return [
        f"data.ms_path={ms_root}", f"data.rgb_path={rgb_root}", "data.ms_tile_size=64", f"data.rgb_tile_size={RGB_SIDE}",
        f"data.memory_budget_gb={budget_gb}", "train.device=cpu", "train.scheduler=none",
        "teacher.arch=shufflenet_v2_x0_5", "teacher.epochs=0", "teacher.batch_size=128",
        "student.arch=shufflenet_v2_x0_5", "student.epochs=1", "student.batch_size=64",
        "distill.loss=kd", "distill.ssm=false", "distill.dynm=false", "distill.ot1=false", "distill.ot2=false",
        "distill.probe_size=64",
    ]


def child(args) -> int:
    """One training run; prints its timings and peak RSS as JSON on the last line."""
    import torch

    from resources import demo_project
    from sembridge_engine.config import apply_overrides, load_config
    from sembridge_engine.events import BatchProgress, StageStarted
    from sembridge_engine.training import train
    from sembridge_engine.training.dataset import assemble_run_data

    torch.set_num_threads(args.threads)
    config = apply_overrides(load_config(demo_project() / "demo.toml"), json.loads(args.child))
    if args.build_only:
        started = time.perf_counter()
        assemble_run_data(config, need_ms=True)
        print(json.dumps({"build_seconds": time.perf_counter() - started}))
        return 0
    marks: dict[str, float] = {}

    def timer(event) -> None:
        if isinstance(event, StageStarted) and event.stage == "student":
            marks["wall"], marks["cpu"] = time.perf_counter(), time.process_time()
        elif isinstance(event, BatchProgress) and event.stage == "student" and event.done == event.total:
            marks["epoch_wall"], marks["epoch_cpu"] = time.perf_counter() - marks["wall"], time.process_time() - marks["cpu"]
            marks["images"] = event.total * config.student.batch_size

    result = train(config, run_dir=Path(args.run_dir), callback=timer)
    assert result.status == "finished", result.summary
    print(json.dumps({"epoch_wall": marks["epoch_wall"], "epoch_cpu": marks["epoch_cpu"], "images": marks["images"],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
    return 0


def run_child(settings: list[str], workdir: Path, threads: int, label: str, build_only: bool = False) -> dict:
    run_dir = workdir / "runs" / f"{label}-{time.strftime('%H%M%S')}-{os.getpid()}"
    command = [sys.executable, __file__, "--child", json.dumps(settings), "--run-dir", str(run_dir), "--threads", str(threads)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "SEMBRIDGE_CACHE_DIR": str(workdir / "cache"),
                   "PYTHONPATH": str(REPO)}
    output = subprocess.run(command + (["--build-only"] if build_only else []), env=environment, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared real data set")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sembridge-bench-store"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if not args.data.exists():
        print(f"shared data not found: {args.data} (give it with --data)", file=sys.stderr)
        return 2
    workdir = args.workdir
    print(f"tile store vs memory; {args.threads} torch threads; best of {args.repeats} runs per cell")
    results: dict[tuple[str, str], dict] = {}
    for name in SIZES:
        started = time.perf_counter()
        ms_root, rgb_root = prepare(args.data, workdir, name)
        files = sum(1 for _ in ms_root.rglob("*.tif")), sum(1 for _ in rgb_root.rglob("*.png"))
        print(f"{name}: {files[0]} MS tiles, {files[1]} RGB tiles ({time.perf_counter() - started:.0f} s to prepare)")
        build = run_child(overrides(ms_root, rgb_root, 1e-6), workdir, args.threads, f"build-{name}", build_only=True)
        print(f"  tile stores built (or found) in {build['build_seconds']:.0f} s")
        for storage, budget in (("memory", 1000.0), ("disk", 1e-6)):
            runs = [run_child(overrides(ms_root, rgb_root, budget), workdir, args.threads, f"{name}-{storage}")
                    for _ in range(args.repeats)]
            best = min(runs, key=lambda run: run["epoch_wall"])
            best["epoch_cpu"] = min(run["epoch_cpu"] for run in runs)
            best["peak_rss_gb"] = max(run["peak_rss_gb"] for run in runs)
            results[(name, storage)] = best
            print(f"  {storage:6s}: student epoch {best['epoch_wall']:6.1f} s wall, {best['epoch_cpu']:6.1f} s CPU "
                  f"({best['images']} images), peak RSS {best['peak_rss_gb']:.2f} GB")
    for name in SIZES:
        memory, disk = results[(name, "memory")], results[(name, "disk")]
        print(f"{name}: disk / memory epoch time {disk['epoch_wall'] / memory['epoch_wall']:.2f}x wall, "
              f"{disk['epoch_cpu'] / memory['epoch_cpu']:.2f}x CPU; peak RSS disk / memory "
              f"{disk['peak_rss_gb'] / memory['peak_rss_gb']:.2f}x")
    for storage in ("memory", "disk"):
        print(f"{storage}: peak RSS large / small archive {results[('large', storage)]['peak_rss_gb'] / results[('small', storage)]['peak_rss_gb']:.2f}x")
    if hasattr(os, "getloadavg"):
        print("load average (1/5/15 min): " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
