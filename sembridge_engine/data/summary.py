"""What ``sembridge inspect`` reports about an archive: classes, band layout, dtypes, sizes, CRS,
nodata, per-band statistics of a spread sample of files and every problem found, as one dict.

Headers are read for every file; pixels only for the sample (reduced reads: statistics need no
full resolution), on a thread pool with one GDAL environment per chunk of files.
"""
from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .bands import guess_preset, positional_band_names
from .discovery import require_root, detect_modality, discover_ms_archive, discover_rgb_folder
from .problems import ImageReadError, Problem
from .readers import ImageHeader, default_workers, read_header, read_image, tile_reading_env

STATS_SIDE = 1024  # longest side at which inspect reads a sampled file for its statistics


def _spread_sample(items: list, size: int) -> list:
    if len(items) <= size:
        return items
    positions = np.linspace(0, len(items) - 1, size).round().astype(int)
    return [items[position] for position in positions]


def _pixel_sums(array: np.ndarray, nodata: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-band sum, sum of squares and count of valid pixels (nodata, NaN and infinities excluded)."""
    values = array.reshape(array.shape[0], -1).astype(np.float64)
    valid = np.isfinite(values)
    if len(nodata) == values.shape[0] and all(value is not None for value in nodata):
        valid &= values != np.asarray(nodata, dtype=np.float64)[:, None]
    values = np.where(valid, values, 0.0)
    return values.sum(axis=1), np.square(values).sum(axis=1), valid.sum(axis=1)


def summarise_imagery(path, modality: str = "auto", *, sample: int = 500, workers: int | None = None) -> dict:
    """What ``sembridge inspect`` reports, as one JSON-ready dict.

    Every file's header is read; pixels (per-band mean/std in file units, corrupt/truncated and
    all-nodata checks) of up to ``sample`` files spread over the archive.
    """
    root = require_root(path)
    if modality == "auto":
        modality = detect_modality(root)
    if modality not in ("ms", "rgb"):
        raise ValueError(f"modality must be 'auto', 'ms' or 'rgb', got {modality!r}")
    index = discover_ms_archive(root) if modality == "ms" else discover_rgb_folder(root)
    problems = list(index.problems)
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        headers = _map_in_chunks(pool, _header_or_error, [record.path for record in index.records])
    good = [(record, header) for record, header in zip(index.records, headers) if isinstance(header, ImageHeader)]
    problems += [header.to_problem() for header in headers if isinstance(header, ImageReadError)]
    if modality == "rgb":
        usable = [(record, header) for record, header in good if header.band_count <= 4]
        problems += [Problem(header.path, f"has {header.band_count} bands; RGB imagery must have 1 (grey), 3 (RGB) or 4 (RGBA) bands")
                     for _, header in good if header.band_count > 4]
        band_count = 3 if usable else 0
    else:
        band_counts = Counter(header.band_count for _, header in good)
        band_count = band_counts.most_common(1)[0][0] if band_counts else 0
        usable = [(record, header) for record, header in good if header.band_count == band_count]
        problems += [Problem(header.path, f"has {header.band_count} bands but most files here have {band_count}; it will be skipped")
                     for _, header in good if header.band_count != band_count]

    sampled = _spread_sample(usable, max(0, sample))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        sums = _map_in_chunks(pool, partial(_sample_sums, as_rgb=modality == "rgb"), [header for _, header in sampled])
    problems += [result.to_problem() for result in sums if isinstance(result, ImageReadError)]
    sums = [result for result in sums if not isinstance(result, ImageReadError)]
    problems += [Problem(header.path, f"{result[3]} pixel value(s) are NaN or infinite; they are treated as nodata "
                                      "(filled when training)")
                 for (_, header), result in zip(sampled, sums) if result[3]]
    band_stats = None
    if sums:
        total = np.sum([result[0] for result in sums], axis=0)
        total_squares = np.sum([result[1] for result in sums], axis=0)
        count = np.maximum(np.sum([result[2] for result in sums], axis=0), 1)
        mean = total / count
        std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0.0))
        band_stats = {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std],
                      "files": len(sums), "sampled": len(sampled) < len(usable)}

    if modality == "rgb":
        preset_name, band_names = "rgb", ["R", "G", "B"] if band_count else []
    else:
        preset = guess_preset(band_count)
        preset_name = preset.name if preset else None
        band_names = list(positional_band_names(band_count)) if band_count else []
    all_headers = [header for _, header in good]
    sizes = Counter(f"{header.width}x{header.height}" for header in all_headers)
    declared = {value for header in all_headers for value in header.nodata if value is not None}
    nodata_values: list[Any] = sorted(value for value in declared if not math.isnan(value))
    if any(math.isnan(value) for value in declared):
        nodata_values.append("nan")  # NaN once (NaN != NaN, so a set keeps one per file), and valid JSON
    return {
        "modality": modality,
        "root": str(root),
        "multi_label": index.multi_label,
        "classes": index.counts(),
        "n_files": len(index.records),
        "band_count": band_count,
        "band_names": band_names,
        "preset": preset_name,
        "dtypes": sorted({header.dtype for header in all_headers}),
        "sizes": [size for size, _ in sizes.most_common()],
        "size_counts": dict(sizes.most_common()),
        "crs": sorted({header.crs for header in all_headers if header.crs}),
        "ungeoreferenced_files": sum(1 for header in all_headers if not header.crs),
        "nodata": [value if isinstance(value, str) or not float(value).is_integer() else int(value)
                   for value in nodata_values],
        "band_stats": band_stats,
        "problems": [problem.to_dict() for problem in problems],
    }


def _map_in_chunks(pool: ThreadPoolExecutor, function, items: list, chunk_size: int = 16) -> list:
    """``[function(item) for item in items]`` on the pool, one GDAL environment per chunk."""
    def run_chunk(chunk: list) -> list:
        with tile_reading_env():
            return [function(item) for item in chunk]

    chunks = [items[start:start + chunk_size] for start in range(0, len(items), chunk_size)]
    return [result for chunk_results in pool.map(run_chunk, chunks) for result in chunk_results]


def _header_or_error(path: Path) -> ImageHeader | ImageReadError:
    try:
        return read_header(path)
    except ImageReadError as error:
        return error


def _sample_sums(header: ImageHeader, as_rgb: bool):
    """Band sums of one sampled file (read reduced to STATS_SIDE px: statistics need no more) and its
    count of non-finite values; or the file's error."""
    try:
        array = read_image(header.path, as_rgb=as_rgb, max_side=STATS_SIDE)
    except ImageReadError as error:
        return error
    nonfinite = int((~np.isfinite(array)).sum()) if array.dtype.kind == "f" else 0
    return (*_pixel_sums(array, header.nodata), nonfinite)
