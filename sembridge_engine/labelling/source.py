"""An open scene as labelling reads it: chosen bands, nodata rule, labelled extent, window layout.

:func:`describe_scene` tells clients (the Label map panel) what a scene holds without them opening
rasterio. :class:`SceneSource` replaces the (dataset, layout, band indexes, nodata, mask) tuple
the labelling steps used to pass around; its reads are windowed and offset to the labelled extent.

Nodata: a pixel is nodata when all selected bands equal the nodata value (the file's, or the
``nodata`` option; else the file's internal mask if it has one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from sembridge_engine.events import CancelToken

from .options import MAX_WINDOW, LabelOptions, SceneError
from .radiometry import RadiometryMapping, needs_samples, plan_radiometry, valid_samples
from .scale import ScaleChoice, choose_window
from .windows import SceneLayout, decimation, empty_windows, scene_layout, strip_halo, window_batch, windows_from_chunk

SAMPLE_GRID = 16      # radiometry sampling: a 16 x 16 lattice of windows ...
SAMPLE_WINDOW = 32    # ... of 32 x 32 pixels (at most 262 144 pixels per band)
RGB_SYNONYMS = {
    "red": ("red", "r", "b04", "b4", "sr_b4"),
    "green": ("green", "g", "b03", "b3", "sr_b3"),
    "blue": ("blue", "b", "b02", "b2", "sr_b2"),
}


@dataclass(frozen=True)
class SceneInfo:
    """What a client shows about a scene before labelling it."""

    path: str
    width: int
    height: int
    band_count: int
    dtypes: tuple[str, ...]
    band_descriptions: tuple[str, ...]
    crs: str | None
    gsd: float | None          # metres per pixel (geographic CRS: at the scene centre); None if unknown
    nodata: float | None


def open_scene(path: Path):
    import rasterio
    from rasterio.errors import RasterioError

    if not path.is_file():
        raise SceneError(f"{path}: scene not found")
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise SceneError(f"{path}: not a readable GeoTIFF/raster ({error})") from None


def describe_scene(scene_path) -> SceneInfo:
    """Size, bands, dtypes, band descriptions, CRS and ground sampling distance of a scene, from its header."""
    from sembridge_engine.data.geometry import ground_sampling_distance

    path = Path(scene_path)
    with open_scene(path) as dataset:
        return SceneInfo(
            str(path), dataset.width, dataset.height, dataset.count, tuple(dataset.dtypes),
            tuple(text or "" for text in dataset.descriptions), dataset.crs.to_string() if dataset.crs else None,
            ground_sampling_distance(dataset.crs, dataset.transform, dataset.width, dataset.height), dataset.nodatavals[0],
        )


def _band_names(dataset, path: Path, preset_name: str | None) -> list[str]:
    """The scene's band names: its descriptions, or those of a band preset (products whose bands carry none)."""
    from sembridge_engine.data.bands import get_preset

    if not preset_name:
        return [(text or "").strip() for text in dataset.descriptions]
    try:
        preset = get_preset(preset_name)
    except ValueError as error:
        raise SceneError(str(error)) from None
    if preset.band_count != dataset.count:
        raise SceneError(f"{path}: has {dataset.count} bands but band preset {preset.name!r} names {preset.band_count} "
                         f"({', '.join(preset.band_names)})")
    return list(preset.band_names)


