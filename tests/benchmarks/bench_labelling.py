"""Scene-labelling benchmark (a script, not a pass/fail test): prints ratios and measurements.

(a) throughput of ``label_scene`` vs bare batched model inference on exactly the same windows
    (ratio = bare time / labelling time; 1.0 means labelling adds nothing around the model),
(b) peak RSS of labelling a 1k x 1k and a 10k x 10k scene, each in its own subprocess
    (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child), which should be close,
(c) megapixels per second on the CPU,
(d) the cost of radiometry matching: sampling a scene's percentiles (a lattice of small windowed reads)
    on a 1k and a 10k scene, and labelling with the per-window mapping vs without,
(e) an all-nodata sparse scene: the plan's time estimate against the real run, and peak RSS.

The bundle records a footprint and input radiometry like a trained one (demo photos at 0.3 m); windows
are set explicitly (``tile``) because the Landsat pixels are far coarser than the photos, and the
Landsat values differ from the photos', so ``auto`` radiometry maps every window.

Scenes are VRT mosaics of the real Landsat ``RGB.byte.tif`` (from ../shared/data/scenes, or the demo
subset when that is absent), so pixels and nodata borders are real. The model is a small
shufflenet_v2_x0_5 student (64 px tiles) built like the test fixtures: the architecture only sets the
model cost, and a small one makes the labelling overhead most visible.

    .venv/bin/python tests/benchmarks/bench_labelling.py [--threads 1] [--size 1000] [--big 10000] [--big-stride 64] [--arch NAME]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SHARED_SCENE = ROOT.parent / "shared" / "data" / "scenes" / "RGB.byte.tif"
TILE = 64
REPEATS = 3  # best of three: the machine is shared, single runs vary by +-30 %


def source_scene() -> Path:
    from resources import demo_project

    return SHARED_SCENE if SHARED_SCENE.is_file() else demo_project() / "scene" / "scene_subset.tif"


def mosaic_vrt(source: Path, size: int, path: Path) -> Path:
    """A size x size VRT tiling ``source`` side by side (real pixels, no copy), cropped to size."""
    import rasterio

    with rasterio.open(source) as dataset:
        width, height, count = dataset.width, dataset.height, dataset.count
        transform, crs, nodata, dtype = dataset.transform, dataset.crs.to_wkt(), dataset.nodata, dataset.dtypes[0]
    vrt_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}[dtype]
    bands = []
    for band in range(1, count + 1):
        sources = []
        for top in range(0, size, height):
            for left in range(0, size, width):
                w, h = min(width, size - left), min(height, size - top)
                sources.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{band}</SourceBand>'
                    f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="{left}" yOff="{top}" xSize="{w}" ySize="{h}"/></SimpleSource>'
                )
        nodata_tag = f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else ""
        interp = ("Red", "Green", "Blue")[band - 1] if count == 3 else "Undefined"
        bands.append(f'<VRTRasterBand dataType="{vrt_type}" band="{band}">{nodata_tag}<ColorInterp>{interp}</ColorInterp>{"".join(sources)}</VRTRasterBand>')
    geotransform = ", ".join(repr(value) for value in transform.to_gdal())
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{crs}</SRS>'
                    f"<GeoTransform>{geotransform}</GeoTransform>{''.join(bands)}</VRTDataset>")
    return path


def build_bundle(workdir: Path, arch: str) -> Path:
    from sembridge_engine.training.outputs import export_bundle
    from tests.engine.labelling_fixtures import make_run_folder

    return export_bundle(make_run_folder(workdir / "run", arch=arch, tile_size=TILE, fit_steps=3, rgb_gsd=0.3), check_onnx=False)


def bare_inference_seconds(bundle, scene: Path, stride: int, batch: int) -> tuple[float, int]:
    """Predictor time alone (preprocessing + model) on the raw windows labelling classifies, same batch size."""
    import numpy as np
    import rasterio

    from sembridge_engine.labelling.predictor import make_predictor
    from sembridge_engine.labelling.windows import scene_layout

    with rasterio.open(scene) as dataset:
        pixels = dataset.read()
        valid = ~(pixels == dataset.nodata).all(axis=0) if dataset.nodata is not None else np.ones(pixels.shape[1:], bool)
    layout = scene_layout(pixels.shape[2], pixels.shape[1], TILE, stride)
    origins = [(y, x) for y in layout.ys for x in layout.xs if valid[y:y + TILE, x:x + TILE].any()]
    tiles = np.stack([pixels[:, y:y + TILE, x:x + TILE] for y, x in origins])
    predictor = make_predictor(bundle, "cpu")
    predictor.predict(tiles[:batch])
    best = best_cpu = float("inf")
    for _ in range(REPEATS):
        started, started_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(tiles), batch):
            predictor.predict(tiles[start:start + batch])
        best, best_cpu = min(best, time.perf_counter() - started), min(best_cpu, time.process_time() - started_cpu)
    return best, best_cpu, len(origins)


def label_once(bundle, scene: Path, out: Path, stride: int, batch: int, **options) -> dict:
    from sembridge_engine.labelling.options import LabelOptions
    from sembridge_engine.labelling.scene import label_scene

    started, started_cpu = time.perf_counter(), time.process_time()
    result = label_scene(bundle, scene, out, LabelOptions(tile=TILE, stride=stride, batch=batch, device="cpu", **options))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "windows_run": result.windows - result.windows_skipped,
            "windows": result.windows}


def best_seconds(call, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def sampling_seconds(bundle, scene: Path) -> tuple[float, int]:
    """Opening a scene with radiometry auto minus opening it with none: the percentile sampling alone."""
    from sembridge_engine.labelling.options import LabelOptions
    from sembridge_engine.labelling.source import open_source

    def opened(mode: str):
        source = open_source(scene, bundle, LabelOptions(tile=TILE, radiometry=mode))
        source.dataset.close()
        return source

    samples = opened("auto").radiometry.sample_pixels
    return best_seconds(lambda: opened("auto")) - best_seconds(lambda: opened("none")), samples


def empty_scene(path: Path, size: int) -> Path:
    """An all-nodata ``size`` x ``size`` GeoTIFF (sparse: no block written), as a huge scene outside its data."""
    import rasterio
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", nodata=0, crs="EPSG:32618",
                       transform=Affine(30, 0, 1e5, 0, -30, 3e6), tiled=True, sparse_ok=True):
        pass
    return path


def child(arguments: list[str]) -> None:
    """Label one scene in this fresh process and print timing plus this process's peak RSS."""
    import torch

    bundle_path, scene, out, stride, batch, threads = arguments
    torch.set_num_threads(int(threads))
    from sembridge_engine.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    import geopandas  # noqa: F401  (imported by the polygon writer; counted in the baseline, not the labelling)
    import psutil
    import rasterio

    baseline_mib = psutil.Process().memory_info().rss / 2**20

    with rasterio.open(scene) as dataset:
        megapixels = dataset.width * dataset.height / 1e6
    report = {}
    if Path(scene).stem.startswith("empty"):
        from sembridge_engine.labelling.options import LabelOptions
        from sembridge_engine.labelling.scene import plan_scene

        report["plan_seconds"] = plan_scene(bundle, scene, LabelOptions(tile=TILE, stride=int(stride), batch=int(batch),
                                                                         device="cpu")).seconds_estimate
    report.update(label_once(bundle, Path(scene), Path(out), int(stride), int(batch)))
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["baseline_rss_mib"] = baseline_mib
    report["megapixels"] = megapixels
    report["mpx_per_s"] = megapixels / report["seconds"]
    print(json.dumps(report))


