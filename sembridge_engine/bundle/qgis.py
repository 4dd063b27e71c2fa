"""QGIS export: the bundle's classifier as an ONNX model the QGIS plugin Deepness runs over map layers.

Deepness (PUTvision/qgis-plugin-deepness) cuts the map into ``tiles_size`` x ``tiles_size`` pixel
tiles at ``resolution`` cm/px, feeds each as float32 NCHW ``(raw / 255 - standardization_mean) /
standardization_std`` to the model's single input, and for a ``Segmentor`` expects one output of
per-pixel class probabilities (batch, classes, H, W) with H == W. The exported graph therefore

* takes the tile as Deepness prepares it; the standardisation written into the metadata is the
  bundle's channel normalisation re-expressed for Deepness' division by 255 (``mean * d / 255`` and
  ``std * d / 255`` for training images divided by ``d``), so the values equal training's;
* resizes it to the model's tile with training's antialiased bilinear resampling (normalising
  before or after this resize is the same: its weights sum to one), runs the model and a softmax;
* broadcasts the tile's class probabilities over the whole tile, so Deepness' sliding window with
  ``tiles_overlap`` percent overlap produces the class map, as ``sembridge label`` does.

Metadata values are JSON, as Deepness reads them. ``tiles_size`` is the key its documentation and
``tools/add_model_metadata.py`` write; ``tile_size`` (the key its model code reads) is written too.
``resolution`` is written only when the bundle knows the ground resolution of its training images.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sembridge_engine.atomic import write_bytes_atomic

from .format import BundleError
from .onnx_export import LOGIT_TOLERANCE, raw_windows, torch_onnx_export, training_footprint, training_raw_dtype
from .onnx_graph import resize_constants

QGIS_SUFFIX = "_qgis.onnx"
DEFAULT_OVERLAP_PERCENT = 50  # the labeller's default stride is half a window
DEEPNESS_DIVISOR = 255.0
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
CHECK_BATCH = 3


def qgis_path(bundle_path) -> Path:
    """Where ``sembridge export --qgis`` writes the QGIS model: beside the bundle, ``<name>_qgis.onnx``."""
    bundle_path = Path(bundle_path)
    return bundle_path.with_name(bundle_path.stem + QGIS_SUFFIX)


class TileClassifierAsSegmentor(torch.nn.Module):
    """Standardised (N, C, T, T) tile -> resize to the model's tile -> softmax -> (N, K, T, T) constant maps."""

    def __init__(self, model: torch.nn.Module, tiles_size: int, tile_size: int) -> None:
        super().__init__()
        constants = resize_constants(tiles_size, tiles_size, tile_size)
        self.model, self.tiles_size = model, tiles_size
        self.register_buffer("rows", torch.from_numpy(constants["resize_rows"]))
        self.register_buffer("cols", torch.from_numpy(constants["resize_cols"]))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(self.model(torch.matmul(torch.matmul(self.rows, tiles), self.cols)), dim=1)
        return probabilities[:, :, None, None].expand(-1, -1, self.tiles_size, self.tiles_size)


def deepness_metadata(metadata: dict[str, Any], tiles_size: int, overlap: int, gsd: float | None) -> dict[str, Any]:
    """Deepness' keys (JSON-encodable values) for a bundle's model at ``tiles_size`` px tiles."""
    from sembridge_engine.data.readers import dtype_divisor

    factor = dtype_divisor(training_raw_dtype(metadata)) / DEEPNESS_DIVISOR
    stats = metadata["channel_stats"]
    entries: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(index): str(name) for index, name in enumerate(metadata["class_names"])},
        "tiles_size": tiles_size, "tile_size": tiles_size, "tiles_overlap": int(overlap),
        "standardization_mean": [float(value) * factor for value in stats["mean"]],
        "standardization_std": [float(value) * factor for value in stats["std"]],
        "seg_thresh": 0.0,
    }
    if gsd is not None:
        entries["resolution"] = round(gsd * 100.0, 4)
    return entries


def deepness_preprocess(raw: np.ndarray, entries: dict[str, Any]) -> np.ndarray:
    """What Deepness feeds the model for raw (N, C, T, T) tiles: /255, then its standardisation."""
    mean = np.asarray(entries["standardization_mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(entries["standardization_std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((raw.astype(np.float32) * np.float32(1.0 / DEEPNESS_DIVISOR)) - mean) / std


def _check(onnx_bytes: bytes, bundle, entries: dict[str, Any], tiles_size: int) -> float:
    """Largest |probability| difference between Deepness' way through the graph and the PyTorch path."""
    import onnxruntime

    from sembridge_engine.data.transforms import preprocess_arrays

    raw = raw_windows(np.random.default_rng(0), (CHECK_BATCH, bundle.in_channels, tiles_size, tiles_size), training_raw_dtype(bundle.metadata))
    with torch.inference_mode():
        expected = torch.softmax(bundle.model(preprocess_arrays(raw, bundle.tile_size, bundle.channel_stats)), dim=1).numpy()
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    maps = session.run(None, {INPUT_NAME: deepness_preprocess(raw, entries)})[0]
    return float(np.abs(maps - expected[:, :, None, None]).max())


def export_qgis_onnx(bundle, out, *, tiles_overlap: int = DEFAULT_OVERLAP_PERCENT) -> dict[str, Any]:
    """Write ``bundle``'s model as a Deepness segmentation ONNX at ``out`` (atomically); returns its metadata."""
    import onnx

    out = Path(out)
    if not 0 <= tiles_overlap < 100:
        raise BundleError(f"{out}: tiles_overlap is a percentage of the tile, 0-99; got {tiles_overlap}")
    gsd, image_pixels = training_footprint(bundle.metadata)
    tiles_size = int(image_pixels or bundle.tile_size)
    entries = deepness_metadata(bundle.metadata, tiles_size, tiles_overlap, gsd)
    wrapper = TileClassifierAsSegmentor(bundle.model, tiles_size, bundle.tile_size).eval()
    example = torch.zeros(1, bundle.in_channels, tiles_size, tiles_size)
    proto = onnx.load_from_string(torch_onnx_export(wrapper, (example,), [INPUT_NAME], [OUTPUT_NAME],
                                                    {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}))
    entries["sembridge_max_abs_prob_diff"] = _check(proto.SerializeToString(), bundle, entries, tiles_size)
    if not entries["sembridge_max_abs_prob_diff"] < LOGIT_TOLERANCE:
        raise BundleError(f"{out}: QGIS export differs from PyTorch by {entries['sembridge_max_abs_prob_diff']:.3g} in probabilities")
    entries["sembridge_source"] = f"{bundle.path.name}: {bundle.metadata['architecture']}, bands {', '.join(bundle.band_names)}"
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    write_bytes_atomic(out, proto.SerializeToString())
    return entries
