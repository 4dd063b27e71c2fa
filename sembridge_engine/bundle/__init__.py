"""Model bundles: one ``.sembridge`` zip a user can copy, share and load without running any code.

A bundle holds ``weights.safetensors`` (tensors only), ``metadata.json`` (architecture, classes and
colours, bands, normalisation, tile size, training summary, versions) and, unless skipped,
``model.onnx``: a self-contained graph from raw pixel values to class probabilities, checked
against the PyTorch path with onnxruntime when written.

``format`` (constants, validation, the metadata-only reader) imports neither torch nor onnx, so
the torch-free labelling runtime can open bundles; ``model`` (load/write with PyTorch),
``onnx_export`` and ``qgis`` need torch. Names are imported lazily, as in ``sembridge_engine.data``.
"""
from __future__ import annotations

from sembridge_engine.lazy import lazy_exports

_EXPORTS = {
    "format": ("BUNDLE_SUFFIX", "BundleError", "BundleInfo", "METADATA_NAME", "ONNX_NAME", "WEIGHTS_NAME",
               "read_bundle_info"),
    "model": ("ModelBundle", "build_model", "load_bundle", "load_weights", "write_bundle"),
    "onnx_export": ("export_onnx", "export_pixels_onnx"),
    "qgis": ("export_qgis_onnx", "qgis_path"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
