"""Frozen entry point of the labelling-only build: `sembridge classify` and `sembridge label`, ONNX Runtime, no torch."""
import sys

from sembridge_engine.cli import main

sys.exit(main(commands=("classify", "label")))
