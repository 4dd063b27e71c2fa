"""Sliding-window labelling of a georeferenced scene into GIS-ready rasters, polygons and a preview.

``plan_scene(bundle, scene, options)`` gives the pre-flight estimate; ``label_scene(bundle, scene,
out_dir, options)`` does the job. The steps live in their own modules: options (what to do),
source (the open scene, bands, nodata, extent), windows (where windows lie), predictor (the model
runtime), accumulate (overlap averaging and raster writing), writers (GIS files).
Each window is resized to the model input by the training pipeline's own ``preprocess_arrays``.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sembridge_engine.atomic import raise_naming_full_disk, remove_quietly, remove_stale_temporaries, temporary_path
from sembridge_engine.events import CancelToken, EventCallback, ignore_event

from . import writers
from .accumulate import StripWriter, waiting_strips, write_rasters
from .options import LabelOptions, SceneError
from .output_set import commit_outputs, output_paths, previous_outputs
from .predictor import Predictor, make_predictor
from .radiometry import RadiometryMapping
from .scale import ScaleChoice
from .source import SceneSource, open_source
from .windows import SceneLayout, scene_layout
from .writers import GTIFF_BLOCK, raster_profile

__all__ = ["LabelOptions", "LabelResult", "ScenePlan", "SceneError", "label_scene", "plan_scene", "scene_layout"]

# Rough activation memory of one forward pass, as a multiple of the input batch's bytes (measured
# on the registered backbones at 64-256 px tiles; an estimate for the pre-flight plan only).
ACTIVATION_FACTOR = 48
PLAN_OVERHEAD = 1.15
READ_CACHE_BYTES = 64 * 2**20  # GDAL's block cache while sampling and planning (its default is 5 % of the RAM)


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
    scale: ScaleChoice
    radiometry: RadiometryMapping

    @property
    def blocked(self) -> bool:
        """An honest limit is crossed (the scene is far coarser or finer than the training data) and not forced."""
        return self.scale.blocked

    def lines(self) -> list[str]:
        """The plan as a user reads it: scale, windows, memory, time, and any warning."""
        lines = [self.scale.describe(), self.radiometry.describe(),
                 f"{self.width} x {self.height} px, bands {self.band_indexes}, window {self.tile} stride {self.stride}: "
                 f"{self.windows} windows (~{self.windows_skipped_estimate} nodata, skipped), "
                 f"~{self.memory_bytes / 2**20:.0f} MiB, ~{self.seconds_estimate:.0f} s on {self.device}"]
        if self.scale.warning:
            lines.append(("stopped: " if self.blocked else "warning: ") + self.scale.warning)
        if self.radiometry.warning:
            lines.append("warning: " + self.radiometry.warning)
        return lines

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
    manifest: Path | None = None
    windows: int = 0
    windows_skipped: int = 0
    seconds: float = 0.0
    class_shares: dict[str, float] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [path for path in (self.classes, self.style, self.confidence, self.probabilities,
                                  self.polygons, self.preview, self.summary, self.manifest) if path is not None]


def gdal_cache_bytes(width: int, num_classes: int, probabilities: bool) -> int:
    """GDAL block cache for one labelling job: two rows of 256-px output tiles, at least 64 MiB.

    GDAL keeps written blocks in its cache until it is full (default 5 % of RAM), so without a cap the
    outputs of a large scene would sit in memory; a full row of output tiles must fit so no tile is
    evicted half-written (it would be compressed twice).
    """
    bytes_per_pixel = 1 + 4 + (4 * num_classes if probabilities else 0)
    return max(64 * 2**20, 2 * GTIFF_BLOCK * width * bytes_per_pixel)


def _memory_estimate(bundle, predictor: Predictor, layout: SceneLayout, batch: int, channels: int, itemsize: int,
                     probabilities: bool) -> int:
    classes = bundle.num_classes
    kept_strips = waiting_strips(len(layout.xs), batch) + -(-layout.window_height // layout.stride) + 1
    accumulators = kept_strips * (layout.stride * layout.width + (classes + 1) * (layout.width + 1) * 4) + (classes + 1) * layout.width * 4
    finished_rows = layout.stride * layout.width * (1 + 4 + 4 * classes * (2 if probabilities else 1))
    chunk_width = min(layout.width, (batch - 1) * layout.stride + layout.window_width)
    reads = channels * layout.window_height * chunk_width * itemsize + 2 * batch * channels * layout.tile ** 2 * 4
    inputs = batch * channels * bundle.tile_size ** 2 * 4
    cache = gdal_cache_bytes(layout.width, classes, probabilities)
    return int(accumulators + finished_rows + reads + inputs * (1 + ACTIVATION_FACTOR) + predictor.model_bytes + cache)


def _seconds_per_window(source: SceneSource, predictor: Predictor) -> float:
    """Wall time per window of radiometry, preprocessing and model work, from one timed batch after a warm-up."""
    sample, tile = min(source.batch, 16), source.layout.tile
    windows = np.random.default_rng(0).integers(0, 200, size=(sample, len(source.indexes), tile, tile)).astype(source.dtype)
    predictor.predict(source.model_windows(windows))  # warm-up: kernels (onnx: the session) for this shape
    started = time.perf_counter()
    predictor.predict(source.model_windows(windows))
    return (time.perf_counter() - started) / sample


def _seconds_per_strip(source: SceneSource, bundle, probabilities: bool) -> tuple[float, float]:
    """(reading and cutting one strip, writing one fully labelled strip): the work a scene costs besides the model,
    timed on the middle strip and on a synthetic strip (at most 2048 columns, scaled) written to memory."""
    from rasterio.io import MemoryFile

    layout = source.layout
    started = time.perf_counter()
    for _ in source.chunks(source.batch, None, strips=[len(layout.ys) // 2]):
        pass
    read = time.perf_counter() - started
    columns, rows, classes = min(layout.width, 2048), layout.stride, bundle.num_classes
    sums = np.random.default_rng(0).random((classes, columns), dtype=np.float32)
    rasters = [("uint16", 1, 65535), ("float32", 1, -1.0)] + ([("float32", classes, -1.0)] if probabilities else [])
    with contextlib.ExitStack() as stack:
        sinks = [stack.enter_context(stack.enter_context(MemoryFile()).open(
            **raster_profile(source.crs, source.transform, columns, rows, dtype, count, nodata))) for dtype, count, nodata in rasters]
        writer = StripWriter(sinks[0], sinks[1], sinks[2] if probabilities else None, classes)
        started = time.perf_counter()
        writer.write(0, sums, np.ones(columns, np.float32), np.ones((rows, columns), bool), 0, columns)
    return read, (time.perf_counter() - started) * layout.width / columns


def plan_scene(bundle, scene, options: LabelOptions | None = None) -> ScenePlan:
    """Windows, skipped-window estimate, peak memory estimate (bytes) and expected seconds on the device.

    The time counts the model's work on the windows with data and, for every strip, reading it and
    writing its labelled part (so a huge scene, even one without data, is not estimated at a few seconds).
    """
    import rasterio

    options = options or LabelOptions()
    path = Path(scene)
    predictor = make_predictor(bundle, options.device)
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES):
        source = open_source(path, bundle, options)
        with source.dataset:
            layout = source.layout
            skipped = source.empty_windows_estimate()
            memory = _memory_estimate(bundle, predictor, layout, source.batch, len(source.indexes), source.dtype.itemsize,
                                      options.probabilities)
            per_window = _seconds_per_window(source, predictor)
            read, write = _seconds_per_strip(source, bundle, options.probabilities)
    strips = len(layout.ys)
    labelled_share = 1.0 - skipped / layout.windows
    seconds = (layout.windows - skipped) * per_window + strips * (read + labelled_share * write)
    return ScenePlan(
        scene=str(path), width=layout.width, height=layout.height, band_indexes=source.indexes, nodata=source.nodata,
        tile=layout.tile, stride=layout.stride, batch=source.batch, windows=layout.windows,
        windows_skipped_estimate=skipped, memory_bytes=memory, seconds_estimate=seconds * PLAN_OVERHEAD,
        device=str(predictor.device), scale=source.scale, radiometry=source.radiometry,
    )


def _summary(source: SceneSource, bundle, options: LabelOptions, predictor: Predictor, writer, processed: int,
             skipped: int, shares: dict[str, float], seconds: float) -> dict:
    layout, mean_confidence = source.layout, writer.mean_confidence()
    extent = source.extent
    return {
        "scene": str(source.path), "model": str(bundle.path), "width": layout.width, "height": layout.height,
        "window": [int(extent.col_off), int(extent.row_off), int(extent.width), int(extent.height)],
        "crs": source.crs.to_string() if source.crs else None, "bands": source.indexes, "nodata": source.nodata,
        "tile": layout.tile, "stride": layout.stride, "batch": source.batch, "device": str(predictor.device),
        "scale": source.scale.to_summary(), "scale_warning": source.scale.warning,
        "radiometry": source.radiometry.to_summary(), "radiometry_warning": source.radiometry.warning,
        "windows": layout.windows, "windows_classified": processed, "windows_skipped": skipped,
        "class_dtype": writer.class_dtype, "class_nodata": writer.class_nodata,
        "labelled_pixels": int(writer.pixels.sum()), "nodata_pixels": writer.nodata_pixels, "seconds": round(seconds, 3),
        "classes": [
            {"class_id": index, "class_name": name, "colour": colour, "pixels": int(count),
             "share": shares[name], "mean_confidence": mean_confidence[index]}
            for index, (name, colour, count) in enumerate(zip(bundle.class_names, bundle.colours, writer.pixels.tolist()))
        ],
    }


def label_scene(bundle, scene, out_dir, options: LabelOptions | None = None, *, callback: EventCallback = ignore_event,
                cancel: CancelToken | None = None) -> LabelResult:
    """Label ``scene`` with the bundle's model and write every output into ``out_dir`` atomically.

    Outputs (named after the scene): ``_classes.tif`` (colour table; uint8 with nodata 255, uint16 with
    nodata 65535 beyond 255 classes) with its QGIS ``_classes.qml``, ``_confidence.tif`` (float32 max
    probability, nodata -1), optional ``_probabilities.tif`` (one float32 band per class),
    ``_classes.gpkg`` (one dissolved polygon per class), ``_preview.png`` (classes over the scene with a
    legend), ``_summary.json`` and ``_manifest.json`` (the set; see output_set: an earlier set of the same
    scene in ``out_dir`` is replaced as a whole). On cancel or error no file is left under a final name
    and the previous set is untouched (Cancelled is re-raised).
    """
    import rasterio

    options = options or LabelOptions()
    started = time.perf_counter()
    scene_path, out_dir = Path(scene), Path(out_dir)
    predictor = make_predictor(bundle, options.device)
    finals = output_paths(out_dir, scene_path, options)
    temporaries = {key: temporary_path(path) for key, path in finals.items()}
    previous_outputs(out_dir, scene_path)  # refuses a folder holding another scene's set before any work
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES):
        source = open_source(scene_path, bundle, options)
    with source.dataset, rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(source.width, bundle.num_classes, options.probabilities)):
        if source.scale.blocked:
            raise SceneError(source.scale.warning)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)
        try:
            writer, processed, skipped = write_rasters(source, bundle, predictor, source.batch, temporaries, callback, cancel)
            writers.write_qml(temporaries["style"], bundle.class_names, bundle.colours)
            if cancel is not None:
                cancel.raise_if_cancelled()
            if options.polygons:
                writers.write_polygons(temporaries["polygons"], temporaries["classes"], bundle.class_names,
                                       writer.mean_confidence(), options.block)
            labelled = int(writer.pixels.sum())
            shares = {name: (float(count) / labelled if labelled else 0.0) for name, count in zip(bundle.class_names, writer.pixels.tolist())}
            if options.preview:
                writers.write_preview(temporaries["preview"], source, temporaries["classes"], bundle.class_names,
                                      bundle.colours, list(shares.values()), block=options.block)
            seconds = time.perf_counter() - started
            writers.write_json(temporaries["summary"],
                               _summary(source, bundle, options, predictor, writer, processed, skipped, shares, seconds))
            if cancel is not None:
                cancel.raise_if_cancelled()
            manifest = commit_outputs(out_dir, scene_path, {temporaries[key]: finals[key] for key in finals})
        except OSError as error:
            raise_naming_full_disk(error, out_dir)
        finally:
            remove_quietly(list(temporaries.values()))
    return LabelResult(
        classes=finals["classes"], style=finals["style"], confidence=finals["confidence"], summary=finals["summary"],
        probabilities=finals.get("probabilities"), polygons=finals.get("polygons"), preview=finals.get("preview"),
        manifest=manifest, windows=source.layout.windows, windows_skipped=skipped, seconds=seconds, class_shares=shares,
    )
