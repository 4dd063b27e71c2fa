"""Antialiased bilinear resizing as a matrix, in NumPy (no PyTorch needed).

Training resizes tiles with ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``.
That resampling is separable and linear, so resizing an ``h x w`` image to ``s x s`` is
``rows @ image @ cols.T`` with ``rows = resize_matrix(h, s)`` and ``cols = resize_matrix(w, s)``.
The weights follow PyTorch's CPU kernel (``_compute_weights_aa`` in ATen's UpSampleKernel.cpp:
a triangle filter widened by the scale when shrinking, normalised per output pixel), so the
self-contained ONNX graph and the torch-free runtime resize exactly as training did (tests compare
against PyTorch to float32 rounding).
"""
from __future__ import annotations

import numpy as np


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 weights of PyTorch's antialiased bilinear resize along one axis."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    if in_size == out_size:
        return np.eye(out_size, dtype=np.float32)  # resize_tiles does not resample equal sizes
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0      # bilinear: half-width 1, widened by the scale when shrinking
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    centres = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centres - support + 0.5).astype(np.int64), 0)
    last = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    sources = np.arange(in_size)
    inside = (sources[None, :] >= first[:, None]) & (sources[None, :] < last[:, None])
    weights = np.clip(1.0 - np.abs((sources[None, :] - centres[:, None] + 0.5) * inverse), 0.0, None) * inside
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
