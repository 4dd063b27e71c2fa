"""Decoding one image file to a (C, H, W) array, with a specific message for every bad file.

GeoTIFF/TIFF go through rasterio (any band count, georeferenced or not); PNG/JPEG through Pillow.
Every failure becomes an :class:`ImageReadError` naming the file, so callers can skip and list it.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from PIL import Image, UnidentifiedImageError

from .geometry import ground_sampling_distance
from .problems import ImageReadError

# Plain TIFF photos (UC Merced) are valid RGB imagery; the warning would fire once per file.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
IMAGE_SUFFIXES = TIFF_SUFFIXES | PILLOW_SUFFIXES

# Pillow modes converted to RGB; anything else (32-bit int/float, multi-channel oddities) is rejected.
_PILLOW_TO_RGB = {"RGB", "RGBA", "RGBX", "P", "PA", "L", "LA", "1", "CMYK", "YCbCr", "La"}
_PILLOW_16BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N"}
# Longest side at which an image file is decoded (larger ones are read reduced, see read_image).
MAX_IMAGE_SIDE = 4096


@dataclass(frozen=True)
class ImageHeader:
    """What ``sembridge inspect`` reports per file, read without decoding pixels."""

    path: str
    band_count: int
    dtype: str
    width: int
    height: int
    crs: str | None
    nodata: tuple[float | None, ...]
    gsd: float | None = None  # metres per pixel from the GeoTIFF transform; None when not georeferenced


def default_workers() -> int:
    """Decoder threads: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def tile_reading_env() -> rasterio.Env:
    """One GDAL environment around a run of many tile reads (use it in worker threads, where
    rasterio keeps the options thread-local).

    It saves rasterio's per-open environment set-up, and stops GDAL listing the tile's folder on
    every open to look for sidecar files (.aux.xml, .ovr, .msk), which tiles do not use: in a
    folder of 3000 tiles that listing cost about 30% of the time per tile.
    """
    return rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot access file: {error.strerror or error}") from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageReadError(path, "permission denied: the file is not readable")


def _rasterio_reason(error: Exception) -> str:
    """The GDAL detail behind rasterio's generic 'Read failed' message."""
    details = [str(error)]
    cause = error.__cause__ or error.__context__
    while cause is not None and len(details) < 4:
        details.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return "; ".join(detail for detail in details if detail and "See previous exception" not in detail) or str(error)


def _open_raster(path: Path):
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise ImageReadError(path, f"not a readable GeoTIFF/TIFF (corrupt, truncated or another format): {_rasterio_reason(error)}") from None


