"""`sembridge classify --model BUNDLE PATH...`: top-k classes for image files and folders."""
from __future__ import annotations

import argparse
import sys

from sembridge_engine.labelling.options import RADIOMETRY_MODES

from .runtime import add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="BUNDLE", help="model bundle (.sembridge)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="PNG/JPEG/TIFF/GeoTIFF files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="classes listed per file (default 3)")
    parser.add_argument("--batch", type=int, default=32, metavar="N", help="files per model batch (default 32)")
    parser.add_argument("--radiometry", choices=RADIOMETRY_MODES, default="auto",
                        help="map each image's values onto the training images' (as 'sembridge label' does; default auto)")
    add_runtime_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    output.add_argument("--csv", metavar="FILE", help="write one row per file (path, predicted_class, confidence, further ranks, error) to FILE")


def run(args) -> int:
    import json

    from sembridge_engine.bundle import BundleError
    from sembridge_engine.labelling.predictor import open_bundle
    from sembridge_engine.labelling.classify import classify_files
    from sembridge_engine.labelling.prediction_table import check_table_target, write_predictions_csv

    try:
        if args.csv:
            check_table_target(args.csv)
        bundle = open_bundle(args.model, args.backend)
        results = classify_files(bundle, args.paths, top_k=args.top_k, batch_size=args.batch, device=args.device,
                                 radiometry=args.radiometry)
    except (BundleError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not results:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=2))
    elif args.csv:
        try:
            write_predictions_csv(args.csv, results)
        except OSError as error:
            print(f"error: cannot write {args.csv}: {error.strerror or error}", file=sys.stderr)
            return 1
        print(f"wrote {args.csv} ({len(results)} files)")
    else:
        for result in results:
            if result.top is None:
                continue
            print(f"{result.path}: " + ", ".join(f"{name} {probability:.3f}" for name, probability in result.top))
    for result in results:
        if result.warning:
            print(f"warning: {result.path}: {result.warning}", file=sys.stderr)
    failed = [result for result in results if result.error]
    for result in failed:
        print(f"skipped {result.path}: {result.error}", file=sys.stderr)
    return 1 if len(failed) == len(results) else 0
