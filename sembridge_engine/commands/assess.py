"""`sembridge assess --map CLASSES.tif --reference REF`: accuracy of a labelled map against reference data."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", required=True, metavar="CLASSES.tif", help="class raster written by 'sembridge label'")
    parser.add_argument("--reference", required=True, metavar="REF",
                        help="labelled points or polygons (GeoPackage, shapefile, ...) or a reference class raster")
    parser.add_argument("--class-column", default=None, metavar="NAME",
                        help="column holding the reference class (default: class, class_name or label)")
    parser.add_argument("--layer", default=None, help="layer of a multi-layer vector file")
    parser.add_argument("--out", default=None, metavar="PREFIX",
                        help="writes PREFIX.json and PREFIX_<unit>.csv (default: beside the map, <scene>_assessment)")


def default_prefix(map_path: Path) -> Path:
    stem = map_path.stem[: -len("_classes")] if map_path.stem.endswith("_classes") else map_path.stem
    return map_path.with_name(f"{stem}_assessment")


def run(args) -> int:
    from sembridge_engine.labelling.assess import assess_to_files

    map_path = Path(args.map)
    try:
        assessment, written = assess_to_files(map_path, args.reference, Path(args.out) if args.out else default_prefix(map_path),
                                              class_column=args.class_column, layer=args.layer)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for accuracy in assessment.accuracies:
        low, high = accuracy.interval()
        print(f"{accuracy.unit}: {accuracy.samples} samples, overall accuracy {accuracy.overall:.1%} "
              f"(95% CI {low:.1%}-{high:.1%})")
        for entry in accuracy.per_class():
            cells = [f"{key.split('_')[0]} {entry[key]:.1%}" if entry[key] is not None else f"{key.split('_')[0]} -"
                     for key in ("producers_accuracy", "users_accuracy", "f1")]
            print(f"  {entry['class_name']}: {', '.join(cells)} (reference {entry['reference_count']}, map {entry['map_count']})")
    unknown = assessment.details.get("unknown_reference_classes")
    if unknown:
        print(f"warning: reference classes not in the map, left out: {', '.join(unknown)}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0
