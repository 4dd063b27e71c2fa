"""Radiometry that matches training: map a scene's (or image's) values onto the training images'.

A model learned on 8-bit photos divided by 255 sees nonsense when given Sentinel-2 reflectance
divided by 10000. Bundles record the training images' source dtype and per-band 1/50/99
percentiles (data.radiometry). Modes:

* ``auto`` (default): a scene with the training dtype and 1/99 percentiles within 10 % of the
  training span is left as it is; otherwise each band is mapped linearly so its 1/99 percentiles
  (sampled over valid pixels) land on the training data's.
* ``dtype``: the full range of the scene's dtype is mapped onto the training dtype's (uint16
  0..65535 -> uint8 0..255; floats are taken as 0..1 reflectance), without sampling.
* ``none``: values are used as they are, scaled by their own dtype (what older versions did).

The same mapping serves scene labelling (sampled in windows) and tile classification (sampled
from the image), so a scene window and a classified tile of the same pixels agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sembridge_engine.data.readers import dtype_divisor

from .options import RADIOMETRY_MODES

SIMILAR_TOLERANCE = 0.10    # |scene percentile - training percentile| within this share of the training 1..99 span
LOW, HIGH = 1.0, 99.0


def dtype_range(dtype) -> float:
    """The top of a dtype's value range as imagery uses it (floats: 0..1 reflectance)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


@dataclass(frozen=True)
class RadiometryMapping:
    """Per-band ``training units = gain * scene value + offset``, or no change (``applied == "none"``)."""

    mode: str
    applied: str                     # none | dtype | percentile
    reason: str
    scene_dtype: str
    training_dtype: str | None = None
    gain: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    scene_percentiles: list[list[float]] | None = None      # per band [p1, p99] of the sampled valid pixels
    training_percentiles: list[list[float]] | None = None
    sample_pixels: int = 0
    warning: str | None = field(default=None)

    def training_units(self, windows: np.ndarray) -> np.ndarray:
        """(N, C, h, w) or (C, h, w) native pixels -> float32 values in the training images' units (their DN)."""
        return self._affine(windows, 1.0)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        """Native pixels -> what ``preprocess_arrays`` takes: as they are, or float32 training units divided as
        training divided its images (so ``scale_by_dtype`` leaves them alone)."""
        if self.applied == "none":
            return windows
        return self._affine(windows, dtype_divisor(self.training_dtype))

    def _affine(self, windows: np.ndarray, divisor: float) -> np.ndarray:
        out = windows.astype(np.float32)  # one copy, then in place: the mapping runs on every window
        out *= (np.asarray(self.gain, dtype=np.float32) / np.float32(divisor)).reshape(-1, 1, 1)
        out += (np.asarray(self.offset, dtype=np.float32) / np.float32(divisor)).reshape(-1, 1, 1)
        return out

    def describe(self) -> str:
        if self.applied == "none":
            return f"radiometry {self.mode}: values used as they are ({self.reason})"
        return (f"radiometry {self.mode}: {self.scene_dtype} mapped onto the training {self.training_dtype} range by "
                f"{self.applied} ({self.reason})")

    def to_summary(self) -> dict:
        return {"mode": self.mode, "applied": self.applied, "reason": self.reason, "scene_dtype": self.scene_dtype,
                "training_dtype": self.training_dtype, "gain": list(self.gain), "offset": list(self.offset),
                "scene_percentiles": self.scene_percentiles, "training_percentiles": self.training_percentiles,
                "sample_pixels": self.sample_pixels}


def needs_samples(mode: str, training: dict | None) -> bool:
    """Whether ``plan_radiometry`` will look at pixel samples (so callers sample only then)."""
    return mode == "auto" and training is not None


def _training_low_high(training: dict) -> np.ndarray:
    percentiles = [float(value) for value in training["percentiles"]]
    columns = [percentiles.index(LOW), percentiles.index(HIGH)]
    return np.asarray(training["values"], dtype=np.float64)[:, columns]


