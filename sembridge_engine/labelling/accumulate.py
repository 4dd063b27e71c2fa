"""Putting window predictions back together: overlap averaging strip by strip, written as it finishes.

Each window's class probabilities are spread over its footprint; where windows overlap the per-pixel
probabilities are the average of every covering window. The class raster is the argmax, the
confidence raster the maximum averaged probability, both at the scene's own resolution.

A strip (one row of windows) adds the same column profile to every row it covers, so rows covered by
the same strips share one profile: the averaging and the argmax run once per such band of rows (a
class count x width array) and are broadcast over its rows, not computed for every pixel. Reads are
windowed chunks of at most ``batch`` windows, model batches are filled across strips, and only the
profiles of strips still covering unwritten rows are kept, so memory does not grow with the scene's
height and no read is larger than one chunk.
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


def waiting_strips(windows_per_strip: int, batch: int) -> int:
    """Read strips kept while their windows wait for a full model batch: enough to fill one batch, plus the
    one being read. A narrow scene needs several strips per batch; the bound keeps memory flat with height."""
    return max(2, -(-batch // max(1, windows_per_strip)) + 1)


class StripWriter:
    """Turns finished accumulator rows into class/confidence(/probability) rows and per-class statistics."""

    def __init__(self, class_sink, confidence_sink, probability_sink, num_classes: int) -> None:
        self.class_sink, self.confidence_sink, self.probability_sink = class_sink, confidence_sink, probability_sink
        self.class_dtype, self.class_nodata = class_encoding(num_classes)
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        self.confidence_sum = np.zeros(num_classes, dtype=np.float64)
        self.nodata_pixels = 0

    def write(self, top: int, sums: np.ndarray, counts: np.ndarray, valid: np.ndarray, lo: int, hi: int) -> None:
        """Rows ``top ..`` (as many as ``valid`` has) sharing one column profile: ``sums`` (classes x
        ``hi - lo``) and ``counts`` (``hi - lo``) are the summed probabilities and window counts of the
        columns ``lo:hi``, the only ones that can hold windows' votes.

        Only those columns are computed and written: the rasters are sparse GeoTIFFs whose unwritten parts
        read as nodata, so a mostly empty scene costs little more than reading it.
        """
        from rasterio.windows import Window

        rows, width = valid.shape
        kept = 0
        if hi > lo:
            labelled = valid[:, lo:hi] & (counts > 0)
            coverage = np.maximum(counts, 1.0)
            # The argmax of the averaged probabilities is the argmax of their sum.
            best_class = sums.argmax(axis=0)
            best = np.take_along_axis(sums, best_class[None], axis=0)[0] / coverage
            classes = np.where(labelled, best_class.astype(self.class_dtype), np.array(self.class_nodata, dtype=self.class_dtype))
            confidence = np.where(labelled, best.astype(np.float32), np.float32(CONFIDENCE_NODATA))
            window = Window(lo, top, hi - lo, rows)
            self.class_sink.write(classes, 1, window=window)
            self.confidence_sink.write(confidence, 1, window=window)
            if self.probability_sink is not None:
                averaged = (sums / coverage).astype(np.float32)[:, None, :]
                self.probability_sink.write(np.where(labelled, averaged, np.float32(CONFIDENCE_NODATA)), window=window)
            pixels_per_column = labelled.sum(axis=0)
            self.pixels += np.bincount(best_class, weights=pixels_per_column, minlength=len(self.pixels)).astype(np.int64)
            self.confidence_sum += np.bincount(best_class, weights=best * pixels_per_column, minlength=len(self.pixels))
            kept = int(pixels_per_column.sum())
        self.nodata_pixels += rows * width - kept

    def mean_confidence(self) -> list[float | None]:
        return [float(total / count) if count else None for total, count in zip(self.confidence_sum, self.pixels)]


@dataclass
class _Strip:
    """One row of windows: the input validity of the rows it finishes, and its votes per column: difference
    arrays while its windows are classified, their running sums (the column profile) once it is complete."""

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
    """Classify every window strip by strip, average overlaps, hand finished rows to ``writer``.

    Rows ``[top, next top)`` of a strip are final once that strip and every earlier one are classified.
    They split into bands where the set of covering strips is the same (a strip's coverage ends inside
    them when the stride is not a divisor of the window); each band is written from one summed profile.
    Returns (windows classified, windows skipped as nodata).
    """
    layout, num_classes = source.layout, bundle.num_classes
    width, window_height = layout.width, layout.window_height
    classifier = _BatchedClassifier(predictor, batch, layout.window_width, str(bundle.path))
    tops = layout.ys.tolist()
    waiting: list[_Strip] = []
    covering: list[_Strip] = []   # classified strips whose rows are not all written, top to bottom
    max_waiting = waiting_strips(len(layout.xs), batch)
    processed = skipped = done = 0

    def write_band(top: int, rows: int, valid: np.ndarray) -> None:
        voting = [strip for strip in covering if strip.right > strip.left and strip.top + window_height > top]
        if not voting:
            writer.write(top, np.zeros((num_classes, 0), np.float32), np.zeros(0, np.float32), valid, 0, 0)
            return
        lo, hi = min(strip.left for strip in voting), max(strip.right for strip in voting)
        sums = np.zeros((num_classes, hi - lo), dtype=np.float32)
        counts = np.zeros(hi - lo, dtype=np.float32)
        for strip in voting:
            sums[:, strip.left - lo:strip.right - lo] += strip.row_sums[:, strip.left:strip.right]
            counts[strip.left - lo:strip.right - lo] += strip.row_counts[strip.left:strip.right]
        writer.write(top, sums, counts, valid, lo, hi)

    def finish_ready_strips() -> None:
        nonlocal done
        while waiting and waiting[0].read and waiting[0].outstanding == 0:
            strip = waiting.pop(0)
            if strip.right > strip.left:  # difference arrays -> the column profile every covered row receives
                np.cumsum(strip.row_sums[:, strip.left:strip.right], axis=1, out=strip.row_sums[:, strip.left:strip.right])
                np.cumsum(strip.row_counts[strip.left:strip.right], out=strip.row_counts[strip.left:strip.right])
            covering.append(strip)
            end = strip.top + strip.finished
            cuts = sorted({strip.top, end} | {other.top + window_height for other in covering if strip.top < other.top + window_height < end})
            for first, last in zip(cuts[:-1], cuts[1:]):
                write_band(first, last - first, strip.valid[first - strip.top:last - strip.top])
            covering[:] = [other for other in covering if other.top + window_height > end]
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
            if len(waiting) > max_waiting:  # a part batch holds back finished strips: run it, memory stays flat
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
