"""`sembridge export RUN_DIR`: package a run's student as a `.sembridge` model bundle."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder holding student.safetensors and student.json")
    parser.add_argument("--out", default=None, metavar="FILE", help="bundle to write (default RUN_DIR/model.sembridge)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and its onnxruntime check")


def run(args) -> int:
    import json
    import zipfile

    from sembridge_engine.bundle import METADATA_NAME, BundleError
    from sembridge_engine.training.outputs import export_bundle

    try:
        out = export_bundle(args.run_dir, args.out, check_onnx=not args.no_onnx)
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
    return 0
