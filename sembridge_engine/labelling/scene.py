"""Sliding-window labelling of a georeferenced scene into GIS-ready rasters, polygons and a preview.

How a scene is cut and put back together:

* Windows of ``tile`` scene pixels (default: the model's tile size) start every ``stride`` pixels
  (default ``tile // 2``). The last window of a row/column is shifted inside the scene so it ends at
  the scene edge (no padding, every window sees real pixels); a scene smaller than one window is
  reflection-padded (symmetric) to the window size. Each window is resized to the model input by the
  training pipeline's own ``preprocess_arrays``.
* Each window's class probabilities are spread over its footprint; where windows overlap the
  per-pixel probabilities are the average of every covering window. The class raster is the argmax,
  the confidence raster the maximum averaged probability, both at the scene's own resolution.
* The scene is processed strip by strip (one row of windows at a time). Reads are windowed chunks of
  at most ``batch`` windows, model batches are filled across strips, accumulators hold one strip
  (``tile`` rows x scene width) and finished rows are written immediately, so memory does not grow
  with the scene's height and no read is larger than one chunk.
* Nodata: a pixel is nodata when all selected bands equal the nodata value (the file's, or the
  ``nodata`` override; else the file's internal mask if it has one). Windows without a valid pixel are
  skipped; outputs are nodata where the input is nodata or no window covered the pixel.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from sembridge_engine.events import BatchProgress, CancelToken, EventCallback, ignore_event

from .classify import inference_model, predict_probabilities, preprocess_for_bundle
from . import writers
from .writers import CLASS_NODATA, CONFIDENCE_NODATA, GTIFF_BLOCK, class_colormap, raster_profile

STAGE = "label"
DEFAULT_BLOCK = 512
# Rough activation memory of one forward pass, as a multiple of the input batch's bytes (measured
# on the registered backbones at 64-256 px tiles; an estimate for the pre-flight plan only).
ACTIVATION_FACTOR = 48
PLAN_OVERHEAD = 1.15
RGB_SYNONYMS = {
    "red": ("red", "r", "b04", "b4", "sr_b4"),
    "green": ("green", "g", "b03", "b3", "sr_b3"),
    "blue": ("blue", "b", "b02", "b2", "sr_b2"),
}


class SceneError(ValueError):
    """A scene or option that cannot be labelled; the message names the file and what to change."""


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


@dataclass(frozen=True)
class ScenePlan:
    """Pre-flight estimate shown before a long labelling job starts."""

    scene: str
    width: int
    height: int
    band_indexes: list[int]
    nodata: float | None
    tile: int
    stride: int
    batch: int
    windows: int
    windows_skipped_estimate: int
    memory_bytes: int
    seconds_estimate: float
    device: str

    @property
    def windows_to_run(self) -> int:
        return self.windows - self.windows_skipped_estimate


@dataclass
class LabelResult:
    """Paths of every written output (None for outputs not requested) and the job's summary."""

    classes: Path
    style: Path
    confidence: Path
    summary: Path
    probabilities: Path | None = None
    polygons: Path | None = None
    preview: Path | None = None
    windows: int = 0
    windows_skipped: int = 0
    seconds: float = 0.0
    class_shares: dict[str, float] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [path for path in (self.classes, self.style, self.confidence, self.probabilities,
                                  self.polygons, self.preview, self.summary) if path is not None]


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


def _open_scene(path: Path):
    import rasterio
    from rasterio.errors import RasterioError

    if not path.is_file():
        raise SceneError(f"{path}: scene not found")
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise SceneError(f"{path}: not a readable GeoTIFF/raster ({error})") from None


