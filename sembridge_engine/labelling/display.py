"""Pixels of a scene and of its labelled map for showing on screen: any window of the scene, read
reduced to a pixel budget, so a client can show and zoom into a 10 000 x 10 000 px scene without
ever holding it whole (GDAL serves reduced reads from the file's overviews when it has them).

The labelled rasters may cover only part of the scene (an area of interest); reads of them are
placed in scene pixels through the two rasters' geotransforms, and what they do not cover is nodata.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .options import PixelWindow
from .source import open_scene

STRETCH_SIDE = 512            # the percentile stretch is measured on a read of at most this many pixels a side
STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class SceneView:
    """A window of a scene read for display: (h, w, 3) uint8 RGB covering ``window`` (scene pixels)."""

    window: PixelWindow
    rgb: np.ndarray


UNLABELLED = -1  # a class index no class has, so a palette's last entry can be transparent


@dataclass(frozen=True)
class LabelsView:
    """The labelled map over a window of the scene: class index per pixel (UNLABELLED where
    unlabelled, whatever the raster's nodata) and the model's confidence (NaN where unlabelled), both (h, w)."""

    window: PixelWindow
    classes: np.ndarray
    confidence: np.ndarray


def _out_shape(window: PixelWindow, max_side: int) -> tuple[int, int]:
    scale = max(1.0, max(window.width, window.height) / max_side)
    return max(1, round(window.height / scale)), max(1, round(window.width / scale))


def _clip(window: PixelWindow | None, width: int, height: int) -> PixelWindow:
    if window is None:
        return PixelWindow(0, 0, width, height)
    col, row = min(max(0, window.col), width - 1), min(max(0, window.row), height - 1)
    return PixelWindow(col, row, max(1, min(window.width, width - col)), max(1, min(window.height, height - row)))


def display_bands(band_count: int, bands: Sequence[int] | None) -> list[int]:
    """1-based bands shown as R, G, B: the first three of ``bands`` (the model's), or the file's first three."""
    chosen = list(bands or range(1, band_count + 1))
    return chosen[:3] if len(chosen) >= 3 else [chosen[0]] * 3


def scene_stretch(scene, bands: Sequence[int]) -> np.ndarray:
    """(3, 2) low/high display limits per shown band: 2-98 % percentiles of a reduced read of the
    whole scene, so every window is stretched alike."""
    from rasterio.enums import Resampling

    with open_scene(Path(scene)) as dataset:
        shape = _out_shape(PixelWindow(0, 0, dataset.width, dataset.height), STRETCH_SIDE)
        pixels = dataset.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest,
                              masked=True).astype(np.float64)
    limits = []
    for band in pixels:
        values = band.compressed() if np.ma.is_masked(band) else np.asarray(band).ravel()
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 1.0)
        limits.append((low, high if high > low else low + 1.0))
    return np.asarray(limits)


def read_scene_view(scene, bands: Sequence[int], window: PixelWindow | None = None, max_side: int = 1024,
                    stretch: np.ndarray | None = None) -> SceneView:
    """``window`` of the scene (whole scene by default) as stretched 8-bit RGB, longer side at most
    ``max_side`` pixels; ``stretch`` from :func:`scene_stretch` (computed here when not given)."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    bands = list(bands)
    limits = scene_stretch(scene, bands) if stretch is None else stretch
    with open_scene(Path(scene)) as dataset:
        window = _clip(window, dataset.width, dataset.height)
        shape = _out_shape(window, max_side)
        pixels = dataset.read(bands, window=Window(window.col, window.row, window.width, window.height),
                              out_shape=(len(bands), *shape), resampling=Resampling.average).astype(np.float32)
    low, high = limits[:, 0, None, None].astype(np.float32), limits[:, 1, None, None].astype(np.float32)
    scaled = np.clip(np.nan_to_num((pixels - low) / (high - low)), 0.0, 1.0) * 255.0
    return SceneView(window, np.ascontiguousarray(scaled.astype(np.uint8).transpose(1, 2, 0)))


def read_labels_view(classes_raster, confidence_raster, scene, window: PixelWindow | None = None,
                     max_side: int = 1024) -> LabelsView:
    """The labelled map over ``window`` of ``scene`` (whole scene by default), at the resolution
    :func:`read_scene_view` gives the same window, so the two lie on each other pixel for pixel."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with open_scene(Path(scene)) as dataset:
        window = _clip(window, dataset.width, dataset.height)
        scene_transform = dataset.transform
    shape = _out_shape(window, max_side)
    with open_scene(Path(classes_raster)) as classes, open_scene(Path(confidence_raster)) as confidence:
        # Where the labelled raster's first pixel lies in the scene (an area of interest is offset).
        col, row = (~scene_transform) @ (classes.transform.c, classes.transform.f)
        own = Window(window.col - round(col), window.row - round(row), window.width, window.height)
        class_pixels = classes.read(1, window=own, out_shape=shape, resampling=Resampling.nearest,
                                    boundless=True, fill_value=classes.nodata)
        confidence_pixels = confidence.read(1, window=own, out_shape=shape, resampling=Resampling.nearest,
                                            boundless=True, fill_value=-1).astype(np.float32)
        unlabelled = class_pixels == classes.nodata
    confidence_pixels[(confidence_pixels < 0) | unlabelled] = np.nan
    return LabelsView(window, np.where(unlabelled, UNLABELLED, class_pixels.astype(np.int32)), confidence_pixels)
