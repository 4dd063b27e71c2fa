"""`sembridge label --model BUNDLE --scene FILE.tif --out DIR`: label a scene, write GIS outputs."""
from __future__ import annotations

import argparse
import sys


def _band_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bands takes 1-based band numbers separated by commas, e.g. 3,2,1; got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="BUNDLE", help="model bundle (.sembridge)")
    parser.add_argument("--scene", required=True, metavar="FILE", help="GeoTIFF (or any GDAL raster) to label")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--tile", type=int, default=None, metavar="N", help="window size in scene pixels (default: the model's tile size)")
    parser.add_argument("--stride", type=int, default=None, metavar="N", help="window step in scene pixels, <= tile (default tile/2)")
    parser.add_argument("--batch", type=int, default=32, metavar="N", help="windows per model batch (default 32)")
    parser.add_argument("--bands", type=_band_list, default=None, metavar="R,G,B",
                        help="1-based scene bands for the model's inputs (default: from band descriptions / colour interpretation)")
    parser.add_argument("--nodata", type=float, default=None, metavar="V", help="nodata value overriding the file's")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--probabilities", action="store_true", help="also write a per-class probability GeoTIFF")
    parser.add_argument("--no-polygons", action="store_true", help="skip the GeoPackage of class polygons")
    parser.add_argument("--plan", action="store_true", help="only print the pre-flight estimate (windows, memory, time)")


def _progress(event) -> None:
    from sembridge_engine.events import BatchProgress

    if isinstance(event, BatchProgress):
        print(f"\rstrip {event.done}/{event.total}", end="" if event.done < event.total else "\n", file=sys.stderr, flush=True)


def run(args) -> int:
    from sembridge_engine.bundle import BundleError, load_bundle
    from sembridge_engine.labelling.scene import label_scene, plan_scene

    try:
        bundle = load_bundle(args.model)
        plan = plan_scene(bundle, args.scene, tile=args.tile, stride=args.stride, batch=args.batch,
                          bands=args.bands, device=args.device, nodata=args.nodata, write_probabilities=args.probabilities)
        print(f"{plan.width} x {plan.height} px, bands {plan.band_indexes}, tile {plan.tile} stride {plan.stride}: "
              f"{plan.windows} windows (~{plan.windows_skipped_estimate} nodata, skipped), "
              f"~{plan.memory_bytes / 2**20:.0f} MiB, ~{plan.seconds_estimate:.0f} s on {plan.device}")
        if args.plan:
            return 0
        result = label_scene(bundle, args.scene, args.out, tile=args.tile, stride=args.stride, batch=args.batch,
                             bands=args.bands, nodata=args.nodata, device=args.device,
                             write_probabilities=args.probabilities, write_polygons=not args.no_polygons,
                             callback=_progress)
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