def read_header(path) -> ImageHeader:
    """Band count, dtype, size, CRS and nodata of one image without reading its pixels."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with _open_raster(path) as dataset:
            return ImageHeader(
                str(path), dataset.count, dataset.dtypes[0], dataset.width, dataset.height,
                dataset.crs.to_string() if dataset.crs else None, tuple(dataset.nodatavals),
                ground_sampling_distance(dataset.crs, dataset.transform, dataset.width, dataset.height),
            )
    with _open_pillow(path) as image:
        return ImageHeader(str(path), 3, "uint16" if image.mode in _PILLOW_16BIT_GREY else "uint8",
                           image.width, image.height, None, (None, None, None))


def _open_pillow(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"image too large to decode safely: {error}") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, f"not a readable {path.suffix.lstrip('.').upper()} image (corrupt or another format)") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot open image: {error}") from None
    if image.mode not in _PILLOW_TO_RGB and image.mode not in _PILLOW_16BIT_GREY:
        image.close()
        raise ImageReadError(path, f"unsupported image mode {image.mode!r}; RGB imagery must be grey, RGB, RGBA or palette")
    return image


def _pillow_to_rgb(path: Path, image: Image.Image) -> np.ndarray:
    """(3, H, W): grey replicated, alpha dropped, palette/CMYK converted."""
    try:
        if image.mode in _PILLOW_16BIT_GREY:
            grey = np.asarray(image, dtype=np.uint16)
            return np.repeat(grey[None], 3, axis=0)
        if image.mode in {"L", "1", "LA", "La"}:
            grey = np.asarray(image.convert("L"))
            return np.repeat(grey[None], 3, axis=0)
        rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ImageReadError(path, f"corrupt or truncated image: {error}") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _palette_to_rgb(dataset, band: np.ndarray) -> np.ndarray:
    colormap = dataset.colormap(1)
    lookup = np.zeros((max(256, max(colormap) + 1), 3), dtype=np.uint8)
    for index, colour in colormap.items():
        lookup[index] = colour[:3]
    return np.ascontiguousarray(lookup[band].transpose(2, 0, 1))


def _raster_rgb_bands(path: Path, dataset) -> list[int] | None:
    """1-based bands holding R, G, B, or None when the single band is grey/palette."""
    interp = dataset.colorinterp
    if dataset.count in (1, 2):
        return None
    if dataset.count == 3:
        return [1, 2, 3]
    if dataset.count == 4 and (interp[3] == ColorInterp.alpha or tuple(interp[:3]) == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return [1, 2, 3]
    raise ImageReadError(path, f"has {dataset.count} bands; RGB imagery must have 1 (grey), 3 (RGB) or 4 (RGBA) bands")


def _decimated_shape(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """(height, width) to read an image at so its longer side is at most ``max_side``; None to read as is."""
    if max_side is None or max(width, height) <= max_side:
        return None
    scale = max(width, height) / max_side
    return max(1, round(height / scale)), max(1, round(width / scale))


def _read_raster(path: Path, bands: Sequence[int] | None, as_rgb: bool, max_side: int | None) -> tuple[np.ndarray, list]:
    """Pixels and the nodata value of each returned band (None where the file declares none)."""
    with _open_raster(path) as dataset:
        if bands is not None:
            out_of_range = [band for band in bands if not 0 <= band < dataset.count]
            if out_of_range:
                raise ImageReadError(path, f"has {dataset.count} bands; band index(es) {out_of_range} (0-based) requested")
            indexes = [band + 1 for band in bands]
        elif as_rgb:
            indexes = _raster_rgb_bands(path, dataset)
        else:
            indexes = None
        shape = _decimated_shape(dataset.width, dataset.height, max_side)
        options = {} if shape is None else {"out_shape": shape, "resampling": Resampling.average}
        try:
            if as_rgb and indexes is None:
                band = dataset.read(1, **options)
                if dataset.colorinterp[0] == ColorInterp.palette:
                    array = _palette_to_rgb(dataset, band)
                else:
                    array = np.repeat(band[None], 3, axis=0)
                nodatavals = [dataset.nodatavals[0]] * 3
            else:
                count = len(indexes) if indexes is not None else dataset.count
                if shape is not None:
                    options["out_shape"] = (count, *shape)
                array = dataset.read(indexes, **options)
                nodatavals = [dataset.nodatavals[index - 1] for index in (indexes or range(1, dataset.count + 1))]
        except (RasterioError, MemoryError) as error:
            raise ImageReadError(path, f"corrupt or truncated GeoTIFF: pixel data cannot be read ({_rasterio_reason(error)})") from None
    _reject_all_invalid(path, array, nodatavals)
    return array, nodatavals


def invalid_pixels(array: np.ndarray, nodatavals: Sequence[float | None]) -> np.ndarray | None:
    """(C, H, W) True where a value is NaN, infinite or its band's nodata value; None when all are valid."""
    invalid = ~np.isfinite(array) if array.dtype.kind == "f" else np.zeros(array.shape, dtype=bool)
    for band, value in enumerate(nodatavals[:array.shape[0]]):
        if value is not None and np.isfinite(value):
            invalid[band] |= array[band] == np.asarray(value).astype(array.dtype)
    return invalid if invalid.any() else None


