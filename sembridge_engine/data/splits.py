"""Seeded, stratified train/val/test splits that keep every class in every split when possible."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _split_sizes(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Items per split for one class: rounded shares, at least one per non-empty split when n allows."""
    active = [index for index, fraction in enumerate(fractions) if fraction > 0]
    sizes = [int(round(n * fraction)) for fraction in fractions]
    if n >= len(active):
        for index in active:
            sizes[index] = max(sizes[index], 1)
    else:
        sizes = [0, 0, 0]
        for index in active[:n]:
            sizes[index] = 1
    largest = max(active, key=lambda index: fractions[index])
    while sum(sizes) > n:
        shrinkable = [index for index in active if sizes[index] > 1] or [largest]
        sizes[max(shrinkable, key=lambda index: sizes[index] - n * fractions[index])] -= 1
    sizes[largest] += n - sum(sizes)
    return sizes


def stratified_split(labels: Sequence[int], fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (sorted, int64) of the train, val and test items.

    Each class is shuffled with a generator seeded by ``seed`` and cut by ``fractions``; a class
    with at least 3 items gets at least one item in every split whose fraction is non-zero.
    The same labels, fractions and seed always give the same split.
    """
    if len(fractions) != 3 or any(fraction < 0 for fraction in fractions) or not np.isclose(sum(fractions), 1.0, atol=1e-6):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    labels_array = np.asarray(labels)
    if labels_array.ndim != 1:
        raise ValueError(f"stratified_split needs one class index per item, got shape {labels_array.shape}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(labels_array):
        members = rng.permutation(np.flatnonzero(labels_array == label))
        boundaries = np.cumsum(_split_sizes(len(members), tuple(fractions)))[:-1]
        for part, chunk in zip(parts, np.split(members, boundaries)):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) if part else np.empty(0, np.int64) for part in parts)