def select_bands(dataset, path: Path, bundle, bands: Sequence[int] | None) -> list[int]:
    """1-based scene bands feeding the model: ``bands`` if given, else from descriptions/colour interpretation."""
    from rasterio.enums import ColorInterp

    wanted = bundle.in_channels
    if bands:
        chosen = [int(band) for band in bands]
        if len(chosen) != wanted:
            raise SceneError(f"{path}: --bands lists {len(chosen)} band(s) but the model takes {wanted} ({', '.join(bundle.band_names)})")
        missing = [band for band in chosen if not 1 <= band <= dataset.count]
        if missing:
            raise SceneError(f"{path}: band(s) {missing} do not exist; the scene has {dataset.count} bands, numbered from 1")
        return chosen
    descriptions = {(text or "").strip().lower(): index for index, text in enumerate(dataset.descriptions, start=1) if text}
    by_model_name = [descriptions.get(name.lower()) for name in bundle.band_names]
    if all(by_model_name):
        return [int(index) for index in by_model_name]
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
    described = ", ".join(f"{index}={text or '?'}" for index, text in enumerate(dataset.descriptions, start=1))
    raise SceneError(
        f"{path}: has {dataset.count} bands ({described}) and their descriptions do not name the model's bands "
        f"({', '.join(bundle.band_names)}); choose them with --bands, 1-based, e.g. --bands 3,2,1"
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


def _valid_pixels(dataset, chunk: np.ndarray, window, nodata: float | None, use_mask: bool) -> np.ndarray:
    """(h, w) True where at least one selected band holds data."""
    if nodata is not None:
        if math.isnan(nodata):
            return ~np.isnan(chunk).all(axis=0)
        return ~(chunk == nodata).all(axis=0)
    if use_mask:
        return dataset.read_masks(1, window=window) > 0
    valid = np.ones(chunk.shape[1:], dtype=bool)
    if chunk.dtype.kind == "f":
        valid &= ~np.isnan(chunk).all(axis=0)
    return valid


def _resolve(bundle, dataset, path: Path, tile: int | None, stride: int | None, batch: int,
             bands: Sequence[int] | None, nodata: float | None):
    tile = int(tile) if tile else bundle.tile_size
    if tile < 1:
        raise SceneError(f"tile must be a positive number of scene pixels, got {tile}")
    stride = int(stride) if stride else max(1, tile // 2)
    if not 1 <= stride <= tile:
        raise SceneError(f"stride must be between 1 and the tile size {tile} (windows must touch or overlap), got {stride}")
    if batch < 1:
        raise SceneError(f"batch must be >= 1, got {batch}")
    indexes = select_bands(dataset, path, bundle, bands)
    nodata_value, use_mask = _nodata_rule(dataset, indexes, nodata)
    return scene_layout(dataset.width, dataset.height, tile, stride), indexes, nodata_value, use_mask


def _windows_from_chunk(chunk: np.ndarray, offsets: np.ndarray, layout: SceneLayout) -> np.ndarray:
    """(n, C, tile, tile) windows cut from a (C, h, w) chunk at column offsets; padded when the scene is smaller."""
    views = np.lib.stride_tricks.sliding_window_view(chunk, layout.window_width, axis=2)
    windows = views[:, :, offsets].transpose(2, 0, 1, 3)
    pad_rows, pad_cols = layout.tile - layout.window_height, layout.tile - layout.window_width
    if pad_rows or pad_cols:
        windows = np.pad(windows, ((0, 0), (0, 0), (0, pad_rows), (0, pad_cols)), mode="symmetric")
    if windows.dtype.kind == "f":
        windows = np.nan_to_num(windows, nan=0.0)
    return np.ascontiguousarray(windows)


def _skipped_estimate(dataset, layout: SceneLayout, indexes: list[int], nodata: float | None, use_mask: bool) -> int:
    """Windows without valid pixels, judged on a decimated read (at most 512 px on a side)."""
    from rasterio.enums import Resampling

    if nodata is None and not use_mask:
        return 0
    factor = max(1, math.ceil(max(layout.width, layout.height) / 512))
    shape = (math.ceil(layout.height / factor), math.ceil(layout.width / factor))
    if use_mask:
        valid = dataset.read_masks(1, out_shape=shape, resampling=Resampling.nearest) > 0
    else:
        sample = dataset.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
        valid = _valid_pixels(dataset, sample, None, nodata, False)
    integral = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r0, c0 = layout.ys[:, None] // factor, layout.xs[None, :] // factor
    r1 = np.minimum(shape[0], -(-(layout.ys[:, None] + layout.window_height) // factor))
    c1 = np.minimum(shape[1], -(-(layout.xs[None, :] + layout.window_width) // factor))
    counts = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return int((counts == 0).sum())


def gdal_cache_bytes(width: int, num_classes: int, probabilities: bool) -> int:
    """GDAL block cache for one labelling job: two rows of 256-px output tiles, at least 64 MiB.

    GDAL keeps written blocks in its cache until it is full (default 5 % of RAM), so without a cap the
    outputs of a large scene would sit in memory; a full row of output tiles must fit so no tile is
    evicted half-written (it would be compressed twice).
    """
    bytes_per_pixel = 1 + 4 + (4 * num_classes if probabilities else 0)
    return max(64 * 2**20, 2 * GTIFF_BLOCK * width * bytes_per_pixel)


def _memory_estimate(bundle, layout: SceneLayout, batch: int, channels: int, itemsize: int, probabilities: bool) -> int:
    classes = bundle.num_classes
    strip = layout.window_height * layout.width
    accumulators = (classes + 1) * strip * 4 + strip + (classes + 1) * (layout.width + 1) * 4
    finished_rows = layout.stride * layout.width * (1 + 4 + 4 * classes * (2 if probabilities else 1))
    chunk_width = min(layout.width, (batch - 1) * layout.stride + layout.window_width)
    reads = channels * layout.window_height * chunk_width * itemsize + 2 * batch * channels * layout.tile ** 2 * 4
    inputs = batch * channels * bundle.tile_size ** 2 * 4
    parameters = sum(parameter.numel() * parameter.element_size() for parameter in bundle.model.parameters())
    cache = gdal_cache_bytes(layout.width, classes, probabilities)
    return int(accumulators + finished_rows + reads + inputs * (1 + ACTIVATION_FACTOR) + parameters + cache)


def _seconds_per_window(bundle, model, device: torch.device, tile: int, channels: int, batch: int) -> float:
    """Wall time per window of read-to-probabilities work, from one timed batch after a warm-up."""
    sample = min(batch, 16)
    generator = np.random.default_rng(0)
    windows = generator.integers(0, 256, size=(sample, channels, tile, tile), dtype=np.uint8)
    predict_probabilities(model, preprocess_for_bundle(bundle, windows), device)  # warm-up: kernels for this shape
    started = time.perf_counter()
    predict_probabilities(model, preprocess_for_bundle(bundle, windows), device)
    return (time.perf_counter() - started) / sample


def plan_scene(bundle, scene_path, tile: int | None = None, stride: int | None = None, batch: int = 32,
               bands: Sequence[int] | None = None, device: str = "auto", nodata: float | None = None,
               write_probabilities: bool = False) -> ScenePlan:
    """Windows, skipped-window estimate, peak memory estimate (bytes) and expected seconds on ``device``."""
    from sembridge_engine.device import resolve_device

    path = Path(scene_path)
    torch_device = resolve_device(device)
    with _open_scene(path) as dataset:
        layout, indexes, nodata_value, use_mask = _resolve(bundle, dataset, path, tile, stride, batch, bands, nodata)
        skipped = _skipped_estimate(dataset, layout, indexes, nodata_value, use_mask)
        itemsize = np.dtype(dataset.dtypes[indexes[0] - 1]).itemsize
    model = inference_model(bundle, torch_device)
    per_window = _seconds_per_window(bundle, model, torch_device, layout.tile, len(indexes), batch)
    return ScenePlan(
        scene=str(path), width=layout.width, height=layout.height, band_indexes=indexes, nodata=nodata_value,
        tile=layout.tile, stride=layout.stride, batch=batch, windows=layout.windows, windows_skipped_estimate=skipped,
        memory_bytes=_memory_estimate(bundle, layout, batch, len(indexes), itemsize, write_probabilities),
        seconds_estimate=(layout.windows - skipped) * per_window * PLAN_OVERHEAD, device=str(torch_device),
    )


def output_paths(out_dir: Path, scene_path: Path) -> dict[str, Path]:
    stem = scene_path.stem
    return {
        "classes": out_dir / f"{stem}_classes.tif",
        "style": out_dir / f"{stem}_classes.qml",
        "confidence": out_dir / f"{stem}_confidence.tif",
        "probabilities": out_dir / f"{stem}_probabilities.tif",
        "polygons": out_dir / f"{stem}_classes.gpkg",
        "preview": out_dir / f"{stem}_preview.png",
        "summary": out_dir / f"{stem}_summary.json",
    }


class _StripWriter:
    """Turns finished accumulator rows into class/confidence(/probability) rows and per-class statistics."""

    def __init__(self, class_sink, confidence_sink, probability_sink, num_classes: int) -> None:
        self.class_sink, self.confidence_sink, self.probability_sink = class_sink, confidence_sink, probability_sink
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        self.confidence_sum = np.zeros(num_classes, dtype=np.float64)
        self.nodata_pixels = 0

    def write(self, top: int, sums: np.ndarray, counts: np.ndarray, valid: np.ndarray) -> None:
        from rasterio.windows import Window

        rows, width = counts.shape
        labelled = valid & (counts > 0)
        coverage = np.maximum(counts, 1.0)
        # The argmax of the averaged probabilities is the argmax of their sum: one pass for both.
        best_sum, best_class = torch.from_numpy(sums).max(dim=0)
        classes = best_class.numpy().astype(np.uint8)
        confidence = best_sum.numpy() / coverage
        classes[~labelled] = CLASS_NODATA
        confidence[~labelled] = CONFIDENCE_NODATA
        window = Window(0, top, width, rows)
        self.class_sink.write(classes, 1, window=window)
        self.confidence_sink.write(confidence.astype(np.float32, copy=False), 1, window=window)
        if self.probability_sink is not None:
            probabilities = sums / coverage
            probabilities[:, ~labelled] = CONFIDENCE_NODATA
            self.probability_sink.write(probabilities.astype(np.float32, copy=False), window=window)
        kept = classes[labelled]
        self.pixels += np.bincount(kept, minlength=len(self.pixels))
        self.confidence_sum += np.bincount(kept, weights=confidence[labelled], minlength=len(self.pixels))
        self.nodata_pixels += int(rows * width - kept.size)


@dataclass
class _Strip:
    """One row of windows: its difference arrays and the input validity of the rows it finishes."""

    top: int
    finished: int
    valid: np.ndarray
    row_sums: np.ndarray
    row_counts: np.ndarray
    outstanding: int = 0
    read: bool = False


@dataclass
class _Chunk:
    """One windowed read: which windows hold data, already preprocessed for the model."""

    strip: int
    left: int
    valid: np.ndarray          # (window height, chunk width) valid input pixels
    starts: np.ndarray         # scene x of the windows with data
    tiles: torch.Tensor | None  # their model inputs, None when every window is nodata
    skipped: int
    last_in_strip: bool


def _read_chunks(dataset, layout: SceneLayout, indexes: list[int], nodata: float | None, use_mask: bool,
                 bundle, batch: int, cancel: CancelToken | None) -> Iterator[_Chunk]:
    """Strip by strip, chunks of at most ``batch`` windows: one bounded read each, nodata windows dropped."""
    from rasterio.windows import Window

    window_width = layout.window_width
    for strip, top in enumerate(layout.ys.tolist()):
        for start in range(0, len(layout.xs), batch):
            if cancel is not None:
                cancel.raise_if_cancelled()
            origins = layout.xs[start:start + batch]
            left, right = int(origins[0]), int(origins[-1]) + window_width
            read_window = Window(left, top, right - left, layout.window_height)
            pixels = dataset.read(indexes, window=read_window)
            valid = _valid_pixels(dataset, pixels, read_window, nodata, use_mask)
            offsets = origins - left
            valid_columns = np.concatenate(([0], np.cumsum(valid.any(axis=0))))
            has_data = valid_columns[offsets + window_width] > valid_columns[offsets]
            tiles = preprocess_for_bundle(bundle, _windows_from_chunk(pixels, offsets[has_data], layout)) if has_data.any() else None
            yield _Chunk(strip, left, valid, origins[has_data], tiles, int((~has_data).sum()), start + batch >= len(layout.xs))


class _BatchedClassifier:
    """Queues preprocessed windows from consecutive strips and runs the model on full batches across strips."""

    def __init__(self, model, device: torch.device, batch: int, window_width: int) -> None:
        self.model, self.device, self.batch, self.window_width = model, device, batch, window_width
        self.queue: list[tuple[_Strip, np.ndarray, torch.Tensor]] = []  # (strip, window starts, model inputs)
        self.pending = 0

    def add(self, strip: _Strip, starts: np.ndarray, tiles: torch.Tensor) -> None:
        self.queue.append((strip, starts, tiles))
        self.pending += len(starts)
        strip.outstanding += len(starts)

    def run(self, flush: bool = False) -> None:
        while self.pending >= self.batch or (flush and self.pending):
            take, pieces = min(self.batch, self.pending), []
            while take:
                strip, starts, tiles = self.queue[0]
                used = min(take, len(starts))
                pieces.append((strip, starts[:used], tiles[:used]))
                if used == len(starts):
                    self.queue.pop(0)
                else:
                    self.queue[0] = (strip, starts[used:], tiles[used:])
                take -= used
            inputs = torch.cat([tiles for _, _, tiles in pieces]) if len(pieces) > 1 else pieces[0][2]
            probabilities = predict_probabilities(self.model, inputs, self.device).numpy().T
            offset = 0
            for strip, starts, _ in pieces:
                part = probabilities[:, offset:offset + len(starts)]
                offset += len(starts)
                # Difference arrays: +p where a window starts, -p where it ends; a cumsum spreads p over it.
                strip.row_sums[:, starts] += part
                strip.row_sums[:, starts + self.window_width] -= part
                strip.row_counts[starts] += 1.0
                strip.row_counts[starts + self.window_width] -= 1.0
                strip.outstanding -= len(starts)
            self.pending -= probabilities.shape[1]


def _run_windows(dataset, layout: SceneLayout, indexes: list[int], nodata: float | None, use_mask: bool,
                 bundle, model, device: torch.device, batch: int, writer: _StripWriter,
                 callback: EventCallback, cancel: CancelToken | None) -> tuple[int, int]:
    """Classify every window strip by strip, accumulate overlaps, hand finished rows to ``writer``.

    Rows ``[top, next top)`` of a strip are final once that strip and every earlier one are classified,
    so one strip-high rolling accumulator suffices; batches are filled across strips.
    """
    classes, width = bundle.num_classes, layout.width
    window_height = layout.window_height
    sums = np.zeros((classes, window_height, width), dtype=np.float32)
    counts = np.zeros((window_height, width), dtype=np.float32)
    classifier = _BatchedClassifier(model, device, batch, layout.window_width)
    tops = layout.ys.tolist()
    waiting: list[_Strip] = []
    processed = skipped = done = 0

    def finish_ready_strips() -> None:
        nonlocal done
        while waiting and waiting[0].read and waiting[0].outstanding == 0:
            strip = waiting.pop(0)
            sums[:] += np.cumsum(strip.row_sums[:, :width], axis=1)[:, None, :]
            counts[:] += np.cumsum(strip.row_counts[:width])[None, :]
            rows = strip.finished
            writer.write(strip.top, sums[:, :rows], counts[:rows], strip.valid)
            sums[:, :window_height - rows] = sums[:, rows:].copy()
            sums[:, window_height - rows:] = 0.0
            counts[:window_height - rows] = counts[rows:].copy()
            counts[window_height - rows:] = 0.0
            done += 1
            callback(BatchProgress(STAGE, 0, done, len(tops)))

    for chunk in _read_chunks(dataset, layout, indexes, nodata, use_mask, bundle, batch, cancel):
        if not waiting or waiting[-1].top != tops[chunk.strip]:
            top = tops[chunk.strip]
            finished = (tops[chunk.strip + 1] if chunk.strip + 1 < len(tops) else layout.height) - top
            waiting.append(_Strip(top, finished, np.zeros((finished, width), dtype=bool),
                                  np.zeros((classes, width + 1), dtype=np.float32), np.zeros(width + 1, dtype=np.float32)))
        strip = waiting[-1]
        strip.valid[:, chunk.left:chunk.left + chunk.valid.shape[1]] = chunk.valid[:strip.finished]
        skipped += chunk.skipped
        if chunk.tiles is not None:
            classifier.add(strip, chunk.starts, chunk.tiles)
            processed += len(chunk.starts)
            classifier.run()
        if chunk.last_in_strip:
            strip.read = True
            finish_ready_strips()
    classifier.run(flush=True)
    finish_ready_strips()
    return processed, skipped


def _write_rasters(dataset, layout: SceneLayout, indexes: list[int], nodata: float | None, use_mask: bool, bundle, model,
                   device: torch.device, batch: int, temporaries: dict[str, Path], callback: EventCallback,
                   cancel: CancelToken | None) -> tuple[_StripWriter, int, int]:
    """Class, confidence and (if asked) probability GeoTIFFs at their temporary paths."""
    import rasterio

    geometry = (dataset.crs, dataset.transform, dataset.width, dataset.height)
    with contextlib.ExitStack() as sinks:
        class_sink = sinks.enter_context(rasterio.open(temporaries["classes"], "w", **raster_profile(*geometry, "uint8", 1, CLASS_NODATA)))
        class_sink.write_colormap(1, class_colormap(bundle.colours))
        class_sink.set_band_description(1, "class")
        class_sink.update_tags(class_names=",".join(bundle.class_names))
        confidence_sink = sinks.enter_context(rasterio.open(temporaries["confidence"], "w",
                                                            **raster_profile(*geometry, "float32", 1, CONFIDENCE_NODATA)))
        confidence_sink.set_band_description(1, "confidence (max class probability)")
        probability_sink = None
        if "probabilities" in temporaries:
            probability_sink = sinks.enter_context(rasterio.open(temporaries["probabilities"], "w",
                                                                 **raster_profile(*geometry, "float32", bundle.num_classes, CONFIDENCE_NODATA)))
            for index, name in enumerate(bundle.class_names, start=1):
                probability_sink.set_band_description(index, name)
        writer = _StripWriter(class_sink, confidence_sink, probability_sink, bundle.num_classes)
        processed, skipped = _run_windows(dataset, layout, indexes, nodata, use_mask, bundle, model, device, batch,
                                          writer, callback, cancel)
    return writer, processed, skipped


def label_scene(bundle, scene_path, out_dir, *, tile: int | None = None, stride: int | None = None, batch: int = 32,
                bands: Sequence[int] | None = None, nodata: float | None = None, device: str = "auto",
                write_probabilities: bool = False, write_polygons: bool = True, write_preview: bool = True,
                block: int = DEFAULT_BLOCK, callback: EventCallback = ignore_event,
                cancel: CancelToken | None = None) -> LabelResult:
    """Label ``scene_path`` with the bundle's model and write every output into ``out_dir`` atomically.

    Outputs (named after the scene): ``_classes.tif`` (uint8, colour table, nodata 255) with its QGIS
    ``_classes.qml``, ``_confidence.tif`` (float32 max probability, nodata -1), optional
    ``_probabilities.tif`` (one float32 band per class), ``_classes.gpkg`` (one dissolved polygon per
    class), ``_preview.png`` (classes over the scene with a legend) and ``_summary.json``.
    On cancel or error no file is left under a final name (Cancelled is re-raised).
    """
    import rasterio

    from sembridge_engine.device import resolve_device

    started = time.perf_counter()
    scene_path, out_dir = Path(scene_path), Path(out_dir)
    torch_device = resolve_device(device)
    finals = output_paths(out_dir, scene_path)
    if not write_probabilities:
        finals.pop("probabilities")
    if not write_polygons:
        finals.pop("polygons")
    if not write_preview:
        finals.pop("preview")
    temporaries = {key: writers.temporary_path(path) for key, path in finals.items()}
    with _open_scene(scene_path) as dataset, \
         rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(dataset.width, bundle.num_classes, write_probabilities)):
        layout, indexes, nodata_value, use_mask = _resolve(bundle, dataset, scene_path, tile, stride, batch, bands, nodata)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = inference_model(bundle, torch_device)
        try:
            writer, processed, skipped = _write_rasters(dataset, layout, indexes, nodata_value, use_mask, bundle, model,
                                                        torch_device, batch, temporaries, callback, cancel)
            writers.write_qml(temporaries["style"], bundle.class_names, bundle.colours)
            mean_confidence = [float(total / count) if count else None for total, count in zip(writer.confidence_sum, writer.pixels)]
            if cancel is not None:
                cancel.raise_if_cancelled()
            if write_polygons:
                writers.write_polygons(temporaries["polygons"], temporaries["classes"], bundle.class_names, mean_confidence, block)
            labelled = int(writer.pixels.sum())
            shares = {name: (float(count) / labelled if labelled else 0.0) for name, count in zip(bundle.class_names, writer.pixels.tolist())}
            if write_preview:
                writers.write_preview(temporaries["preview"], dataset, indexes, nodata_value, temporaries["classes"],
                                      bundle.class_names, bundle.colours, list(shares.values()), block=block)
            seconds = time.perf_counter() - started
            writers.write_json(temporaries["summary"], {
                "scene": str(scene_path), "model": str(bundle.path), "width": layout.width, "height": layout.height,
                "crs": dataset.crs.to_string() if dataset.crs else None, "bands": indexes, "nodata": nodata_value,
                "tile": layout.tile, "stride": layout.stride, "batch": batch, "device": str(torch_device),
                "windows": layout.windows, "windows_classified": processed, "windows_skipped": skipped,
                "labelled_pixels": labelled, "nodata_pixels": writer.nodata_pixels, "seconds": round(seconds, 3),
                "classes": [
                    {"class_id": index, "class_name": name, "colour": colour, "pixels": int(count),
                     "share": shares[name], "mean_confidence": mean_confidence[index]}
                    for index, (name, colour, count) in enumerate(zip(bundle.class_names, bundle.colours, writer.pixels.tolist()))
                ],
            })
            if cancel is not None:
                cancel.raise_if_cancelled()
            writers.replace_all([(temporaries[key], finals[key]) for key in finals])
        finally:
            writers.remove_quietly(list(temporaries.values()))
    return LabelResult(
        classes=finals["classes"], style=finals["style"], confidence=finals["confidence"], summary=finals["summary"],
        probabilities=finals.get("probabilities"), polygons=finals.get("polygons"), preview=finals.get("preview"),
        windows=layout.windows, windows_skipped=skipped, seconds=seconds, class_shares=shares,
    )
