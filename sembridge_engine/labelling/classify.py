"""Classify image tiles (PNG/JPEG/TIFF/GeoTIFF, files or folders) with a model bundle.

Preprocessing is the training pipeline's own (``read_tile`` + ``preprocess_arrays`` with the
bundle's tile size and channel stats), so a plain tile gets the logits it would get during
validation. Two things follow scene labelling, through the same functions:

* **Scale** (labelling.scale): a georeferenced tile is cut into windows of the model's training
  footprint (footprint / the tile's GSD, at most ``MAX_TILE_WINDOWS``) and the windows'
  probabilities are averaged; where the tile is far coarser or smaller than one footprint it is
  classified whole and the result carries the warning labelling would stop with.
* **Radiometry** (labelling.radiometry): the tile's values are mapped onto the training images'
  when their dtype or range differs (``auto``), sampled from the tile itself.

Images larger than the decoder's limit are read reduced (pixel averaging): whole to the model's
input size, or, when georeferenced, to the limit with the GSD adjusted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sembridge_engine.events import BatchProgress, CancelToken, EventCallback, ignore_event

STAGE = "classify"
MAX_TILE_WINDOWS = 64   # a georeferenced file holding more footprints than this is a scene: label it


@dataclass(frozen=True)
class TileResult:
    """Top-k (class name, probability) for one file, or the reason it could not be classified; ``warning``
    says when its scale or radiometry is far from the training data's."""

    path: str
    top: list[tuple[str, float]] | None
    error: str | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "top": [[name, prob] for name, prob in self.top] if self.top else None,
                "error": self.error, "warning": self.warning}


def find_image_files(paths: Iterable) -> list[Path]:
    """Files as given, folders expanded recursively to their image files (sorted), duplicates dropped."""
    from sembridge_engine.data.readers import is_image_file

    found: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        candidates = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)) if path.is_dir() else [path]
        for candidate in candidates:
            if candidate not in seen:
                seen.add(candidate)
                found.append(candidate)
    return found


def read_for_bundle(bundle, path, max_side: int | None = None) -> np.ndarray:
    """Native-dtype (C, H, W) pixels of one file as the bundle's model expects them: NaN, infinite and nodata
    pixels filled with their band's median (as training fills its tiles), read reduced beyond ``max_side``."""
    from sembridge_engine.data.problems import ImageReadError
    from sembridge_engine.data.readers import MAX_IMAGE_SIDE, read_tile

    array, _ = read_tile(path, as_rgb=bundle.in_channels == 3, max_side=max_side or MAX_IMAGE_SIDE)
    if array.shape[0] != bundle.in_channels:
        raise ImageReadError(path, f"has {array.shape[0]} bands; the model expects {bundle.in_channels} ({', '.join(bundle.band_names)})")
    return array


def preprocess_for_bundle(bundle, arrays: np.ndarray | list[np.ndarray]):
    """The training preprocessing with the bundle's tile size and normalisation."""
    from sembridge_engine.data.transforms import preprocess_arrays

    return preprocess_arrays(arrays, bundle.tile_size, bundle.channel_stats)


def tile_windows(bundle, path, radiometry: str = "auto") -> tuple[list[np.ndarray], str | None]:
    """The model inputs of one file (several footprint windows for a georeferenced tile) and any warning."""
    from sembridge_engine.data.problems import ImageReadError
    from sembridge_engine.data.readers import MAX_IMAGE_SIDE, read_header

    from .radiometry import plan_radiometry, valid_samples
    from .scale import choose_window
    from .windows import scene_layout, windows_from_chunk

    path = Path(path)
    header = read_header(path)
    huge = max(header.width, header.height) > MAX_IMAGE_SIDE
    choice = None
    if header.gsd and bundle.footprint_m:
        choice = choose_window(path.name, bundle.tile_size, bundle.footprint_m, bundle.training_gsd, header.gsd,
                               header.width, header.height, force=True)
    # One footprint window covering the whole tile (a training-sized image, perhaps a few pixels short
    # of square): the whole image resized, exactly as training resized its images.
    whole = choice is None or choice.warning is not None or choice.window >= max(header.width, header.height)
    array = read_for_bundle(bundle, path, max_side=bundle.tile_size if whole and huge else MAX_IMAGE_SIDE)
    mapping = plan_radiometry(radiometry, bundle.radiometry, array.dtype,
                              valid_samples(array, np.ones(array.shape[1:], dtype=bool)), single_image=whole)
    # Never silent: a tile whose values were mapped says how (the answer depends on it).
    notes = [choice.warning if choice is not None else None, mapping.describe() if mapping.applied != "none" else None]
    warning = "; ".join(note for note in notes if note) or None
    if whole:
        return [mapping.apply(array)], warning
    window = max(1, round(choice.window * array.shape[2] / header.width))  # the read may be reduced
    layout = scene_layout(array.shape[2], array.shape[1], window, window)
    if layout.windows > MAX_TILE_WINDOWS:
        raise ImageReadError(path, f"covers {layout.windows} footprints of the model ({bundle.footprint_m:.4g} m each at "
                             f"{header.gsd:.3g} m per pixel): it is a scene; label it with 'sembridge label'")
    valid = np.ones(array.shape[1:], dtype=bool)
    windows = [windows_from_chunk(array[:, top:top + layout.window_height], valid[top:top + layout.window_height],
                                  layout.xs, layout) for top in layout.ys.tolist()]
    return list(mapping.apply(np.concatenate(windows))), warning


def classify_files(bundle, paths: Sequence, top_k: int = 3, batch_size: int = 32, device: str = "auto",
                   callback: EventCallback = ignore_event, cancel: CancelToken | None = None,
                   radiometry: str = "auto") -> list[TileResult]:
    """Top-k classes for every image in ``paths`` (folders recursive), in order; unreadable files get an error."""
    from .predictor import check_probabilities, make_predictor

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictor = make_predictor(bundle, device)
    files = find_image_files(paths)
    k = min(top_k, bundle.num_classes)
    results: list[TileResult] = []
    for start in range(0, len(files), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch_files = files[start:start + batch_size]
        inputs: list[np.ndarray] = []
        owners: list[int] = []
        errors: dict[Path, str] = {}
        warnings: dict[Path, str | None] = {}
        for position, path in enumerate(batch_files):
            try:
                windows, warnings[path] = tile_windows(bundle, path, radiometry)
            except (ValueError, OSError) as error:  # ImageReadError is a ValueError and names the file
                errors[path] = getattr(error, "message", str(error))
                continue
            inputs += windows
            owners += [position] * len(windows)
        top_by_path: dict[Path, list[tuple[str, float]]] = {}
        if inputs:
            window_probabilities = check_probabilities(predictor.predict(inputs), str(bundle.path))
            owner = np.asarray(owners)
            for position in sorted(set(owners)):
                row = window_probabilities[owner == position].mean(axis=0)
                ranked = np.argsort(-row, kind="stable")[:k]
                top_by_path[batch_files[position]] = [(bundle.class_names[index], float(row[index])) for index in ranked]
        results.extend(TileResult(str(path), top_by_path.get(path), errors.get(path), warnings.get(path)) for path in batch_files)
        callback(BatchProgress(STAGE, 0, min(start + batch_size, len(files)), len(files)))
    return results
