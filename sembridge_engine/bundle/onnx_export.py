"""The bundle's ONNX graph: raw pixel values in, class probabilities out, checked against PyTorch.

Input contract (also written into the bundle's metadata under ``onnx.input``):

* ``pixels``: float32 (batch, bands, height, width), NCHW, the model's bands in the bundle's band
  order, holding **raw** pixel values as stored in files of the training images' dtype
  (``raw_dtype``: e.g. 0..255 for 8-bit photos, DN for 16-bit reflectance), cast to float32 (exact for
  every integer up to 2**24). NaN must be replaced (the labeller uses 0) and all-nodata windows skipped.
* Inside the graph, exactly as training prepared its tiles (``data.transforms.preprocess_arrays``):
  divide by ``divisor`` (``data.readers.dtype_divisor`` of ``raw_dtype``), resize to the model's tile
  with PyTorch's antialiased bilinear resampling, normalise with the training split's channel mean/std.
* The input is ``window`` x ``window`` pixels (batch dynamic), chosen at export. The resize is two
  constant matrices, so ``onnx_graph.graph_for_window`` makes the same graph for any other window
  size without PyTorch (the torch-free labeller does that for its window).
* Outputs: ``logits`` and ``probabilities`` (softmax), both (batch, classes).

The check at export runs seeded raw windows of the default size and of another, non-square size
through the PyTorch path (``preprocess_arrays`` -> model -> softmax) and through onnxruntime, and
stores the largest differences.
"""
from __future__ import annotations

import io
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from .format import ONNX_NAME, BundleError
from .onnx_graph import PIXELS_INPUT, RESIZE_COLS, RESIZE_ROWS, graph_for_window, resize_constants, set_window

ONNX_OPSET = 17
LOGIT_TOLERANCE = 1e-3
CHECK_BATCHES = (1, 4)
OUTPUTS = ("logits", "probabilities")
# Bundles whose metadata does not say what the training images were: RGB photos, 8-bit.
DEFAULT_RAW_DTYPE = "uint8"


def torch_onnx_export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
                      output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """ONNX bytes of ``module`` (legacy exporter; the dynamo exporter where that is gone)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(module, inputs, buffer, dynamo=False, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=ONNX_OPSET)
        except (TypeError, RuntimeError, NotImplementedError):
            dims: dict[str, Any] = {}
            shapes = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in dynamic_axes.get(input_name, {}).items()}
                           for input_name in input_names)
            buffer = io.BytesIO()
            torch.onnx.export(module, inputs, buffer, dynamo=True, input_names=input_names, output_names=output_names,
                              dynamic_shapes=shapes, opset_version=ONNX_OPSET)
    return buffer.getvalue()


def export_onnx(model: torch.nn.Module, in_channels: int, tile_size: int) -> bytes:
    """The bare model: normalised (batch, C, tile, tile) tiles -> logits (for benchmarks of the network alone)."""
    example = torch.zeros(1, in_channels, tile_size, tile_size)
    return torch_onnx_export(model, (example,), ["input"], ["logits"], {"input": {0: "batch"}, "logits": {0: "batch"}})


class PixelsToProbabilities(torch.nn.Module):
    """Raw pixels -> divide -> resize (two matrix products) -> normalise -> model -> (logits, probabilities)."""

    def __init__(self, model: torch.nn.Module, divisor: float, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model, self.divisor = model, float(divisor)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor, resize_rows: torch.Tensor, resize_cols: torch.Tensor):
        tiles = torch.matmul(torch.matmul(resize_rows, pixels / self.divisor), resize_cols)
        logits = self.model((tiles - self.mean) / self.std)
        return logits, torch.softmax(logits, dim=1)


def export_pixels_onnx(model: torch.nn.Module, in_channels: int, tile_size: int, window: int, raw_dtype: str,
                       mean: Sequence[float], std: Sequence[float]) -> bytes:
    """The self-contained graph (see the module docstring) with ``window`` x ``window`` as its default input size."""
    import onnx

    from sembridge_engine.data.readers import dtype_divisor

    wrapper = PixelsToProbabilities(model, dtype_divisor(raw_dtype), mean, std).eval()
    constants = resize_constants(window, window, tile_size)
    example = (torch.zeros(1, in_channels, window, window), *(torch.from_numpy(constants[name]) for name in (RESIZE_ROWS, RESIZE_COLS)))
    # Exported with the matrices as inputs so they keep their names, then turned into initialisers.
    axes = {PIXELS_INPUT: {0: "batch", 2: "height", 3: "width"}, RESIZE_ROWS: {1: "height"}, RESIZE_COLS: {0: "width"},
            **{name: {0: "batch"} for name in OUTPUTS}}
    proto = onnx.load_from_string(torch_onnx_export(wrapper, example, [PIXELS_INPUT, RESIZE_ROWS, RESIZE_COLS], list(OUTPUTS), axes))
    inputs = [value for value in proto.graph.input if value.name == PIXELS_INPUT]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    set_window(proto, window, window, tile_size)
    return proto.SerializeToString()


def training_raw_dtype(metadata: dict[str, Any]) -> str:
    """The dtype of the images the model was trained on, where the bundle records it (``input_radiometry``)."""
    radiometry = metadata.get("input_radiometry")
    if isinstance(radiometry, dict) and isinstance(radiometry.get("source_dtype"), str):
        return radiometry["source_dtype"]
    return DEFAULT_RAW_DTYPE


def training_footprint(metadata: dict[str, Any]) -> tuple[float | None, int | None]:
    """(metres per pixel, pixels across) of a typical training image, where the bundle's ``footprint`` records them."""
    footprint = metadata.get("footprint")
    if not isinstance(footprint, dict):
        return None, None
    metres, gsd, pixels = footprint.get("metres"), footprint.get("gsd_m"), footprint.get("image_px")
    if not all(isinstance(value, (int, float)) and value > 0 for value in (metres, gsd)):
        return None, None
    across = pixels if isinstance(pixels, (int, float)) and pixels > 0 else metres / gsd
    return float(gsd), max(1, round(across))