def select_bands(dataset, path: Path, bundle, bands: Sequence[int] | None, preset_name: str | None = None) -> list[int]:
    """1-based scene bands feeding the model: ``bands`` if given, else by name (the band descriptions, or the
    band preset's names), R/G/B synonyms or colour interpretation."""
    from rasterio.enums import ColorInterp

    from sembridge_engine.data.bands import BAND_PRESETS

    wanted = bundle.in_channels
    if bands:
        chosen = [int(band) for band in bands]
        if len(chosen) != wanted:
            raise SceneError(f"{path}: --bands lists {len(chosen)} band(s) but the model takes {wanted} ({', '.join(bundle.band_names)})")
        missing = [band for band in chosen if not 1 <= band <= dataset.count]
        if missing:
            raise SceneError(f"{path}: band(s) {missing} do not exist; the scene has {dataset.count} bands, numbered from 1")
        return chosen
    names = _band_names(dataset, path, preset_name)
    descriptions = {name.lower(): index for index, name in enumerate(names, start=1) if name}
    by_model_name = [descriptions.get(name.lower()) for name in bundle.band_names]
    if all(by_model_name):
        return [int(index) for index in by_model_name]
    if wanted == 3 and preset_name:
        return [index + 1 for index in BAND_PRESETS[preset_name].rgb_indices]
    if wanted == 3:
        by_synonym = [next((descriptions[name] for name in RGB_SYNONYMS[colour] if name in descriptions), None)
                      for colour in ("red", "green", "blue")]
        if all(by_synonym):
            return [int(index) for index in by_synonym]
        interpretation = {interp: index for index, interp in enumerate(dataset.colorinterp, start=1)}
        by_interp = [interpretation.get(colour) for colour in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
        if all(by_interp):
            return [int(index) for index in by_interp]
    if dataset.count == wanted:
        return list(range(1, wanted + 1))
    described = ", ".join(f"{index}={name or '?'}" for index, name in enumerate(names, start=1))
    presets = ", ".join(preset.name for preset in BAND_PRESETS.values() if preset.band_count == dataset.count)
    hint = f", or name them with --band-preset ({presets})" if presets else ""
    raise SceneError(
        f"{path}: has {dataset.count} bands ({described}) and their names do not give the model's bands "
        f"({', '.join(bundle.band_names)}); choose them with --bands, 1-based, e.g. --bands 3,2,1{hint}"
    )


def _nodata_rule(dataset, indexes: Sequence[int], nodata: float | None) -> tuple[float | None, bool]:
    """(nodata value, use the file's internal mask) for the selected bands."""
    from rasterio.enums import MaskFlags

    if nodata is not None:
        return float(nodata), False
    value = dataset.nodatavals[indexes[0] - 1]
    if value is not None:
        return float(value), False
    flags = dataset.mask_flag_enums[indexes[0] - 1]
    return None, MaskFlags.per_dataset in flags or MaskFlags.alpha in flags


def _labelled_window(dataset, path: Path, options: LabelOptions):
    """The part of the scene to label: the whole scene, or the option's pixel window / extent clipped to it."""
    from rasterio.windows import Window, from_bounds

    full = Window(0, 0, dataset.width, dataset.height)
    if options.window is not None:
        wanted = Window(options.window.col, options.window.row, options.window.width, options.window.height)
    elif options.extent is not None:
        wanted = from_bounds(*options.extent, transform=dataset.transform).round_offsets().round_lengths()
    else:
        return full
    try:
        clipped = wanted.intersection(full)
    except Exception:  # rasterio raises WindowError for windows that do not overlap
        clipped = None
    if clipped is None or clipped.width < 1 or clipped.height < 1:
        raise SceneError(f"{path}: the requested window/extent lies outside the scene ({dataset.width} x {dataset.height} px)")
    return Window(int(clipped.col_off), int(clipped.row_off), int(clipped.width), int(clipped.height))


@dataclass
class SceneSource:
    """An open scene restricted to the labelled extent, with its model bands, nodata rule and windows."""

    path: Path
    dataset: object
    indexes: list[int]
    nodata: float | None
    use_mask: bool
    extent: object            # rasterio Window of the labelled part, in scene pixels
    layout: SceneLayout
    scale: ScaleChoice        # why the windows have their size
    batch: int = 1            # windows per read and model batch (the option's, fewer for very large windows)
    radiometry: RadiometryMapping | None = None

    def model_windows(self, windows: np.ndarray) -> np.ndarray:
        """Native windows as the predictor takes them: through this scene's radiometry mapping (when it has one)."""
        return self.radiometry.apply(windows) if self.radiometry is not None else windows

    def sample_pixels(self, grid: int = SAMPLE_GRID, size: int = SAMPLE_WINDOW) -> np.ndarray:
        """(bands, n) valid, finite pixel values from a ``grid`` x ``grid`` lattice of ``size``-px windows spread
        over the extent (the whole extent when it is small): a bounded read, whatever the scene's size."""
        from rasterio.windows import Window

        if self.width <= grid * size and self.height <= grid * size:
            pixels = self.read()
            return valid_samples(pixels, self.valid(pixels))
        samples = []
        for top in np.linspace(0, max(0, self.height - size), grid).astype(int):
            for left in np.linspace(0, max(0, self.width - size), grid).astype(int):
                window = Window(int(left), int(top), min(size, self.width), min(size, self.height))
                pixels = self.read(window)
                samples.append(valid_samples(pixels, self.valid(pixels, window)))
        return np.concatenate(samples, axis=1)

    @property
    def width(self) -> int:
        return int(self.extent.width)

    @property
    def height(self) -> int:
        return int(self.extent.height)

    @property
    def crs(self):
        return self.dataset.crs

    @property
    def transform(self):
        return self.dataset.window_transform(self.extent)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dataset.dtypes[self.indexes[0] - 1])

    def _scene_window(self, window):
        from rasterio.windows import Window

        if window is None:
            return self.extent
        return Window(window.col_off + self.extent.col_off, window.row_off + self.extent.row_off, window.width, window.height)

    def read(self, window=None, *, indexes: Sequence[int] | None = None, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """(C, h, w) native pixels of the model bands (or ``indexes``) for a window relative to the extent;
        with ``out_shape`` a nearest-neighbour decimated read."""
        from rasterio.enums import Resampling

        bands = list(indexes or self.indexes)
        scene_window = self._scene_window(window)
        if out_shape is None:
            return self.dataset.read(bands, window=scene_window)
        return self.dataset.read(bands, window=scene_window, out_shape=(len(bands), *out_shape), resampling=Resampling.nearest)

    def valid(self, pixels: np.ndarray, window=None, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """(h, w) True where the selected bands of ``pixels`` (read at ``window``) hold data: not every band
        at the nodata value (or masked by the file) and, for float data, no band NaN or infinite."""
        from rasterio.enums import Resampling

        if self.nodata is not None and not math.isnan(self.nodata):
            valid = ~(pixels == self.nodata).all(axis=0)
        elif self.use_mask:
            scene_window = self._scene_window(window)
            options = {} if out_shape is None else {"out_shape": out_shape, "resampling": Resampling.nearest}
            valid = self.dataset.read_masks(self.indexes[0], window=scene_window, **options) > 0
        else:
            valid = np.ones(pixels.shape[1:], dtype=bool)
        if pixels.dtype.kind == "f":
            valid &= np.isfinite(pixels).all(axis=0)
        return valid

    def empty_windows_estimate(self) -> int:
        """Windows without valid pixels, judged on a decimated read (at most 512 px on a side)."""
        if self.nodata is None and not self.use_mask and self.dtype.kind != "f":
            return 0
        factor, shape = decimation(self.layout)
        sample = self.read(out_shape=shape)
        return empty_windows(self.valid(sample, out_shape=shape), factor, self.layout)

    def chunks(self, batch: int, cancel: CancelToken | None, strips: Sequence[int] | None = None) -> Iterator["Chunk"]:
        """Strip by strip (all, or ``strips``), chunks of at most ``batch`` windows: one bounded read each,
        nodata windows dropped."""
        from rasterio.windows import Window

        layout = self.layout
        window_width = layout.window_width
        for strip, top in enumerate(layout.ys.tolist()):
            if strips is not None and strip not in strips:
                continue
            for start in range(0, len(layout.xs), batch):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                origins = layout.xs[start:start + batch]
                left, right = int(origins[0]), int(origins[-1]) + window_width
                read_window = Window(left, top, right - left, layout.window_height)
                pixels = self.read(read_window)
                valid = self.valid(pixels, read_window)
                offsets = origins - left
                valid_columns = np.concatenate(([0], np.cumsum(valid.any(axis=0))))
                has_data = valid_columns[offsets + window_width] > valid_columns[offsets]
                tiles = self.model_windows(windows_from_chunk(pixels, valid, offsets[has_data], layout)) if has_data.any() else None
                yield Chunk(strip, left, valid, origins[has_data], tiles, int((~has_data).sum()), start + batch >= len(layout.xs))


@dataclass
class Chunk:
    """One windowed read: which windows hold data, and their raw pixels (the predictor's input)."""

    strip: int
    left: int
    valid: np.ndarray          # (window height, chunk width) valid input pixels
    starts: np.ndarray         # x (within the extent) of the windows with data
    tiles: np.ndarray | None   # their raw (n, C, tile, tile) pixels, None when every window is nodata
    skipped: int
    last_in_strip: bool


def scale_for(bundle, options: LabelOptions, name: str, scene_gsd: float | None, width: int, height: int) -> ScaleChoice:
    """The window (footprint / scene GSD, or the options' tile) for a ``width`` x ``height`` px scene."""
    return choose_window(name, bundle.tile_size, options.footprint or bundle.footprint_m, bundle.training_gsd, scene_gsd,
                         width, height, tile=options.tile, force=options.force_scale)


def _restrict_to_strip(source: SceneSource, rows: tuple[int, int]) -> None:
    """Narrow ``source`` to the windows covering ``rows`` of its extent (scale and radiometry already the whole
    extent's): the result holds the strip with its halo, to be cropped to ``rows``."""
    from rasterio.windows import Window

    layout = source.layout
    if rows[1] > layout.height:
        raise SceneError(f"{source.path}: rows {rows[0]}-{rows[1]} go beyond the {layout.height} labelled rows")
    top, bottom = strip_halo(layout, *rows)
    extent = source.extent
    source.extent = Window(extent.col_off, extent.row_off + top, extent.width, bottom - top)
    source.layout = scene_layout(layout.width, bottom - top, layout.tile, layout.stride)


def open_source(path: Path, bundle, options: LabelOptions) -> SceneSource:
    """Open ``path`` and resolve its bands, nodata rule, labelled extent and window layout; closes on error."""
    from sembridge_engine.data.geometry import ground_sampling_distance

    dataset = open_scene(path)
    try:
        indexes = select_bands(dataset, path, bundle, options.bands, options.band_preset)
        nodata, use_mask = _nodata_rule(dataset, indexes, options.nodata)
        extent = _labelled_window(dataset, path, options)
        width, height = int(extent.width), int(extent.height)
        gsd = ground_sampling_distance(dataset.crs, dataset.transform, dataset.width, dataset.height)
        scale = scale_for(bundle, options, path.name, gsd, width, height)
        stride = options.stride or LabelOptions.stride_for(scale.window)
        if stride > scale.window:
            raise SceneError(f"stride must be between 1 and the window size {scale.window} (windows must touch or overlap), got {stride}")
        if scale.window > MAX_WINDOW:
            raise SceneError(f"{path}: windows of {scale.window} scene pixels ({scale.describe()}) are beyond the limit of "
                             f"{MAX_WINDOW}; label a coarser copy of the scene, or set --tile / --footprint")
        layout = scene_layout(width, height, scale.window, stride)
        source = SceneSource(path, dataset, indexes, nodata, use_mask, extent, layout, scale,
                             batch=window_batch(options.batch, min(scale.window, max(width, height)), len(indexes)))
        samples = source.sample_pixels() if needs_samples(options.radiometry, bundle.radiometry) else None
        source.radiometry = plan_radiometry(options.radiometry, bundle.radiometry, source.dtype, samples)
        if options.rows is not None:
            _restrict_to_strip(source, options.rows)
        return source
    except BaseException:
        dataset.close()
        raise
