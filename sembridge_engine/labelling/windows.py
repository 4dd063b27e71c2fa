"""Where the windows of a scene lie, and cutting them out of a read.

Windows of ``tile`` scene pixels start every ``stride`` pixels. The last window of a row/column is
shifted inside the scene so it ends at the scene edge (no padding, every window sees real pixels);
a scene smaller than one window is reflection-padded (symmetric) to the window size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WINDOW_BATCH_BYTES = 256 * 2**20  # float32 model inputs of one batch of windows, before resizing


@dataclass(frozen=True)
class SceneLayout:
    """Window origins over the scene; windows are ``window_height`` x ``window_width`` scene pixels."""

    width: int
    height: int
    tile: int
    stride: int
    window_width: int
    window_height: int
    xs: np.ndarray
    ys: np.ndarray

    @property
    def windows(self) -> int:
        return len(self.xs) * len(self.ys)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Origins every ``stride`` pixels plus one final window flush with the far edge."""
    if length <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - window + 1, stride, dtype=np.int64)
    if starts[-1] + window < length:
        starts = np.append(starts, length - window)
    return starts


def scene_layout(width: int, height: int, tile: int, stride: int) -> SceneLayout:
    window_width, window_height = min(tile, width), min(tile, height)
    return SceneLayout(width, height, tile, stride, window_width, window_height,
                       window_starts(width, tile, stride), window_starts(height, tile, stride))


def strip_halo(layout: SceneLayout, start: int, stop: int) -> tuple[int, int]:
    """Rows from the first window overlapping rows [start, stop) to the end of the last: labelled with the
    same windows, in the same order, as in the whole layout, that strip's pixels average the same windows."""
    covering = layout.ys[(layout.ys < stop) & (layout.ys + layout.window_height > start)]
    return int(covering.min()), int(covering.max()) + layout.window_height


def strip_bounds(layout: SceneLayout, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` row strips of about equal height, cut on multiples of the stride (small halos)."""
    height, stride = layout.height, layout.stride
    cuts = sorted({min(height, round(k * height / count / stride) * stride) for k in range(count)} | {height})
    return list(zip(cuts[:-1], cuts[1:]))


def windows_from_chunk(chunk: np.ndarray, valid: np.ndarray, offsets: np.ndarray, layout: SceneLayout) -> np.ndarray:
    """(n, C, tile, tile) windows cut from a (C, h, w) chunk at column offsets; padded when the scene is smaller.

    Pixels that are not ``valid`` (nodata, NaN, infinite) are filled with the median of the window's valid
    pixels in that band, as training fills its tiles, so neither the nodata value nor a NaN reaches the model.
    """
    def cut(array: np.ndarray) -> np.ndarray:
        views = np.lib.stride_tricks.sliding_window_view(array, layout.window_width, axis=2)
        windows = views[:, :, offsets].transpose(2, 0, 1, 3)
        pad_rows, pad_cols = layout.tile - layout.window_height, layout.tile - layout.window_width
        if pad_rows or pad_cols:
            windows = np.pad(windows, ((0, 0), (0, 0), (0, pad_rows), (0, pad_cols)), mode="symmetric")
        return np.ascontiguousarray(windows)

    windows = cut(chunk)
    return fill_invalid(windows, cut(valid[None])[:, 0])


def fill_invalid(windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels of (n, C, h, w) ``windows`` (``valid`` is (n, h, w)) set to each window's per-band median
    of its valid pixels (0 where a window has none); windows without invalid pixels are left untouched."""
    broken = ~valid.reshape(len(valid), -1).all(axis=1)
    if not broken.any():
        return windows
    values = windows[broken]
    invalid = ~valid[broken][:, None]
    # float32 holds every 8/16-bit integer and float32 value exactly, and sorts faster than float64.
    medians = masked_medians(values.astype(np.result_type(values.dtype, np.float32)), invalid)
    if windows.dtype.kind in "ui":
        medians = np.rint(medians)
    np.copyto(values, medians.astype(windows.dtype)[:, :, None, None], where=invalid)
    windows[broken] = values
    return windows


def masked_medians(values: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """(n, C) medians of each (h, w) plane of ``values`` over the pixels not ``invalid`` ((n, C or 1, h, w);
    0 where none is valid): np.nanmedian's values in one sort, where nanmedian loops over the planes in Python."""
    planes = np.where(invalid, np.inf, values).reshape(*values.shape[:2], -1)
    planes.sort(axis=-1)
    counts = (~invalid).reshape(*invalid.shape[:2], -1).sum(axis=-1, keepdims=True)
    low = np.take_along_axis(planes, np.maximum(counts - 1, 0) // 2, axis=-1)
    high = np.take_along_axis(planes, np.maximum(counts, 1) // 2 - (counts == 0), axis=-1)
    return np.where(counts > 0, (low.astype(np.float64) + high) / 2, 0.0)[..., 0]


def empty_windows(valid: np.ndarray, factor: int, layout: SceneLayout) -> int:
    """Windows without a valid pixel, from a validity mask decimated by ``factor`` (a summed-area table)."""
    shape = valid.shape
    integral = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r0, c0 = layout.ys[:, None] // factor, layout.xs[None, :] // factor
    r1 = np.minimum(shape[0], -(-(layout.ys[:, None] + layout.window_height) // factor))
    c1 = np.minimum(shape[1], -(-(layout.xs[None, :] + layout.window_width) // factor))
    counts = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return int((counts == 0).sum())


def decimation(layout: SceneLayout, longest: int = 512) -> tuple[int, tuple[int, int]]:
    """Factor and (rows, columns) of a read at most ``longest`` pixels on a side."""
    factor = max(1, math.ceil(max(layout.width, layout.height) / longest))
    return factor, (math.ceil(layout.height / factor), math.ceil(layout.width / factor))


def window_batch(batch: int, window: int, channels: int, budget: int = WINDOW_BATCH_BYTES) -> int:
    """Windows per read and model batch: ``batch``, or fewer when that many float32 windows would exceed ``budget``."""
    return max(1, min(batch, budget // (channels * window * window * 4)))