def plan_radiometry(mode: str, training: dict | None, scene_dtype, samples: np.ndarray | None = None,
                    single_image: bool = False) -> RadiometryMapping:
    """The mapping for a scene of ``scene_dtype`` whose valid pixels are ``samples`` ((bands, n), native units).

    ``single_image``: the samples are one tile's, not a scene's. A tile's own percentiles describe its
    content (a dark river, a bright field), not its sensor's range, so with the training dtype it is
    left as it is; only another dtype is mapped."""
    if mode not in RADIOMETRY_MODES:
        raise ValueError(f"radiometry must be one of {', '.join(RADIOMETRY_MODES)}, got {mode!r}")
    scene_dtype = str(np.dtype(scene_dtype))
    if mode == "none":
        return RadiometryMapping(mode, "none", "asked for", scene_dtype)
    if training is None:
        return RadiometryMapping(mode, "none", "the model records no training radiometry", scene_dtype, warning=(
            "the model carries no training radiometry (a bundle made before it was recorded): scene values are scaled "
            "by their own dtype; check that the scene's value range matches the training images'"))
    training_dtype = str(training["source_dtype"])
    target = _training_low_high(training)
    bands = len(target)
    if mode == "dtype":
        gain = dtype_range(training_dtype) / dtype_range(scene_dtype)
        return RadiometryMapping(mode, "dtype", f"{scene_dtype} range onto {training_dtype} range", scene_dtype, training_dtype,
                                 (gain,) * bands, (0.0,) * bands, training_percentiles=target.tolist())
    if samples is None or samples.shape[1] == 0:
        return RadiometryMapping(mode, "none", "no valid pixels to sample", scene_dtype, training_dtype,
                                 training_percentiles=target.tolist())
    if single_image and scene_dtype == training_dtype:
        return RadiometryMapping(mode, "none", "one image of the training dtype (its own percentiles describe its "
                                 "content, not the sensor)", scene_dtype, training_dtype, training_percentiles=target.tolist())
    found = np.percentile(samples.astype(np.float64), [LOW, HIGH], axis=1).T
    common = dict(scene_percentiles=np.round(found, 6).tolist(), training_percentiles=target.tolist(),
                  sample_pixels=int(samples.shape[1]))
    span = np.maximum(target[:, 1] - target[:, 0], 1e-12)
    if scene_dtype == training_dtype and (np.abs(found - target) <= SIMILAR_TOLERANCE * span[:, None]).all():
        return RadiometryMapping(mode, "none", "same dtype and value range as the training images", scene_dtype,
                                 training_dtype, **common)
    scene_span = found[:, 1] - found[:, 0]
    if (scene_span <= 0).any():
        gain = dtype_range(training_dtype) / dtype_range(scene_dtype)
        return RadiometryMapping(mode, "dtype", "a band has no spread to match percentiles on; dtype ranges used",
                                 scene_dtype, training_dtype, (gain,) * bands, (0.0,) * bands, **common)
    gain = (target[:, 1] - target[:, 0]) / scene_span
    offset = target[:, 0] - gain * found[:, 0]
    return RadiometryMapping(mode, "percentile", f"1/99 percentiles of {common['sample_pixels']} valid pixels per band "
                             "mapped onto the training images'", scene_dtype, training_dtype,
                             tuple(float(value) for value in gain), tuple(float(value) for value in offset), **common)


def valid_samples(pixels: np.ndarray, valid: np.ndarray, limit: int = 250_000) -> np.ndarray:
    """(bands, n) finite values of ``pixels`` (C, h, w) where ``valid``, at most ``limit`` evenly spread per band."""
    keep = valid & np.isfinite(pixels).all(axis=0) if pixels.dtype.kind == "f" else valid
    values = pixels[:, keep]
    step = max(1, -(-values.shape[1] // limit))
    return values[:, ::step]
