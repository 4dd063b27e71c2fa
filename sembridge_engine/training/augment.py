"""Training-time augmentation of a batch of normalised tiles, as whole-batch tensor operations.

Nadir imagery has no "up": any of the 8 rotations/reflections of a tile (the dihedral group D4) is
an equally valid sample of its class. A random resized crop shows a scene at slightly different
extents and scales, the standard remedy for a few dozen images per class. Colour jitter
(brightness, contrast, saturation) is for RGB only: it mimics sensors, seasons and processing;
multispectral bands carry physical reflectance that the teacher must read as it is.

Every random draw comes from the stage's (seed, stage, epoch) generator, so a resumed run
augments exactly as the uninterrupted run did, and every variant compared with the same seed
sees the same augmentation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.transforms import ChannelStats

# The 8 elements of D4 as 2x2 matrices acting on (x, y) sampling coordinates.
_DIHEDRAL = torch.tensor([
    [[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]],
    [[-1, 0], [0, 1]], [[0, 1], [1, 0]], [[1, 0], [0, -1]], [[0, -1], [-1, 0]],
], dtype=torch.float32)
CROP_RATIO = (3 / 4, 4 / 3)
GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """What one stage applies: dihedral transforms, a resized crop of ``crop_min``..1 of the area
    (1.0 = none) and RGB colour jitter of relative strength ``jitter`` (0 = none)."""

    dihedral: bool = True
    crop_min: float = 1.0
    jitter: float = 0.0

    @classmethod
    def for_stage(cls, settings, rgb: bool) -> "Augmentation":
        """From the config's [augment] section; colour jitter only for RGB inputs."""
        return cls(settings.dihedral, settings.crop_min, settings.colour_jitter if rgb else 0.0)

    def __call__(self, tiles: torch.Tensor, generator: torch.Generator, stats: ChannelStats | None = None,
                 part: slice = slice(None), total: int | None = None) -> torch.Tensor:
        """Augment ``tiles``. Under torchrun they are the ``part`` of a global batch of ``total``: the
        draws are made for the whole batch and sliced, so every world size augments a tile alike."""
        tiles = self._geometry(tiles, generator, part, total or tiles.shape[0])
        if self.jitter > 0:
            if stats is None:
                raise ValueError("colour jitter needs the RGB channel statistics to undo the normalisation")
            tiles = colour_jitter(tiles, generator, stats, self.jitter, part, total)
        return tiles

    def _geometry(self, tiles: torch.Tensor, generator: torch.Generator, part: slice, total: int) -> torch.Tensor:
        elements = (torch.randint(8, (total,), generator=generator) if self.dihedral
                    else torch.zeros(total, dtype=torch.long))[part]
        if self.crop_min >= 1.0:
            return dihedral(tiles, elements)
        area = torch.empty(total).uniform_(self.crop_min, 1.0, generator=generator)[part]
        aspect = torch.empty(total).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)[part].exp()
        width, height = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
        shift = (torch.rand(2, total, generator=generator) * 2 - 1)[:, part]
        batch = tiles.shape[0]
        theta = torch.zeros(batch, 2, 3)
        rotation = _DIHEDRAL[elements]
        theta[:, :, 0] = rotation[:, :, 0] * width[:, None]
        theta[:, :, 1] = rotation[:, :, 1] * height[:, None]
        theta[:, 0, 2], theta[:, 1, 2] = shift[0] * (1 - width), shift[1] * (1 - height)
        grid = F.affine_grid(theta.to(tiles.device, tiles.dtype), list(tiles.shape), align_corners=False)
        return F.grid_sample(tiles, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def dihedral(tiles: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
    """Apply D4 element ``elements[i]`` (0..7: rotations by 0/90/180/270 degrees, then the same after a
    horizontal flip) to tile i; exact pixel permutations, selected per sample with torch.where."""
    elements = elements.to(tiles.device).view(-1, 1, 1, 1)
    flipped = torch.where(elements >= 4, tiles.flip(-1), tiles)
    out = flipped
    for quarter_turns in (1, 2, 3):
        out = torch.where(elements % 4 == quarter_turns, torch.rot90(flipped, quarter_turns, (-2, -1)), out)
    return out


def colour_jitter(tiles: torch.Tensor, generator: torch.Generator, stats: ChannelStats, strength: float,
                  part: slice = slice(None), total: int | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation factors drawn from U(1 - s, 1 + s) per tile, applied to the
    tile's values before normalisation (clamped at 0), then normalised again (``part``/``total``: as
    in :meth:`Augmentation.__call__`)."""
    batch = total or tiles.shape[0]
    mean = torch.tensor(stats.mean, dtype=tiles.dtype, device=tiles.device).view(1, -1, 1, 1)
    std = torch.tensor(stats.std, dtype=tiles.dtype, device=tiles.device).view(1, -1, 1, 1)
    factors = (1 + (torch.rand(3, batch, 1, 1, 1, generator=generator)[:, part] * 2 - 1) * strength).to(tiles.device, tiles.dtype)
    weights = torch.tensor(GREY_WEIGHTS, dtype=tiles.dtype, device=tiles.device).view(1, 3, 1, 1)
    raw = (tiles * std + mean) * factors[0]
    level = (raw * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    raw = (raw - level) * factors[1] + level
    grey = (raw * weights).sum(1, keepdim=True)
    raw = (grey + (raw - grey) * factors[2]).clamp_min(0)
    return (raw - mean) / std
