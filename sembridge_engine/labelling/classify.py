"""Classify image tiles (PNG/JPEG/TIFF/GeoTIFF, files or folders) with a model bundle.

Preprocessing is the training pipeline's own (``read_image`` + ``preprocess_arrays`` with the
bundle's tile size and channel stats), so a tile gets the logits it would get during validation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sembridge_engine.events import BatchProgress, CancelToken, EventCallback, ignore_event

STAGE = "classify"


@dataclass(frozen=True)
class TileResult:
    """Top-k (class name, probability) for one file, or the reason it could not be classified."""

    path: str
    top: list[tuple[str, float]] | None
    error: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "top": [[name, prob] for name, prob in self.top] if self.top else None, "error": self.error}


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


def read_for_bundle(bundle, path) -> np.ndarray:
    """Native-dtype (C, H, W) pixels of one file as the bundle's model expects them."""
    from sembridge_engine.data.problems import ImageReadError
    from sembridge_engine.data.readers import read_image

    array = read_image(path, as_rgb=bundle.in_channels == 3)
    if array.shape[0] != bundle.in_channels:
        raise ImageReadError(path, f"has {array.shape[0]} bands; the model expects {bundle.in_channels} ({', '.join(bundle.band_names)})")
    return array


def preprocess_for_bundle(bundle, arrays: np.ndarray | list[np.ndarray]):
    """The training preprocessing with the bundle's tile size and normalisation."""
    from sembridge_engine.data.transforms import preprocess_arrays

    return preprocess_arrays(arrays, bundle.tile_size, bundle.channel_stats)


def classify_files(bundle, paths: Sequence, top_k: int = 3, batch_size: int = 32, device: str = "auto",
                   callback: EventCallback = ignore_event, cancel: CancelToken | None = None) -> list[TileResult]:
    """Top-k classes for every image in ``paths`` (folders recursive), in order; unreadable files get an error."""
    from .predictor import make_predictor

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
        arrays: list[np.ndarray] = []
        readable: list[Path] = []
        errors: dict[Path, str] = {}
        for path in batch_files:
            try:
                arrays.append(read_for_bundle(bundle, path))
                readable.append(path)
            except (ValueError, OSError) as error:  # ImageReadError is a ValueError and names the file
                errors[path] = getattr(error, "message", str(error))
        top_by_path: dict[Path, list[tuple[str, float]]] = {}
        if arrays:
            probabilities = predictor.predict(arrays)
            ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
            for path, row, indices in zip(readable, probabilities, ranked):
                top_by_path[path] = [(bundle.class_names[index], float(row[index])) for index in indices]
        results.extend(TileResult(str(path), top_by_path.get(path), errors.get(path)) for path in batch_files)
        callback(BatchProgress(STAGE, 0, min(start + batch_size, len(files)), len(files)))
    return results
