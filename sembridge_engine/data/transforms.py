"""The one preprocessing path shared by training, classification and scene labelling.

A model only works on inputs prepared exactly as its training tiles were, so scaling, resizing
and normalisation live here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .readers import scale_by_dtype

STD_FLOOR = 1e-6
_STATS_CHUNK = 1024


def resize_tiles(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """(N,C,H,W) or (C,H,W) float -> size x size with bilinear antialiased resampling."""
    if tiles.dim() not in (3, 4):
        raise ValueError(f"expected tiles shaped (N,C,H,W) or (C,H,W), got {tuple(tiles.shape)}")
    if tiles.shape[-2:] == (size, size):
        return tiles
    batch = tiles if tiles.dim() == 4 else tiles.unsqueeze(0)
    resized = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized if tiles.dim() == 4 else resized.squeeze(0)


@dataclass
class ChannelStats:
    """Per-band mean and std of the training split, applied to every input of the model."""

    mean: list[float]
    std: list[float]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"channel stats: {len(self.mean)} means but {len(self.std)} stds")

    def normalise(self, tiles: torch.Tensor) -> torch.Tensor:
        channels = tiles.shape[-3]
        if channels != len(self.mean):
            raise ValueError(f"channel stats are for {len(self.mean)} bands, the tiles have {channels}")
        mean = torch.tensor(self.mean, dtype=tiles.dtype, device=tiles.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tiles.dtype, device=tiles.device).view(-1, 1, 1)
        return (tiles - mean) / std

    def to_dict(self) -> dict:
        return {"mean": [float(value) for value in self.mean], "std": [float(value) for value in self.std]}

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelStats":
        try:
            return cls([float(value) for value in data["mean"]], [float(value) for value in data["std"]])
        except (KeyError, TypeError) as error:
            raise ValueError(f"channel stats need lists 'mean' and 'std', got {data!r}") from error


def compute_channel_stats(tiles) -> ChannelStats:
    """Per-channel mean/std over (N,C,H,W) tiles (a tensor, or a ``data.tiles.Tiles`` read chunk by chunk;
    also one (C,H,W) tensor), accumulated in float64."""
    if isinstance(tiles, torch.Tensor):
        if tiles.dim() == 3:
            tiles = tiles.unsqueeze(0)
        if tiles.dim() != 4 or tiles.shape[0] == 0:
            raise ValueError(f"channel stats need a non-empty (N,C,H,W) tensor, got {tuple(tiles.shape)}")
    elif len(tiles) == 0:
        raise ValueError("channel stats need at least one tile")
    total = total_squares = 0.0
    for start in range(0, len(tiles), _STATS_CHUNK):
        chunk = tiles[start:start + _STATS_CHUNK].to(torch.float64)
        total = total + chunk.sum(dim=(0, 2, 3))
        total_squares = total_squares + chunk.square().sum(dim=(0, 2, 3))
    count = len(tiles) * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    variance = (total_squares / count - mean.square()).clamp_min(0.0)
    std = variance.sqrt().clamp_min(STD_FLOOR)
    return ChannelStats(mean.tolist(), std.tolist())


def scale_and_resize(arrays: Sequence[np.ndarray], tile_size: int) -> torch.Tensor:
    """Native-dtype (C,H,W) arrays (sizes and dtypes may differ) -> (N,C,S,S) float32, one resize per size."""
    if not arrays:
        raise ValueError("no arrays to preprocess")
    channels = {array.shape[0] for array in arrays}
    if len(channels) != 1:
        raise ValueError(f"arrays have different band counts {sorted(channels)}; cannot stack them")
    out = torch.empty((len(arrays), channels.pop(), tile_size, tile_size), dtype=torch.float32)
    by_shape: dict[tuple, list[int]] = {}
    for position, array in enumerate(arrays):  # stacking mixed dtypes would scale an 8-bit tile as a 16-bit one
        by_shape.setdefault((array.shape, array.dtype.str), []).append(position)
    for positions in by_shape.values():
        batch = torch.from_numpy(scale_by_dtype(np.stack([arrays[position] for position in positions])))
        out[positions] = resize_tiles(batch, tile_size)
    return out


def preprocess_arrays(arrays: np.ndarray | list[np.ndarray], tile_size: int, stats: ChannelStats | None) -> torch.Tensor:
    """Raw (C,H,W) array(s) -> scale_by_dtype -> resize -> normalise -> (N,C,S,S) float32."""
    if isinstance(arrays, np.ndarray):
        if arrays.ndim not in (3, 4):
            raise ValueError(f"expected (C,H,W) or (N,C,H,W) arrays, got shape {arrays.shape}")
        batch = arrays if arrays.ndim == 4 else arrays[None]
        tiles = resize_tiles(torch.from_numpy(scale_by_dtype(batch)), tile_size)
    else:
        tiles = scale_and_resize(arrays, tile_size)
    return stats.normalise(tiles) if stats is not None else tiles
