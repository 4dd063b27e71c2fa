"""Radiometry of imagery: per-band percentiles in the pixels' own units (digital numbers).

Training records the percentiles of its RGB images before normalisation; labelling and
classification sample a scene's or image's valid pixels and, where they differ, map each band's
1/99 percentiles onto the training data's (labelling.radiometry).
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch

from .readers import dtype_divisor

PERCENTILES = (1.0, 50.0, 99.0)
MAX_SAMPLE_PER_BAND = 1_000_000


def band_percentiles(pixels: np.ndarray, percentiles: Sequence[float] = PERCENTILES) -> np.ndarray:
    """(bands, len(percentiles)) percentiles of (bands, n) finite pixel values (NaN rows when n is 0)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.shape[1] == 0:
        return np.full((pixels.shape[0], len(percentiles)), np.nan)
    return np.percentile(pixels, list(percentiles), axis=1).T


def input_radiometry(tiles: torch.Tensor, dtypes: Sequence[str]) -> dict:
    """What a model's training inputs looked like before normalisation.

    ``tiles`` are the training tiles as the pipeline holds them (scaled by dtype and resized, not
    normalised), ``dtypes`` the source dtype of each training image. The percentiles are given in the
    units of the most common source dtype (e.g. 0-255 for 8-bit photos), from at most a million
    pixels per band (every k-th tile).
    """
    counts = Counter(str(dtype) for dtype in dtypes)
    source_dtype = counts.most_common(1)[0][0] if counts else "float32"
    channels, pixels_per_tile = tiles.shape[1], tiles.shape[2] * tiles.shape[3]
    step = max(1, -(-tiles.shape[0] * pixels_per_tile // MAX_SAMPLE_PER_BAND))
    sample = tiles[::step].transpose(0, 1).reshape(channels, -1).double().numpy() * dtype_divisor(source_dtype)
    return {
        "source_dtype": source_dtype,
        "dtypes": dict(sorted(counts.items())),
        "percentiles": list(PERCENTILES),
        "values": [[round(float(value), 6) for value in band] for band in band_percentiles(sample)],
    }
