"""Decode every tile once, in parallel, into one preallocated in-memory tensor.

Epochs then index a tensor instead of re-reading files. Decoding runs in a thread pool:
rasterio/GDAL, Pillow and torch's resize release the GIL, so threads scale without the start-up
and pickling cost of processes.
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..events import CancelToken
from .discovery import ImageryIndex, TileRecord
from .problems import ImageReadError, Problem
from .readers import default_workers, read_header, read_tile, tile_reading_env
from .transforms import scale_and_resize

CHUNK_SIZE = 8
HEADER_PROBES = 32
_PROGRESS_STEPS = 200


@dataclass
class TileTensor:
    """Tiles scaled by dtype and resized (not normalised), their labels, paths and the skipped files."""

    tiles: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return self.tiles.shape[0]

    @property
    def nbytes(self) -> int:
        return self.tiles.element_size() * self.tiles.nelement() + self.labels.element_size() * self.labels.nelement()


def estimate_memory_bytes(n_tiles: int, channels: int, tile_size: int) -> int:
    """Bytes the float32 tile tensor will take (shown before loading so users can pick a tile size)."""
    return int(n_tiles) * int(channels) * int(tile_size) ** 2 * 4


def _label_rows(records: Sequence[TileRecord], class_to_index: Mapping[str, int], multi_label: bool):
    """Kept record positions and their label rows; records of unselected classes are left out silently
    (the caller chose the classes: not a problem of the file)."""
    kept: list[int] = []
    rows: list[list[int]] = []
    problems: list[tuple[int, Problem]] = []
    for position, record in enumerate(records):
        indices = [class_to_index[label] for label in record.labels if label in class_to_index]
        if not indices:
            continue
        if not multi_label and len(indices) > 1:
            problems.append((position, Problem(str(record.path), f"skipped: several labels {list(record.labels)} in a single-label load")))
            continue
        kept.append(position)
        rows.append(indices)
    return kept, rows, problems


def probe_headers(records: Sequence[TileRecord]) -> list:
    """Headers of a spread-out sample of the files (cheap: no pixels read); unreadable files are left out."""
    step = max(1, len(records) // HEADER_PROBES)
    headers = []
    for record in records[::step][:HEADER_PROBES]:
        try:
            headers.append(read_header(record.path))
        except ImageReadError:
            continue
    return headers


def _majority_band_count(records: Sequence[TileRecord]) -> int | None:
    """Band count of most files, from the headers of a spread-out sample."""
    if not records:
        return None
    counts = Counter(header.band_count for header in probe_headers(records))
    if not counts:
        for record in records:
            try:
                return read_header(record.path).band_count
            except ImageReadError:
                continue
        return None
    return counts.most_common(1)[0][0]


class TensorSink:
    """Decoded tiles scaled by dtype and resized into rows of one preallocated float32 tensor."""

    def __init__(self, count: int, channels: int, tile_size: int) -> None:
        self.tiles = torch.empty((count, channels, tile_size, tile_size), dtype=torch.float32)
        self.channels, self.tile_size = channels, tile_size

    def write(self, rows: list[int], arrays: list[np.ndarray]) -> None:
        self.tiles.index_copy_(0, torch.tensor(rows), scale_and_resize(arrays, self.tile_size))


class _Decoder:
    """Decodes chunks of records and hands the good ones to the sink (an in-memory tensor or a tile store)."""

    def __init__(self, records, sink, bands, as_rgb: bool, cancel: CancelToken | None):
        self.records, self.sink, self.bands, self.as_rgb, self.cancel = records, sink, bands, as_rgb, cancel

    def __call__(self, positions: range) -> list[tuple[int, ImageReadError | None, int, str]]:
        """(position, error or None, band count, note on repaired pixels or "") per record of the chunk."""
        with tile_reading_env():
            return self._decode(positions)

    def _decode(self, positions: range) -> list[tuple[int, ImageReadError | None, int, str]]:
        channels = self.sink.channels
        arrays, rows, outcome = [], [], []
        for position in positions:
            if self.cancel is not None and self.cancel.cancelled:
                return outcome
            path = self.records[position].path
            try:
                array, filled = read_tile(path, self.bands, as_rgb=self.as_rgb)
            except ImageReadError as error:
                outcome.append((position, error, 0, ""))
                continue
            except Exception as error:  # a decoder bug on one odd file must not end the whole load
                outcome.append((position, ImageReadError(path, f"cannot decode: {type(error).__name__}: {error}"), 0, ""))
                continue
            if array.shape[0] != channels:
                message = f"has {array.shape[0]} bands but most files here have {channels}; skipped"
                outcome.append((position, ImageReadError(path, message), array.shape[0], ""))
                continue
            arrays.append(array)
            rows.append(position)
            note = (f"{filled} of {array.shape[1] * array.shape[2]} pixels are NaN, infinite or nodata; "
                    "filled with their band's median (the tile is kept)") if filled else ""
            outcome.append((position, None, channels, note))
        if arrays:
            self.sink.write(rows, arrays)
        return outcome


def _single_threaded_torch() -> None:
    """Pool initializer: one core per decoder thread. torch's intra-op threads inside N decoder
    threads oversubscribe the cores; on a busy 2-core machine that made resizing 3-5x slower."""
    torch.set_num_threads(1)


def _decode_all(decoder: _Decoder, total: int, workers: int, progress, cancel) -> list:
    chunks = [range(start, min(start + CHUNK_SIZE, total)) for start in range(0, total, CHUNK_SIZE)]
    outcomes: list = []
    done = 0
    report_every = max(1, total // _PROGRESS_STEPS)
    last_reported = 0
    # torch.set_num_threads in a worker also changes the default new threads start with: restore it.
    caller_threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-decode",
                                initializer=_single_threaded_torch) as pool:
            pending = {pool.submit(decoder, chunk) for chunk in chunks}
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in finished:
                        chunk_outcome = future.result()
                        outcomes.extend(chunk_outcome)
                        done += len(chunk_outcome)
                        if progress is not None and (done - last_reported >= report_every or done == total):
                            last_reported = done
                            progress(done, total)
                    if cancel is not None:
                        cancel.raise_if_cancelled()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        torch.set_num_threads(caller_threads)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return outcomes


def _compact(tiles: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """Move the good rows to the front in place (chunked, so no second full-size tensor)."""
    if len(keep) == tiles.shape[0]:
        return tiles
    for start in range(0, len(keep), 1024):
        source = torch.from_numpy(keep[start:start + 1024])
        tiles[start:start + len(source)] = tiles[source]
    return tiles[: len(keep)]


@dataclass
class Decoded:
    """What one decode pass produced besides the pixels: the kept positions (rows of the sink), their
    labels and paths, and every skipped or repaired file."""

    sink: object
    good: np.ndarray
    labels: torch.Tensor
    paths: list[str]
    problems: list[Problem]


def decode_records(records: Sequence[TileRecord], class_to_index: Mapping[str, int], make_sink, *,
                   bands: Sequence[int] | None = None, multi_label: bool = False, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None, cancel: CancelToken | None = None,
                   modality: str = "ms") -> Decoded:
    """Decode ``records`` in a thread pool into ``make_sink(count, channels)`` (anything with ``channels`` and
    ``write(rows, arrays)``); rows of skipped files are left unwritten and missing from ``good``.

    Bad files (zero-byte, corrupt/truncated, band count differing from the majority, every pixel
    nodata) are skipped and listed in ``problems``. Records none of whose labels is in
    ``class_to_index`` are left out (multi-label: labels outside it are dropped).
    ``modality="rgb"`` converts every image to 3 channels (grey replicated, alpha dropped,
    palette expanded). ``progress(done, total)`` is called from the calling thread; ``cancel`` raises Cancelled.
    """
    if modality not in ("ms", "rgb"):
        raise ValueError(f"modality must be 'ms' or 'rgb', got {modality!r}")
    kept, label_rows, label_problems = _label_rows(records, class_to_index, multi_label)
    kept_records = [records[position] for position in kept]
    channels = _channel_count(kept_records, bands, modality)
    return _decode_kept(kept_records, label_rows, label_problems, kept, class_to_index, channels, make_sink,
                        bands=bands, multi_label=multi_label, workers=workers, progress=progress, cancel=cancel,
                        as_rgb=modality == "rgb", retry=bands is None and modality == "ms")


def load_tiles(records: Sequence[TileRecord], class_to_index: Mapping[str, int], tile_size: int, *,
               bands: Sequence[int] | None = None, multi_label: bool = False, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None, cancel: CancelToken | None = None,
               modality: str = "ms") -> TileTensor:
    """Decode, scale and resize ``records`` into one (N,C,S,S) float32 tensor (see ``decode_records``)."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    decoded = decode_records(records, class_to_index, lambda count, channels: TensorSink(count, channels, tile_size),
                             bands=bands, multi_label=multi_label, workers=workers, progress=progress, cancel=cancel,
                             modality=modality)
    return TileTensor(_compact(decoded.sink.tiles, decoded.good), decoded.labels, decoded.paths, decoded.problems)


