"""Tile-cache loading speed: files/second with 1 decoder thread vs N, on the shared real data set.

Usage: python tests/benchmarks/bench_data_loading.py [DATA_DIR] [--tile-size 64] [--workers N] [--repeats 3]
DATA_DIR defaults to <repo>/../shared/data (200 EuroSAT MS tiles + 700 UC Merced RGB images).
A first pass only warms the OS file cache, so the timings compare decoding, not disk reads.
"CPU use" is process CPU time / wall time: about N when N threads really run in parallel
(rasterio/GDAL, Pillow and torch release the GIL); lower when other processes hold the cores.
"CPU ms/file" is the work per file; equal for 1 and N workers means threads add no overhead.
The control line times GIL-free work on the same threads: on a machine other jobs keep busy it
shows how much parallel speed-up was available at all.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sembridge_engine.data.cache import load_index  # noqa: E402
from sembridge_engine.data.discovery import discover_ms_archive, discover_rgb_folder  # noqa: E402
from sembridge_engine.data.readers import default_workers  # noqa: E402


def time_load(index, tile_size: int, workers: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, files handled) for one full load of ``index``."""
    class_to_index = {name: position for position, name in enumerate(index.classes)}
    wall, cpu = time.perf_counter(), time.process_time()
    loaded = load_index(index, class_to_index, tile_size, workers=workers)
    return time.perf_counter() - wall, time.process_time() - cpu, len(loaded) + len(loaded.problems)


def control_speedup(workers: int) -> float:
    """Speed-up of N threads on GIL-free work (sha256) right now: the most the loader can reach
    while other processes share the cores."""
    data = b"\0" * 20_000_000

    def hash_rounds(rounds: int) -> None:
        for _ in range(rounds):
            hashlib.sha256(data).digest()

    def timed(threads: int) -> float:
        pool = [threading.Thread(target=hash_rounds, args=(4 * workers // threads,)) for _ in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return time.perf_counter() - started

    return timed(1) / timed(workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers(), help="N for the parallel run (default: cores)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data_dir = Path(args.data_dir)
    if not data_dir.exists():
        print(f"data folder not found: {data_dir}", file=sys.stderr)
        return 2
    indexes = [discover_ms_archive(data_dir / "ms"), discover_rgb_folder(data_dir / "rgb")]
    for index in indexes:
        time_load(index, args.tile_size, args.workers)

    print(f"tile size {args.tile_size}, {default_workers()} cores visible, median of {args.repeats} runs")
    rates: dict[int, float] = {}
    for workers in sorted({1, args.workers}):
        total_wall = total_files = 0.0
        for index in indexes:
            runs = [time_load(index, args.tile_size, workers) for _ in range(args.repeats)]
            wall = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            files = runs[0][2]
            total_wall += wall
            total_files += files
            print(f"  workers={workers} {index.modality:>3}: {files:4d} files {wall:6.2f} s "
                  f"{files / wall:6.0f} files/s  CPU use {cpu / wall:4.2f}  CPU {1000 * cpu / files:4.2f} ms/file")
        rates[workers] = total_files / total_wall
        print(f"  workers={workers} all: {total_files:.0f} files {total_wall:6.2f} s {rates[workers]:6.0f} files/s")
    if len(rates) > 1:
        print(f"speed-up {args.workers} workers vs 1: {rates[args.workers] / rates[1]:.2f}x "
              f"(control, GIL-free sha256 on {args.workers} threads now: {control_speedup(args.workers):.2f}x)")
    if hasattr(os, "getloadavg"):
        print("load average (1/5/15 min): " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
