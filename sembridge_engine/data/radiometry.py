"""Radiometry of imagery: per-band percentiles in the pixels' own units (digital numbers).

Training records the percentiles of its RGB images before normalisation; labelling and
classification sample a scene's or image's valid pixels and, where they differ, map each band's
1/99 percentiles onto the training data's (labelling.radiometry).
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

PERCENTILES = (1.0, 50.0, 99.0)
MAX_SAMPLE_PER_BAND = 1_000_000
MAX_IMAGES = 64


def band_percentiles(pixels: np.ndarray, percentiles: Sequence[float] = PERCENTILES) -> np.ndarray:
    """(bands, len(percentiles)) percentiles of (bands, n) finite pixel values (NaN rows when n is 0)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.shape[1] == 0:
        return np.full((pixels.shape[0], len(percentiles)), np.nan)
    return np.percentile(pixels, list(percentiles), axis=1).T


def input_radiometry(paths: Sequence[str], dtypes: Sequence[str], *, as_rgb: bool = True,
                     max_images: int = MAX_IMAGES) -> dict:
    """What a model's training images looked like before normalisation: per-band percentiles of their pixels.

    ``paths`` are the training images and ``dtypes`` their source dtypes. Up to ``max_images`` images
    spread over the list are read at their own resolution (percentiles of resized tiles would miss the
    extremes a scene's full-resolution pixels show); the percentiles are in the units of the most common
    source dtype (e.g. 0-255 for 8-bit photos), from at most a million pixels per band.
    """
    from .readers import read_tile

    counts = Counter(str(dtype) for dtype in dtypes)
    source_dtype = counts.most_common(1)[0][0] if counts else "float32"
    step = max(1, -(-len(paths) // max_images))
    pixels = []
    for path, dtype in list(zip(paths, dtypes))[::step]:
        if str(dtype) != source_dtype:
            continue
        array, _ = read_tile(path, as_rgb=as_rgb)
        pixels.append(array.reshape(array.shape[0], -1))
    sample = np.concatenate(pixels, axis=1)
    sample = sample[:, ::max(1, -(-sample.shape[1] // MAX_SAMPLE_PER_BAND))]
    return {
        "source_dtype": source_dtype,
        "dtypes": dict(sorted(counts.items())),
        "images_sampled": len(pixels),
        "percentiles": list(PERCENTILES),
        "values": [[round(float(value), 6) for value in band] for band in band_percentiles(sample)],
    }