def _channel_count(records: Sequence[TileRecord], bands, modality: str) -> int:
    if bands is not None:
        return len(bands)
    if modality == "rgb":
        return 3
    return _majority_band_count(records) or 1


def _decode_kept(records, label_rows, label_problems, kept, class_to_index, channels, make_sink, *, bands,
                 multi_label, workers, progress, cancel, as_rgb, retry) -> Decoded:
    workers = default_workers() if workers is None else max(1, int(workers))
    sink = make_sink(len(records), channels)
    outcomes = _decode_all(_Decoder(records, sink, bands, as_rgb, cancel), len(records), workers, progress, cancel)
    outcomes.sort(key=lambda outcome: outcome[0])
    good = [position for position, error, _, _ in outcomes if error is None]
    mismatched = Counter(count for _, error, count, _ in outcomes if error is not None and count)
    if retry and mismatched and mismatched.most_common(1)[0][1] > len(good):
        # The header sample misjudged the majority band count: decode again with the real one.
        return _decode_kept(records, label_rows, label_problems, kept, class_to_index, mismatched.most_common(1)[0][0],
                            make_sink, bands=bands, multi_label=multi_label, workers=workers, progress=progress,
                            cancel=cancel, as_rgb=as_rgb, retry=False)
    labels = _label_tensor([label_rows[position] for position in good], class_to_index, multi_label)
    problems = [(kept[position], error.to_problem()) for position, error, _, _ in outcomes if error is not None]
    problems += [(kept[position], Problem(str(records[position].path), note)) for position, _, _, note in outcomes if note]
    ordered = sorted(label_problems + problems, key=lambda item: item[0])
    return Decoded(sink, np.asarray(good, dtype=np.int64), labels, [str(records[position].path) for position in good],
                   [problem for _, problem in ordered])


def _label_tensor(rows: list[list[int]], class_to_index: Mapping[str, int], multi_label: bool) -> torch.Tensor:
    if not multi_label:
        return torch.tensor([row[0] for row in rows], dtype=torch.int64)
    n_classes = max(class_to_index.values(), default=-1) + 1
    multi_hot = torch.zeros((len(rows), n_classes), dtype=torch.float32)
    if rows:
        tile_index = torch.tensor([position for position, row in enumerate(rows) for _ in row])
        class_index = torch.tensor([index for row in rows for index in row])
        multi_hot[tile_index, class_index] = 1.0
    return multi_hot


def load_index(index: ImageryIndex, class_to_index: Mapping[str, int], tile_size: int, **options) -> TileTensor:
    """``load_tiles`` for a discovered archive/folder: modality and multi-label taken from the index."""
    return load_tiles(index.records, class_to_index, tile_size, multi_label=index.multi_label,
                      modality=index.modality, **options)
