"""Scene labelling with the ONNX backend vs the torch backend (a script, not a pass/fail test).

Each (scene, backend) pair runs ``label_scene`` in its own fresh process, as ``sembridge label
--backend ...`` would: the child reports its start-up (imports + opening the bundle; the onnx child
never imports torch), its RSS after start-up, its peak RSS (``ru_maxrss``), the labelling seconds and
windows per second. Peak RSS is the child's own high-water mark (``VmHWM``): ``ru_maxrss`` would
report at least the parent's RSS at fork time, which Linux carries across ``execve``. Scenes are the 1k x 1k and 10k x 10k VRT mosaics of the real Landsat scene that
``bench_labelling.py`` uses; the model is the same small student, exported with its ONNX graph.
Ratios (onnx / torch) are computed from the two children of one run.

    .venv/bin/python tests/benchmarks/bench_backends.py [--threads 1] [--big 10000] [--stride 64] [--arch NAME] [--report FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_labelling import TILE, mosaic_vrt, source_scene  # noqa: E402


def child(arguments: list[str]) -> None:
    """Label one scene with one backend in this fresh process; print timings and memory as JSON."""
    backend, bundle_path, scene, out, stride, batch = arguments
    from sembridge_engine.labelling.options import LabelOptions
    from sembridge_engine.labelling.predictor import open_bundle
    from sembridge_engine.labelling.scene import label_scene

    bundle = open_bundle(bundle_path, backend)
    import geopandas  # noqa: F401  (the polygon writer's import, counted in start-up for both backends)
    import psutil

    startup_seconds = time.time() - psutil.Process().create_time()  # from process start: interpreter, imports, bundle
    startup_rss = psutil.Process().memory_info().rss / 2**20
    started = time.perf_counter()
    result = label_scene(bundle, scene, out, LabelOptions(tile=TILE, stride=int(stride), batch=int(batch), device="cpu"))
    seconds = time.perf_counter() - started
    print(json.dumps({"startup_seconds": startup_seconds, "startup_rss_mib": startup_rss, "seconds": seconds,
                      "windows_run": result.windows - result.windows_skipped, "torch_imported": "torch" in sys.modules,
                      "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's own peak resident set (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_child(backend: str, bundle: Path, scene: Path, out: Path, stride: int, batch: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, __file__, "--child", backend, str(bundle), str(scene), str(out), str(stride), str(batch)],
                               capture_output=True, text=True, check=True, env=env)
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - started
    report["windows_per_s"] = report["windows_run"] / report["seconds"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes (default 1: the machine is shared)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arch", default="shufflenet_v2_x0_5")
    parser.add_argument("--big", type=int, default=10000, help="side of the large scene in pixels (0 skips it)")
    parser.add_argument("--stride", type=int, default=TILE, help="window step (default: the tile, no overlap)")
    parser.add_argument("--report", type=Path, default=None, help="also write the output as a markdown block for BENCHMARKS.md")
    args = parser.parse_args()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    from sembridge_engine.training.outputs import export_bundle
    from tests.engine.labelling_fixtures import make_run_folder

    source = source_scene()
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as temporary:
        work = Path(temporary)
        bundle = export_bundle(make_run_folder(work / "run", arch=args.arch, tile_size=TILE, fit_steps=3))
        scenes = [("1k x 1k", mosaic_vrt(source, 1000, work / "scene_1k.vrt"))]
        if args.big:
            scenes.append((f"{args.big // 1000}k x {args.big // 1000}k", mosaic_vrt(source, args.big, work / "scene_big.vrt")))
        say(f"model {args.arch} tile {TILE}, stride {args.stride}, batch {args.batch}, {args.threads} thread(s), source {source.name}")
        say(f"{'scene':<12}{'backend':<9}{'start-up s':>11}{'RSS after start-up':>20}{'peak RSS':>10}{'label s':>9}"
              f"{'windows/s':>11}{'process s':>11}  torch imported")
        for name, scene in scenes:
            reports = {backend: run_child(backend, bundle, scene, work / f"out_{backend}_{scene.stem}", args.stride, args.batch, args.threads)
                       for backend in ("torch", "onnx")}
            for backend, report in reports.items():
                say(f"{name:<12}{backend:<9}{report['startup_seconds']:>11.2f}{report['startup_rss_mib']:>16.0f} MiB"
                      f"{report['peak_rss_mib']:>6.0f} MiB{report['seconds']:>9.1f}{report['windows_per_s']:>11.0f}"
                      f"{report['process_seconds']:>11.1f}  {report['torch_imported']}")
            onnx, torch = reports["onnx"], reports["torch"]
            say(f"{name:<12}onnx/torch: throughput x{onnx['windows_per_s'] / torch['windows_per_s']:.2f}, peak RSS "
                  f"x{onnx['peak_rss_mib'] / torch['peak_rss_mib']:.2f}, start-up x{onnx['startup_seconds'] / torch['startup_seconds']:.2f}, "
                  f"whole process x{onnx['process_seconds'] / torch['process_seconds']:.2f}")
    if args.report:
        import platform
        from datetime import date

        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        args.report.write_text(f"`python tests/benchmarks/bench_backends.py` on {platform.machine()}, {os.cpu_count()} cores, "
                               f"{date.today()}, commit {commit}\n\n```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