def _reject_all_invalid(path: Path, array: np.ndarray, nodatavals: Sequence[float | None]) -> None:
    invalid = invalid_pixels(array, nodatavals)
    if invalid is not None and invalid.all():
        declared = sorted({f"{value:g}" for value in nodatavals if value is not None})
        reason = f"nodata ({', '.join(declared)}), NaN or infinite" if declared else "NaN or infinite"
        raise ImageReadError(path, f"every pixel is {reason}: the image holds no data")


def _read(path, bands: Sequence[int] | None, as_rgb: bool, max_side: int | None) -> tuple[np.ndarray, list]:
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _read_raster(path, bands, as_rgb, max_side)
    if suffix not in PILLOW_SUFFIXES:
        raise ImageReadError(path, f"not an image file ({suffix or 'no extension'}); expected .tif, .tiff, .png, .jpg or .jpeg")
    with _open_pillow(path) as image:
        shape = _decimated_shape(image.width, image.height, max_side)
        if shape is not None:
            image = image.reduce(max(1, math.ceil(max(image.width, image.height) / max_side)))
        array = _pillow_to_rgb(path, image)
    if bands is not None:
        out_of_range = [band for band in bands if not 0 <= band < 3]
        if out_of_range:
            raise ImageReadError(path, f"has 3 bands; band index(es) {out_of_range} (0-based) requested")
        array = array[list(bands)]
    return array, [None] * array.shape[0]


def read_image(path, bands: Sequence[int] | None = None, *, as_rgb: bool = False,
               max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """Pixels of one image as (C, H, W) in the file's native dtype.

    ``bands`` are 0-based band indices to keep. ``as_rgb`` (RGB imagery) converts to exactly three
    channels: grey replicated, alpha dropped, palette expanded; PNG/JPEG are always converted so.
    An image whose longer side exceeds ``max_side`` is read reduced (pixel averaging) to that size:
    every use of an image file here resizes it to a tile of at most 1024 px, and a full decode of a
    huge file would only exhaust memory.
    Raises ImageReadError naming the file: zero-byte, corrupt or truncated, unsupported mode,
    requested band missing, every pixel nodata, NaN or infinite.
    """
    return _read(path, bands, as_rgb, max_side)[0]


def read_tile(path, bands: Sequence[int] | None = None, *, as_rgb: bool = False,
              max_side: int | None = MAX_IMAGE_SIDE) -> tuple[np.ndarray, int]:
    """``read_image`` for training and classification: pixels that are NaN, infinite or the band's
    nodata value are filled with the median of that band's valid pixels (0 if it has none), so a
    partly empty tile cannot turn the model's weights into NaN. Returns (pixels, filled count)."""
    array, nodatavals = _read(path, bands, as_rgb, max_side)
    invalid = invalid_pixels(array, nodatavals)
    if invalid is None:
        return array, 0
    array = array.copy()
    for band in range(array.shape[0]):
        bad = invalid[band]
        if bad.any():
            valid = array[band][~bad]
            array[band][bad] = np.median(valid).astype(array.dtype) if valid.size else 0
    return array, int(invalid.any(axis=0).sum())


def dtype_divisor(dtype) -> float:
    """What raw pixel values of ``dtype`` are divided by before a model sees them: 255 for uint8,
    10000 for 16/32-bit integers (reflectance DN), 1 for floats and other 8-bit types."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype.kind in "ui" and dtype.itemsize >= 2:
        return 10000.0
    return 1.0


def scale_by_dtype(array: np.ndarray) -> np.ndarray:
    """float32 in roughly [0, 1]: raw values divided by ``dtype_divisor`` of their dtype."""
    divisor = dtype_divisor(array.dtype)
    if divisor != 1.0:
        return array.astype(np.float32) / np.float32(divisor)
    return array.astype(np.float32, copy=array.dtype.kind in "uib")
