"""The on-disk tile store: an archive decoded once into a compact file of fixed-size rows, then reused.

For archives larger than the memory budget (a national Sentinel-2 archive, BigEarthNet), tiles
are decoded once per (data, preprocessing) key into ``<cache>/<modality>-<key>/``:

- ``tiles.npy``: (N, C, S, S) in the source's integer dtype when no resize was needed (uint8,
  uint16, int16: exact, and the smallest), else float16 of the dtype-scaled, resized tile;
- ``labels.npy`` and ``index.json`` (dtype, shape, kept rows, paths, problems).

The key covers every file (path, labels, size, modification time) and the preprocessing (tile
size, bands, modality, classes), so a changed archive gets a new store and an unchanged one is
reused by every later run, as the teacher cache is. A store is built in a hidden temporary folder
and renamed into place when complete, under a lock so two processes never build the same store.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..atomic import remove_quietly, remove_stale_temporaries, temporary_path, try_lock, write_json_atomic
from ..events import CancelToken
from .cache import decode_records, load_tiles, probe_headers
from .discovery import TileRecord
from .problems import Problem
from .readers import dtype_divisor
from .tiles import MemoryTiles, RowFile, StoredTiles, Tiles
from .transforms import scale_and_resize

STORE_FORMAT = 1
NATIVE_DTYPES = frozenset({"uint8", "uint16", "int16"})
LOCK_POLL_SECONDS = 0.5


@dataclass
class TileSet:
    """Loaded tiles (not normalised yet), their labels and paths, and the files skipped when decoding;
    ``folder`` is the tile store they are read from (None: in memory)."""

    tiles: Tiles
    labels: torch.Tensor
    paths: list[str]
    problems: list[Problem]
    folder: Path | None = None
    reused: bool = False


def store_key(records: Sequence[TileRecord], class_to_index: Mapping[str, int], tile_size: int,
              bands: Sequence[int] | None, multi_label: bool, modality: str) -> str:
    """sha256 of everything the stored pixels and labels depend on (no pixels read: stat only)."""
    digest = hashlib.sha256(json.dumps({
        "format": STORE_FORMAT, "tile_size": tile_size, "bands": list(bands) if bands is not None else None,
        "multi_label": multi_label, "modality": modality, "classes": sorted(class_to_index.items()),
    }, sort_keys=True).encode())
    for record in records:
        stat = record.path.stat()
        digest.update(f"{record.path}|{'/'.join(record.labels)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def store_dtype(records: Sequence[TileRecord], tile_size: int) -> np.dtype:
    """The source's integer dtype when most files have it and already are ``tile_size`` square, else float16."""
    shapes = Counter((header.dtype, header.width, header.height) for header in probe_headers(records))
    if shapes:
        (dtype, width, height), _ = shapes.most_common(1)[0]
        if dtype in NATIVE_DTYPES and width == height == tile_size:
            return np.dtype(dtype)
    return np.dtype(np.float16)


class StoreSink:
    """Writes decoded tiles as rows of the store: native arrays as they are, others scaled, resized and encoded."""

    def __init__(self, rows: RowFile) -> None:
        self.rows = rows
        self.channels, self.tile_size = rows.shape[1], rows.shape[-1]

    def write(self, rows: list[int], arrays: list[np.ndarray]) -> None:
        dtype, size = self.rows.dtype, self.tile_size
        out = np.empty((len(arrays), self.channels, size, size), dtype=dtype)
        converted = [position for position, array in enumerate(arrays) if array.dtype != dtype or array.shape[1:] != (size, size)]
        for position, array in enumerate(arrays):
            if position not in converted:
                out[position] = array
        if converted:
            tiles = scale_and_resize([arrays[position] for position in converted], size).numpy()
            if dtype.kind in "ui":  # an odd file in an integer store: quantised to the store's own grid
                limits = np.iinfo(dtype)
                tiles = np.clip(np.rint(tiles * dtype_divisor(dtype)), limits.min, limits.max)
            out[converted] = tiles.astype(dtype)
        self.rows.write_rows(np.asarray(rows, dtype=np.int64), out)


def _create_rows(path: Path, count: int, channels: int, tile_size: int, dtype: np.dtype) -> RowFile:
    """An empty .npy file of the full size (sparse until written); readable by ``np.load(mmap_mode='r')``."""
    shape = (count, channels, tile_size, tile_size)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                       "fortran_order": False, "shape": shape})
        offset = handle.tell()
        handle.truncate(offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    return RowFile(path, shape, dtype, offset, writable=True)


def _open_rows(path: Path) -> RowFile:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(handle))
        offset = handle.tell()
    return RowFile(path, shape, dtype, offset)


