"""`sembridge label --model BUNDLE --scene FILE.tif --out DIR`: label a scene, write GIS outputs.

`--scenes A.tif B.tif ...` (or any label run under torchrun) labels a batch: the scenes, or the row strips of
fewer scenes than processes, are shared among torchrun's processes (labelling.batch).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .runtime import add_runtime_arguments


def _numbers(what: str, count: int | None, kind):
    def parse(text: str):
        from sembridge_engine.labelling.options import parse_numbers

        try:
            return parse_numbers(text, what, count, kind)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def band_presets() -> list[str]:
    from sembridge_engine.data.bands import BAND_PRESETS

    return list(BAND_PRESETS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sembridge_engine.labelling.options import DEFAULT_BATCH, RADIOMETRY_MODES, LabelOptions

    parser.add_argument("--model", required=True, metavar="BUNDLE", help="model bundle (.sembridge)")
    scenes = parser.add_mutually_exclusive_group(required=True)
    scenes.add_argument("--scene", metavar="FILE", help="GeoTIFF (or any GDAL raster) to label")
    scenes.add_argument("--scenes", nargs="+", metavar="FILE",
                        help="several scenes, shared among the processes when run under torchrun; writes "
                        "batch_summary.json and a GeoPackage index of the class rasters")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--tile", type=int, default=None, metavar="N",
                        help="window size in scene pixels (default: the model's training footprint at the scene's resolution)")
    parser.add_argument("--stride", type=int, default=None, metavar="N", help="window step in scene pixels, <= tile (default tile/2)")
    parser.add_argument("--footprint", type=float, default=None, metavar="METRES",
                        help="ground one window covers, overriding the model's training footprint")
    parser.add_argument("--force-scale", action="store_true",
                        help="label even when the scene is far coarser or finer than the model's training data")
    parser.add_argument("--radiometry", choices=RADIOMETRY_MODES, default=LabelOptions.radiometry,
                        help="map the scene's values onto the training images': auto (percentiles, when they differ), "
                        "dtype (full dtype ranges) or none (default auto)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N", help=f"windows per model batch (default {DEFAULT_BATCH})")
    parser.add_argument("--bands", type=_numbers("--bands", None, int), default=None, metavar="R,G,B",
                        help="1-based scene bands for the model's inputs (default: from band descriptions / colour interpretation)")
    parser.add_argument("--band-preset", default=None, choices=band_presets(), metavar="NAME",
                        help=f"names the scene's bands when the file carries no descriptions: {', '.join(band_presets())}")
    parser.add_argument("--nodata", type=float, default=None, metavar="V", help="nodata value overriding the file's")
    parser.add_argument("--window", type=_numbers("--window", 4, int), default=None, metavar="COL,ROW,WIDTH,HEIGHT",
                        help="label only this pixel window of the scene")
    parser.add_argument("--extent", type=_numbers("--extent", 4, float), default=None, metavar="XMIN,YMIN,XMAX,YMAX",
                        help="label only this extent, in the scene's CRS units")
    add_runtime_arguments(parser)
    parser.add_argument("--probabilities", action="store_true", help="also write a per-class probability GeoTIFF")
    parser.add_argument("--no-polygons", action="store_true", help="skip the GeoPackage of class polygons")
    parser.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    parser.add_argument("--plan", action="store_true", help="only print the pre-flight estimate (windows, memory, time)")


def options_from_args(args):
    """The job's LabelOptions from the parsed command line (validated by LabelOptions itself)."""
    from sembridge_engine.labelling.options import LabelOptions, PixelWindow

    return LabelOptions(
        tile=args.tile, stride=args.stride, batch=args.batch, bands=args.bands, band_preset=args.band_preset,
        nodata=args.nodata, device=args.device,
        probabilities=args.probabilities, polygons=not args.no_polygons, preview=not args.no_preview,
        window=PixelWindow(*args.window) if args.window else None, extent=tuple(args.extent) if args.extent else None,
        footprint=args.footprint, force_scale=args.force_scale, radiometry=args.radiometry,
    )


def _progress(event) -> None:
    from sembridge_engine.events import BatchProgress

    if isinstance(event, BatchProgress):
        print(f"\rstrip {event.done}/{event.total}", end="" if event.done < event.total else "\n", file=sys.stderr, flush=True)


def _print_plan(plan) -> None:
    for line in plan.lines():
        print(line, file=sys.stderr if line.startswith(("stopped:", "warning:")) else sys.stdout)


def _run_batch(args, scenes: list[str]) -> int:
    """Many scenes (or one under torchrun): this process's share of the jobs; rank 0 prints the batch summary."""
    from sembridge_engine.bundle import BundleError
    from sembridge_engine.events import CancelToken
    from sembridge_engine.labelling.batch import SUMMARY_NAME, label_scenes
    from sembridge_engine.labelling.predictor import open_bundle
    from sembridge_engine.labelling.scene import plan_scene

    from .train import cancel_on_signals

    dist = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from sembridge_engine.device import resolve_device
        from sembridge_engine.distributed import Distributed

        dist = Distributed.from_environment(os.environ, cuda=resolve_device(args.device).type == "cuda")
    prefix = f"rank {dist.rank}: " if dist is not None else ""
    token = CancelToken()
    try:
        options = options_from_args(args)
        bundle = open_bundle(args.model, args.backend)
        if args.plan:
            if dist is None or dist.is_main:
                for scene in scenes:
                    print(f"{scene}:")
                    _print_plan(plan_scene(bundle, scene, options))
            return 0
        with cancel_on_signals(token) if dist is not None else contextlib.nullcontext():
            summary = label_scenes(bundle, scenes, args.out, options, dist=dist, cancel=token, report=lambda record: print(
                f"{prefix}{record.name}: {record.status} in {record.seconds:.1f} s" + (f": {record.error}" if record.error else ""),
                file=sys.stderr, flush=True))
    except (BundleError, ValueError, OSError) as error:
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    finally:
        if dist is not None:
            dist.close()
    statuses = [scene["status"] for scene in summary["scenes"]]
    if dist is None or dist.is_main:
        print(f"labelled {statuses.count('finished')} of {len(statuses)} scenes in {summary['seconds']:.1f} s "
              f"on {summary['processes']} process(es)")
        for scene in summary["scenes"]:
            if scene["status"] != "finished":
                print(f"  {scene['scene']}: {scene['status']} {'; '.join(scene['errors'])}", file=sys.stderr)
        print(f"wrote {os.path.join(args.out, SUMMARY_NAME)}" + (f" and {summary['index']}" if summary.get("index") else ""))
    return 130 if "cancelled" in statuses else (1 if "failed" in statuses else 0)


def run(args) -> int:
    from sembridge_engine.bundle import BundleError
    from sembridge_engine.labelling.predictor import open_bundle
    from sembridge_engine.labelling.scene import label_scene, plan_scene

    if args.scenes or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _run_batch(args, args.scenes or [args.scene])
    try:
        options = options_from_args(args)
        bundle = open_bundle(args.model, args.backend)
        plan = plan_scene(bundle, args.scene, options)
        _print_plan(plan)
        if plan.blocked:
            return 1
        if args.plan:
            return 0
        result = label_scene(bundle, args.scene, args.out, options, callback=_progress)
    except (BundleError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"labelled in {result.seconds:.1f} s ({result.windows - result.windows_skipped} windows, {result.windows_skipped} skipped)")
    for name, share in sorted(result.class_shares.items(), key=lambda item: -item[1]):
        if share:
            print(f"  {name}: {share:.1%}")
    for path in result.paths():
        print(f"wrote {path}")
    return 0
