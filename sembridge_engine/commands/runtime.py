"""The model-runtime options shared by `sembridge classify` and `sembridge label`."""
from __future__ import annotations

import argparse


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    from sembridge_engine.labelling.predictor import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="model runtime: onnx (ONNX Runtime on the bundle's model.onnx; never imports torch), torch, "
                             "or auto (onnx when onnxruntime is installed and the bundle has the graph, else torch)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, cuda:N; mps with torch; directml or coreml with onnx (default auto)")