def default_window(metadata: dict[str, Any]) -> int:
    """The graph's input size in pixels: a training image's size where the bundle knows it, else the model's tile."""
    return training_footprint(metadata)[1] or int(metadata["tile_size"])


def raw_windows(generator: np.random.Generator, shape: tuple[int, ...], raw_dtype: str) -> np.ndarray:
    """Seeded random pixel values in the range files of ``raw_dtype`` hold (16-bit: reflectance DN up to 10000)."""
    dtype = np.dtype(raw_dtype)
    if dtype.kind in "ui":
        high = min(int(np.iinfo(dtype).max), 255 if dtype.itemsize == 1 else 10000)
        return generator.integers(0, high, size=shape, endpoint=True).astype(dtype)
    return generator.random(shape, dtype=np.float32).astype(dtype)


def max_differences(onnx_bytes: bytes, model: torch.nn.Module, metadata: dict[str, Any], shapes: Sequence[tuple[int, ...]],
                    raw_dtype: str) -> tuple[float, float]:
    """Largest |logit| and |probability| differences, onnxruntime vs read -> preprocess_arrays -> model -> softmax."""
    import onnxruntime

    from sembridge_engine.data.transforms import ChannelStats, preprocess_arrays

    stats, tile = ChannelStats.from_dict(metadata["channel_stats"]), int(metadata["tile_size"])
    generator = np.random.default_rng(0)
    worst_logit = worst_probability = 0.0
    for shape in shapes:
        raw = raw_windows(generator, shape, raw_dtype)
        with torch.inference_mode():
            logits = model(preprocess_arrays(raw, tile, stats))
            expected = (logits.numpy(), torch.softmax(logits, dim=1).numpy())
        session = onnxruntime.InferenceSession(graph_for_window(onnx_bytes, shape[2], shape[3], tile), providers=["CPUExecutionProvider"])
        got = session.run(list(OUTPUTS), {PIXELS_INPUT: raw.astype(np.float32)})
        worst_logit = max(worst_logit, float(np.abs(got[0] - expected[0]).max()))
        worst_probability = max(worst_probability, float(np.abs(got[1] - expected[1]).max()))
    return worst_logit, worst_probability


def export_checked_pixels_onnx(model: torch.nn.Module, metadata: dict[str, Any], source: str,
                               window: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """The bundle's ``model.onnx`` and its metadata entry (input contract and measured parity); fails on disagreement."""
    from sembridge_engine.data.readers import dtype_divisor

    channels, tile = int(metadata["in_channels"]), int(metadata["tile_size"])
    window = int(window or default_window(metadata))
    raw_dtype = training_raw_dtype(metadata)
    stats = metadata["channel_stats"]
    onnx_bytes = export_pixels_onnx(model, channels, tile, window, raw_dtype, stats["mean"], stats["std"])
    other = tile + tile // 2 if window != tile + tile // 2 else tile
    shapes = [(batch, channels, window, window) for batch in CHECK_BATCHES] + [(2, channels, other, other + 3)]
    logit_difference, probability_difference = max_differences(onnx_bytes, model, metadata, shapes, raw_dtype)
    if not logit_difference < LOGIT_TOLERANCE:
        raise BundleError(f"{source}: ONNX export differs from PyTorch by {logit_difference:.3g} in logits (limit {LOGIT_TOLERANCE:g})")
    contract = {
        "name": PIXELS_INPUT, "dtype": "float32", "layout": "NCHW", "shape": ["batch", channels, window, window],
        "bands": list(metadata["band_names"]), "raw_dtype": raw_dtype, "divisor": dtype_divisor(raw_dtype),
        "values": f"raw pixel values as stored in {raw_dtype} files (not scaled), cast to float32; NaN replaced by 0",
        "window": window, "tile_size": tile,
        "other_windows": f"replace the initialisers {RESIZE_ROWS} (resize_matrix(h, tile_size)) and {RESIZE_COLS} "
                         "(resize_matrix(w, tile_size).T) and the input's height and width: "
                         "sembridge_engine.bundle.onnx_graph.graph_for_window",
    }
    return onnx_bytes, {"file": ONNX_NAME, "opset": ONNX_OPSET, "input": contract, "outputs": list(OUTPUTS),
                        "max_abs_logit_diff": logit_difference, "max_abs_prob_diff": probability_difference,
                        "checked_inputs": [list(shape) for shape in shapes]}