def _open(folder: Path, reused: bool) -> TileSet:
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    rows = _open_rows(folder / "tiles.npy")
    labels = torch.from_numpy(np.load(folder / "labels.npy", allow_pickle=False))
    kept = np.asarray(index["kept"], dtype=np.int64)
    problems = [Problem(item["path"], item["message"]) for item in index["problems"]]
    return TileSet(StoredTiles(rows, kept), labels, list(index["paths"]), problems, folder, reused)


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise OSError(f"{folder}: the tile store needs {needed / 2**30:.1f} GB but only {free / 2**30:.1f} GB are free; "
                      "free space there, set SEMBRIDGE_CACHE_DIR to a larger disk, or raise data.memory_budget_gb")


def _build(target: Path, records, class_to_index, tile_size, *, bands, multi_label, workers, progress, cancel,
           modality) -> None:
    """Decode into a hidden temporary folder and rename it to ``target`` once every file is written."""
    building = temporary_path(target)
    building.mkdir(parents=True)
    try:
        dtype = store_dtype(records, tile_size)

        def make_sink(count: int, channels: int) -> StoreSink:
            _check_free_space(building, count * channels * tile_size ** 2 * dtype.itemsize)
            return StoreSink(_create_rows(building / "tiles.npy", count, channels, tile_size, dtype))

        decoded = decode_records(records, class_to_index, make_sink, bands=bands, multi_label=multi_label,
                                 workers=workers, progress=progress, cancel=cancel, modality=modality)
        rows: RowFile = decoded.sink.rows
        os.fsync(rows.handle.fileno())
        rows.close()
        np.save(building / "labels.npy", decoded.labels.numpy(), allow_pickle=False)
        write_json_atomic(building / "index.json", {
            "format": STORE_FORMAT, "dtype": rows.dtype.str, "shape": list(rows.shape), "kept": decoded.good.tolist(),
            "paths": decoded.paths, "problems": [problem.to_dict() for problem in decoded.problems],
        })
        os.replace(building, target)
    finally:
        remove_quietly([building])


def open_tile_store(records: Sequence[TileRecord], class_to_index: Mapping[str, int], tile_size: int, cache_dir: Path, *,
                    bands: Sequence[int] | None = None, multi_label: bool = False, workers: int | None = None,
                    progress: Callable[[int, int], None] | None = None, cancel: CancelToken | None = None,
                    modality: str = "ms", log: Callable[[str], None] = lambda message: None) -> TileSet:
    """The store of these records and preprocessing: reused when it exists, else built (progress, cancel)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{modality}-{store_key(records, class_to_index, tile_size, bands, multi_label, modality)}"
    if (target / "index.json").is_file():
        return _open(target, reused=True)
    with open(cache_dir / f"{target.name}.lock", "a+b") as lock:
        waited = False
        while not try_lock(lock):
            if not waited:
                log(f"another process is building the tile store {target}; waiting for it")
                waited = True
            if cancel is not None:
                cancel.raise_if_cancelled()
            time.sleep(LOCK_POLL_SECONDS)
        if (target / "index.json").is_file():
            return _open(target, reused=True)
        remove_stale_temporaries(cache_dir)
        log(f"building the tile store {target} (once for this data and tile size)")
        _build(target, records, class_to_index, tile_size, bands=bands, multi_label=multi_label, workers=workers,
               progress=progress, cancel=cancel, modality=modality)
    return _open(target, reused=False)


def load_tile_set(records: Sequence[TileRecord], class_to_index: Mapping[str, int], tile_size: int, *,
                  store_dir: Path | None, log: Callable[[str], None] = lambda message: None, **options) -> TileSet:
    """The tiles of ``records`` in memory (``store_dir`` None) or from the on-disk tile store in ``store_dir``;
    ``options`` are those of ``load_tiles``."""
    if store_dir is None:
        loaded = load_tiles(records, class_to_index, tile_size, **options)
        return TileSet(MemoryTiles(loaded.tiles), loaded.labels, loaded.paths, loaded.problems)
    return open_tile_store(records, class_to_index, tile_size, store_dir, log=log, **options)