def run_child(bundle_path: Path, scene: Path, out: Path, stride: int, batch: int, threads: int) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", str(bundle_path), str(scene), str(out), str(stride), str(batch), str(threads)],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="scene the mosaics repeat (default: the shared Landsat scene)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the machine is shared)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arch", default="shufflenet_v2_x0_5", help="student architecture (default: the smallest)")
    parser.add_argument("--size", type=int, default=1000, help="side of the scene of (a) in pixels (larger amortises per-scene costs)")
    parser.add_argument("--big", type=int, default=10000, help="side of the large scene in pixels (0 skips it)")
    parser.add_argument("--big-stride", type=int, default=TILE, help="stride for the large scene (default: tile, no overlap)")
    parser.add_argument("--empty", type=int, default=20000, help="side of the all-nodata scene in pixels (0 skips it)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sembridge_engine.bundle import load_bundle

    source = args.source or source_scene()
    with tempfile.TemporaryDirectory(prefix="bench_labelling_") as temporary:
        work = Path(temporary)
        bundle_path = build_bundle(work, args.arch)
        bundle = load_bundle(bundle_path)
        small = mosaic_vrt(source, args.size, work / "scene_small.vrt")
        print(f"model {bundle.metadata['architecture']} tile {TILE}, CPU threads {args.threads}, batch {args.batch}, source {source.name}")

        print(f"\n(a) labelling throughput vs bare batched inference on the same windows ({args.size} x {args.size} px)")
        for stride in (TILE // 2, TILE):
            bare, bare_cpu, windows = bare_inference_seconds(bundle, small, stride, args.batch)
            runs = [label_once(bundle, small, work / f"core_{stride}_{repeat}", stride, args.batch,
                               polygons=False, preview=False) for repeat in range(REPEATS + 1)]
            cold, core = runs[0], min(runs[1:], key=lambda run: run["seconds"])
            core_cpu = min(run["cpu_seconds"] for run in runs[1:])
            fulls = [label_once(bundle, small, work / f"full_{stride}_{repeat}", stride, args.batch) for repeat in range(REPEATS)]
            full, full_cpu = min(run["seconds"] for run in fulls), min(run["cpu_seconds"] for run in fulls)
            assert core["windows_run"] == windows, (core, windows)
            print(f"  stride {stride:>2}: {windows} windows; bare model {bare:.2f} s wall / {bare_cpu:.2f} s CPU ({windows / bare:.0f} win/s)")
            print(f"    label, rasters only: {core['seconds']:.2f} s wall / {core_cpu:.2f} s CPU -> ratio {bare / core['seconds']:.2f} wall, "
                  f"{bare_cpu / core_cpu:.2f} CPU (first call {cold['seconds']:.2f} s)")
            print(f"    label, all outputs (+ GeoPackage, preview): {full:.2f} s wall / {full_cpu:.2f} s CPU -> ratio "
                  f"{bare / full:.2f} wall, {bare_cpu / full_cpu:.2f} CPU")

        print("\n(b)+(c) peak RSS and Mpx/s, each scene labelled in its own process")
        side = f"{args.size} x {args.size}"
        scenes = [(side, small, TILE // 2), (side, small, args.big_stride)]
        if args.big:
            scenes.append((f"{args.big // 1000}k x {args.big // 1000}k", mosaic_vrt(source, args.big, work / "scene_big.vrt"), args.big_stride))
        for name, scene, stride in scenes:
            report = run_child(bundle_path, scene, work / f"rss_{scene.stem}_{stride}", stride, args.batch, args.threads)
            print(f"  {name} stride {stride}: {report['windows']} windows ({report['windows_run']} classified), "
                  f"{report['seconds']:.1f} s, {report['mpx_per_s']:.2f} Mpx/s, peak RSS {report['peak_rss_mib']:.0f} MiB "
                  f"(after imports and bundle load {report['baseline_rss_mib']:.0f} MiB)")

        print("\n(d) radiometry matching: percentile sampling (lattice of windowed reads) and the per-window mapping")
        for name, scene in [(side, small)] + ([(scenes[-1][0], scenes[-1][1])] if args.big else []):
            seconds, samples = sampling_seconds(bundle, scene)
            print(f"  {name}: sampling {seconds * 1000:.0f} ms for {samples} pixels per band")
        auto = min(label_once(bundle, small, work / f"auto_{repeat}", TILE, args.batch, polygons=False, preview=False)["seconds"]
                   for repeat in range(REPEATS))
        plain = min(label_once(bundle, small, work / f"none_{repeat}", TILE, args.batch, polygons=False, preview=False,
                               radiometry="none")["seconds"] for repeat in range(REPEATS))
        sample_1k = sampling_seconds(bundle, small)[0]
        print(f"  {side} stride {TILE}, rasters only: radiometry auto {auto:.2f} s vs none {plain:.2f} s -> ratio {plain / auto:.2f}; "
              f"sampling is {sample_1k / auto:.1%} of the labelling")

        if args.empty:
            scene = empty_scene(work / "empty.tif", args.empty)
            report = run_child(bundle_path, scene, work / "rss_empty", TILE, args.batch, args.threads)
            print(f"\n(e) all-nodata sparse scene {args.empty} x {args.empty}, stride {TILE}: planned {report['plan_seconds']:.1f} s, "
                  f"labelled in {report['seconds']:.1f} s (estimate / real {report['plan_seconds'] / report['seconds']:.2f}), "
                  f"peak RSS {report['peak_rss_mib']:.0f} MiB (after imports and bundle load {report['baseline_rss_mib']:.0f} MiB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
