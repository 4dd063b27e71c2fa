"""Tile access as the stages see it: normalised float32 batches by index, wherever the pixels live.

A stage asks ``tiles[index]`` for a batch and ``tiles.subset(index)`` for a split it walks in
batches (evaluation, galleries); it never learns whether the tiles are one in-memory tensor
(:class:`MemoryTiles`, the fast path) or rows of an on-disk tile store read on demand
(:class:`StoredTiles`, for archives larger than the memory budget; see ``data/store.py``).
Both give bit-identical tensors for the same pixels, so a run gives the same metrics either way.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from .readers import scale_by_dtype
from .transforms import ChannelStats


def _as_numpy_index(index, length: int) -> np.ndarray:
    """Positions 0..length-1 selected by a slice, an int64 tensor or array (negative positions refused)."""
    if isinstance(index, slice):
        return np.arange(length, dtype=np.int64)[index]
    positions = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    positions = positions.astype(np.int64, copy=False).reshape(-1)
    if positions.size and (positions.min() < 0 or positions.max() >= length):
        raise IndexError(f"tile positions must lie in 0..{length - 1}")
    return positions


class Tiles:
    """Normalised (n, C, S, S) float32 tiles by position; ``subset`` views a split without copying pixels."""

    channels: int
    size: int

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        raise NotImplementedError

    def subset(self, index: torch.Tensor) -> "Tiles":
        return TileSubset(self, _as_numpy_index(index, len(self)))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self), self.channels, self.size, self.size

    def use_stats(self, stats: ChannelStats | None) -> None:
        """Normalise with ``stats`` from now on (None: the tiles as scaled by dtype, not normalised)."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes these tiles take in this process's memory."""
        return 0


class TileSubset(Tiles):
    """Positions of another Tiles; reads go straight through to it."""

    def __init__(self, parent: Tiles, positions: np.ndarray) -> None:
        self.parent, self.positions = parent, positions
        self.channels, self.size = parent.channels, parent.size

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index) -> torch.Tensor:
        return self.parent[torch.from_numpy(self.positions[_as_numpy_index(index, len(self))])]

    def subset(self, index) -> Tiles:
        return TileSubset(self.parent, self.positions[_as_numpy_index(index, len(self))])


class MemoryTiles(Tiles):
    """One in-memory float32 tensor, normalised once in place (no second full-size copy)."""

    def __init__(self, tiles: torch.Tensor, stats: ChannelStats | None = None) -> None:
        self.tensor, self.stats = tiles, None
        self.channels, self.size = tiles.shape[1], tiles.shape[-1]
        self.use_stats(stats)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        return self.tensor[index]

    def use_stats(self, stats: ChannelStats | None) -> None:
        if self.stats is not None:
            self.tensor.mul_(_column(self.stats.std)).add_(_column(self.stats.mean))
        if stats is not None:
            self.tensor.sub_(_column(stats.mean)).div_(_column(stats.std))
        self.stats = stats

    @property
    def nbytes(self) -> int:
        return self.tensor.element_size() * self.tensor.nelement()


def _column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


class RowFile:
    """Fixed-size rows of a .npy file read and written with positional I/O (thread-safe).

    ``os.pread`` instead of a memory map: pages of a mapped file count towards the process's
    resident memory once touched, so an epoch over a mapped archive would grow RSS to the
    archive's size; positional reads go through the OS page cache, which is shared and reclaimable.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int, writable: bool = False) -> None:
        self.path, self.shape, self.dtype, self.offset = Path(path), tuple(shape), np.dtype(dtype), int(offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.handle = open(self.path, "r+b" if writable else "rb")
        self.lock = threading.Lock()  # only for platforms without os.pread/os.pwrite

    def close(self) -> None:
        self.handle.close()

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the order asked; runs of consecutive rows are read with one call."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        buffer = out if np.array_equal(order, np.arange(len(rows))) else np.empty_like(out)
        starts = np.flatnonzero(np.diff(ordered, prepend=ordered[0] - 2) != 1)
        for begin, end in zip(starts, [*starts[1:], len(rows)]):
            self._read_into(buffer[begin:end], int(ordered[begin]))
        if buffer is not out:
            out[order] = buffer
        return out

    def _read_into(self, target: np.ndarray, row: int) -> None:
        view, position, done = memoryview(target).cast("B"), self.offset + row * self.row_bytes, 0
        while done < len(view):
            if hasattr(os, "preadv"):
                count = os.preadv(self.handle.fileno(), [view[done:]], position + done)
            else:
                with self.lock:
                    self.handle.seek(position + done)
                    count = self.handle.readinto(view[done:])
            if not count:
                raise OSError(f"{self.path}: ends before row {row} (the tile store is truncated; delete it to rebuild)")
            done += count

    def write_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        for row, value in zip(rows.tolist(), values):
            data, position = memoryview(value).cast("B"), self.offset + row * self.row_bytes
            if hasattr(os, "pwrite"):
                while data:
                    written = os.pwrite(self.handle.fileno(), data, position)
                    data, position = data[written:], position + written
            else:
                with self.lock:
                    self.handle.seek(position)
                    self.handle.write(data)


class StoredTiles(Tiles):
    """Rows of an on-disk tile store: read by batch, scaled by their stored dtype and normalised on the fly.

    The store keeps tiles in a compact dtype (the source's integers when no resize was needed, else
    float16); ``scale_by_dtype`` and ``ChannelStats.normalise`` turn a batch into exactly what the
    in-memory path holds for the same pixels.
    """

    def __init__(self, rows: RowFile, kept: np.ndarray, stats: ChannelStats | None = None) -> None:
        self.file, self.kept, self.stats = rows, kept, stats
        self.channels, self.size = rows.shape[1], rows.shape[-1]

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, index) -> torch.Tensor:
        raw = self.file.read_rows(self.kept[_as_numpy_index(index, len(self))])
        tiles = torch.from_numpy(scale_by_dtype(raw))
        return self.stats.normalise(tiles) if self.stats is not None else tiles

    def use_stats(self, stats: ChannelStats | None) -> None:
        self.stats = stats
