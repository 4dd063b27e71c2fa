"""`sembridge export RUN_DIR`: package a run's student as a `.sembridge` model bundle."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder holding student.safetensors and student.json")
    parser.add_argument("--out", default=None, metavar="FILE", help="bundle to write (default RUN_DIR/model.sembridge)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and its onnxruntime check")
    parser.add_argument("--qgis", action="store_true",
                        help="also write <bundle>_qgis.onnx, a segmentation-shaped model with the metadata of the QGIS plugin Deepness")


def _export_qgis(bundle_path):
    from sembridge_engine.bundle import export_qgis_onnx, load_bundle, qgis_path

    path = qgis_path(bundle_path)
    return path, export_qgis_onnx(load_bundle(bundle_path), path)


def run(args) -> int:
    import json
    import zipfile

    from sembridge_engine.bundle import METADATA_NAME, BundleError
    from sembridge_engine.training.outputs import export_bundle

    try:
        out = export_bundle(args.run_dir, args.out, check_onnx=not args.no_onnx)
        qgis = _export_qgis(out) if args.qgis else None
    except (BundleError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(out) as archive:
        metadata = json.loads(archive.read(METADATA_NAME))
    print(f"wrote {out}")
    print(f"  {metadata['architecture']}, {metadata['num_classes']} classes ({', '.join(metadata['class_names'])}), "
          f"tile {metadata['tile_size']} px, bands {', '.join(metadata['band_names'])}")
    if "onnx" in metadata:
        onnx, contract = metadata["onnx"], metadata["onnx"]["input"]
        print(f"  model.onnx: raw {contract['raw_dtype']} pixels, {contract['window']} x {contract['window']} px window -> "
              f"class probabilities; checked with onnxruntime: max |probability difference| {onnx['max_abs_prob_diff']:.2e}, "
              f"max |logit difference| {onnx['max_abs_logit_diff']:.2e}")
    if qgis is not None:
        path, entries = qgis
        resolution = (f"{entries['resolution']:g} cm/px" if "resolution" in entries
                      else "not known to the bundle: set the map's resolution in Deepness")
        print(f"wrote {path} (QGIS Deepness segmentation model: {entries['tiles_size']} px tiles, "
              f"{entries['tiles_overlap']} % overlap, resolution {resolution}; "
              f"max |probability difference| {entries['sembridge_max_abs_prob_diff']:.2e})")
    return 0
