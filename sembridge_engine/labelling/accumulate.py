"""Putting window predictions back together: overlap averaging strip by strip, written as it finishes.

Each window's class probabilities are spread over its footprint; where windows overlap the per-pixel
probabilities are the average of every covering window. The class raster is the argmax, the
confidence raster the maximum averaged probability, both at the scene's own resolution.

The scene is processed strip by strip (one row of windows at a time). Reads are windowed chunks of
at most ``batch`` windows, model batches are filled across strips, accumulators hold one strip
(``tile`` rows x scene width) and finished rows are written immediately, so memory does not grow
with the scene's height and no read is larger than one chunk.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from sembridge_engine.events import BatchProgress, CancelToken, EventCallback

from .predictor import Predictor, check_probabilities
from .source import SceneSource
from .writers import CONFIDENCE_NODATA, class_colormap, class_encoding, raster_profile

STAGE = "label"
MAX_WAITING_STRIPS = 2   # read strips kept while their windows wait for a full model batch


class StripWriter:
    """Turns finished accumulator rows into class/confidence(/probability) rows and per-class statistics."""

    def __init__(self, class_sink, confidence_sink, probability_sink, num_classes: int) -> None:
        self.class_sink, self.confidence_sink, self.probability_sink = class_sink, confidence_sink, probability_sink
        self.class_dtype, self.class_nodata = class_encoding(num_classes)
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        self.confidence_sum = np.zeros(num_classes, dtype=np.float64)
        self.nodata_pixels = 0

    def write(self, top: int, sums: np.ndarray, counts: np.ndarray, valid: np.ndarray, lo: int, hi: int) -> None:
        """Rows ``top ..`` from accumulated ``sums``/``counts``; only columns ``lo:hi`` can hold windows' votes.

        Only those columns are computed and written: the rasters are sparse GeoTIFFs whose unwritten parts
        read as nodata, so a mostly empty scene costs little more than reading it.
        """
        from rasterio.windows import Window

        rows, width = counts.shape
        kept = np.zeros(0, dtype=np.int64)
        if hi > lo:
            part_sums, part_counts = sums[:, :, lo:hi], counts[:, lo:hi]
            labelled = valid[:, lo:hi] & (part_counts > 0)
            coverage = np.maximum(part_counts, 1.0)
            # The argmax of the averaged probabilities is the argmax of their sum.
            best_class = part_sums.argmax(axis=0)
            best = np.take_along_axis(part_sums, best_class[None], axis=0)[0] / coverage
            classes = np.where(labelled, best_class, self.class_nodata).astype(self.class_dtype)
            confidence = np.where(labelled, best, CONFIDENCE_NODATA).astype(np.float32)
            window = Window(lo, top, hi - lo, rows)
            self.class_sink.write(classes, 1, window=window)
            self.confidence_sink.write(confidence, 1, window=window)
            if self.probability_sink is not None:
                probabilities = np.where(labelled, part_sums / coverage, CONFIDENCE_NODATA).astype(np.float32)
                self.probability_sink.write(probabilities, window=window)
            kept = best_class[labelled]
            self.confidence_sum += np.bincount(kept, weights=best[labelled], minlength=len(self.pixels))
        self.pixels += np.bincount(kept, minlength=len(self.pixels))
        self.nodata_pixels += int(rows * width - kept.size)

    def mean_confidence(self) -> list[float | None]:
        return [float(total / count) if count else None for total, count in zip(self.confidence_sum, self.pixels)]


@dataclass
class _Strip:
    """One row of windows: its difference arrays and the input validity of the rows it finishes."""

    top: int
    finished: int
    valid: np.ndarray
    row_sums: np.ndarray
    row_counts: np.ndarray
    left: int = 0            # columns [left, right) hold this strip's windows (empty when right <= left)
    right: int = 0
    outstanding: int = 0
    read: bool = False


class _BatchedClassifier:
    """Queues raw windows from consecutive strips and runs the predictor on full batches across strips."""

    def __init__(self, predictor: Predictor, batch: int, window_width: int, model_name: str) -> None:
        self.predictor, self.batch, self.window_width, self.model_name = predictor, batch, window_width, model_name
        self.queue: list[tuple[_Strip, np.ndarray, np.ndarray]] = []  # (strip, window starts, raw windows)
        self.pending = 0

    def add(self, strip: _Strip, starts: np.ndarray, tiles: np.ndarray) -> None:
        first, last = int(starts.min()), int(starts.max()) + self.window_width
        strip.left, strip.right = (first, last) if strip.right <= strip.left else (min(strip.left, first), max(strip.right, last))
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
            inputs = np.concatenate([tiles for _, _, tiles in pieces]) if len(pieces) > 1 else pieces[0][2]
            probabilities = self.predictor.predict(inputs)
            check_probabilities(probabilities, self.model_name)
            probabilities = probabilities.T
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


def run_windows(source: SceneSource, predictor: Predictor, bundle, batch: int, writer: StripWriter, callback: EventCallback,
                cancel: CancelToken | None) -> tuple[int, int]:
    """Classify every window strip by strip, accumulate overlaps, hand finished rows to ``writer``.

    Rows ``[top, next top)`` of a strip are final once that strip and every earlier one are classified,
    so one strip-high rolling accumulator suffices; batches are filled across strips.
    Returns (windows classified, windows skipped as nodata).
    """
    layout, num_classes = source.layout, bundle.num_classes
    width, window_height = layout.width, layout.window_height
    sums = np.zeros((num_classes, window_height, width), dtype=np.float32)
    counts = np.zeros((window_height, width), dtype=np.float32)
    classifier = _BatchedClassifier(predictor, batch, layout.window_width, str(bundle.path))
    tops = layout.ys.tolist()
    waiting: list[_Strip] = []
    processed = skipped = done = 0

    active = [width, 0]  # columns of the rolling accumulator that hold votes

    def finish_ready_strips() -> None:
        nonlocal done
        while waiting and waiting[0].read and waiting[0].outstanding == 0:
            strip = waiting.pop(0)
            if strip.right > strip.left:
                lo, hi = strip.left, strip.right
                sums[:, :, lo:hi] += np.cumsum(strip.row_sums[:, lo:hi], axis=1)[:, None, :]
                counts[:, lo:hi] += np.cumsum(strip.row_counts[lo:hi])[None, :]
                active[:] = [min(active[0], lo), max(active[1], hi)]
            lo, hi, rows = active[0], active[1], strip.finished
            writer.write(strip.top, sums[:, :rows], counts[:rows], strip.valid, lo, hi)
            if hi > lo:  # roll the accumulator up by the rows just written
                sums[:, :window_height - rows, lo:hi] = sums[:, rows:, lo:hi].copy()
                sums[:, window_height - rows:, lo:hi] = 0.0
                counts[:window_height - rows, lo:hi] = counts[rows:, lo:hi].copy()
                counts[window_height - rows:, lo:hi] = 0.0
                if not counts[:, lo:hi].any():
                    active[:] = [width, 0]
            done += 1
            callback(BatchProgress(STAGE, 0, done, len(tops)))

    for chunk in source.chunks(batch, cancel):
        if not waiting or waiting[-1].top != tops[chunk.strip]:
            top = tops[chunk.strip]
            finished = (tops[chunk.strip + 1] if chunk.strip + 1 < len(tops) else layout.height) - top
            waiting.append(_Strip(top, finished, np.zeros((finished, width), dtype=bool),
                                  np.zeros((num_classes, width + 1), dtype=np.float32), np.zeros(width + 1, dtype=np.float32)))
        strip = waiting[-1]
        strip.valid[:, chunk.left:chunk.left + chunk.valid.shape[1]] = chunk.valid[:strip.finished]
        skipped += chunk.skipped
        if chunk.tiles is not None:
            classifier.add(strip, chunk.starts, chunk.tiles)
            processed += len(chunk.starts)
            classifier.run()
        if chunk.last_in_strip:
            strip.read = True
            if len(waiting) > MAX_WAITING_STRIPS:  # a part batch holds back finished strips: run it, memory stays flat
                classifier.run(flush=True)
            finish_ready_strips()
    classifier.run(flush=True)
    finish_ready_strips()
    return processed, skipped


def write_rasters(source: SceneSource, bundle, predictor: Predictor, batch: int, temporaries: dict[str, Path], callback: EventCallback,
                  cancel: CancelToken | None) -> tuple[StripWriter, int, int]:
    """Class, confidence and (if asked) probability GeoTIFFs at their temporary paths."""
    import rasterio

    geometry = (source.crs, source.transform, source.width, source.height)
    with contextlib.ExitStack() as sinks:
        class_dtype, class_nodata = class_encoding(bundle.num_classes)
        class_sink = sinks.enter_context(rasterio.open(temporaries["classes"], "w", **raster_profile(*geometry, class_dtype, 1, class_nodata)))
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
        writer = StripWriter(class_sink, confidence_sink, probability_sink, bundle.num_classes)
        processed, skipped = run_windows(source, predictor, bundle, batch, writer, callback, cancel)
    return writer, processed, skipped
