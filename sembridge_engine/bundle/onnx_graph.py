"""The bundle graph's window size, changed without PyTorch (needs only the ``onnx`` package).

The graph resizes its input with two constant matrices (``resize_rows``, ``resize_cols``; see
``data.resampling``); a graph for another window size is the same graph with those two
initialisers replaced and the input's height and width set to match.
"""
from __future__ import annotations

import numpy as np

from sembridge_engine.data.resampling import resize_matrix

PIXELS_INPUT = "pixels"
RESIZE_ROWS = "resize_rows"
RESIZE_COLS = "resize_cols"


def resize_constants(height: int, width: int, tile_size: int) -> dict[str, np.ndarray]:
    """The graph's resize matrices for windows of ``height`` x ``width`` pixels: rows (tile x height), cols (width x tile)."""
    return {RESIZE_ROWS: resize_matrix(height, tile_size), RESIZE_COLS: np.ascontiguousarray(resize_matrix(width, tile_size).T)}


def set_window(proto, height: int, width: int, tile_size: int) -> None:
    """Make ``proto`` (an onnx ModelProto of the bundle graph) take ``height`` x ``width`` windows, in place."""
    from onnx import numpy_helper

    constants = resize_constants(height, width, tile_size)
    kept = [initializer for initializer in proto.graph.initializer if initializer.name not in constants]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend([*kept, *(numpy_helper.from_array(array, name) for name, array in constants.items())])
    pixels = next(value for value in proto.graph.input if value.name == PIXELS_INPUT)
    dims = pixels.type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = height, width


def graph_for_window(onnx_bytes: bytes, height: int, width: int, tile_size: int) -> bytes:
    """The bundle graph ``onnx_bytes`` rewritten for ``height`` x ``width`` windows."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    set_window(proto, height, width, tile_size)
    return proto.SerializeToString()
