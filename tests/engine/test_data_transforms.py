"""Preprocessing shared by training and inference, normalisation stats, and splits."""
import numpy as np
import pytest
import torch

from sembridge_engine.data.readers import read_image
from sembridge_engine.data.splits import stratified_split
from sembridge_engine.data.transforms import (
    ChannelStats,
    compute_channel_stats,
    preprocess_arrays,
    resize_tiles,
)
from resources import demo_project


def test_resize_handles_batches_single_tiles_and_non_square():
    non_square = torch.rand(2, 3, 249, 256)
    assert resize_tiles(non_square, 32).shape == (2, 3, 32, 32)
    assert resize_tiles(non_square[0], 32).shape == (3, 32, 32)
    same = torch.rand(3, 32, 32)
    assert resize_tiles(same, 32) is same


def test_channel_stats_match_torch_and_normalise():
    tiles = torch.rand(6, 4, 8, 8) * torch.tensor([1.0, 10.0, 0.0, 3.0]).view(1, 4, 1, 1)
    stats = compute_channel_stats(tiles)
    assert np.allclose(stats.mean, tiles.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(stats.std[:2], tiles.std(dim=(0, 2, 3), unbiased=False)[:2].tolist(), atol=1e-5)
    assert stats.std[2] == pytest.approx(1e-6)
    normalised = stats.normalise(tiles)
    assert torch.allclose(normalised[:, [0, 1, 3]].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normalised[:, [0, 1, 3]].std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert stats.normalise(tiles[0]).shape == (4, 8, 8)
    assert ChannelStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(ValueError, match="4 bands, the tiles have 3"):
        stats.normalise(torch.rand(3, 8, 8))


def test_preprocess_arrays_is_scale_resize_normalise_on_real_images():
    tiles = sorted((demo_project() / "ms" / "River").glob("*.tif"))[:2]
    arrays = [read_image(path) for path in tiles]
    stats = ChannelStats([0.1] * 13, [0.05] * 13)
    batch = preprocess_arrays(arrays, 32, stats)
    assert batch.shape == (2, 13, 32, 32) and batch.dtype == torch.float32
    manual = (resize_tiles(torch.from_numpy(arrays[0].astype(np.float32) / 10000), 32) - 0.1) / 0.05
    assert torch.allclose(batch[0], manual, atol=1e-4)
    assert torch.allclose(preprocess_arrays(arrays[0], 32, stats)[0], batch[0])

    odd_sizes = [np.full((3, 256, 249), 255, np.uint8), np.zeros((3, 256, 256), np.uint8)]
    rgb = preprocess_arrays(odd_sizes, 16, None)
    assert rgb.shape == (2, 3, 16, 16)
    assert torch.allclose(rgb[0], torch.ones(3, 16, 16)) and torch.all(rgb[1] == 0)


def test_stratified_split_covers_every_class_and_is_deterministic():
    labels = [0] * 20 + [1] * 3 + [2] * 7 + [3] * 2 + [4]
    train, val, test = stratified_split(labels, (0.6, 0.2, 0.2), seed=7)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(labels)))
    labels_array = np.asarray(labels)
    for part in (train, val, test):
        assert set(labels_array[part]) >= {0, 1, 2}
    assert np.sum(labels_array[train] == 0) == 12 and np.sum(labels_array[val] == 0) == 4
    assert 4 in labels_array[train] and 3 in labels_array[train]
    again = stratified_split(labels, (0.6, 0.2, 0.2), seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = stratified_split(labels, (0.6, 0.2, 0.2), seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip((train, val, test), other))


def test_split_without_test_and_bad_fractions():
    train, val, test = stratified_split([0] * 10 + [1] * 5, (0.8, 0.2, 0.0), seed=0)
    assert len(test) == 0 and len(train) == 12 and len(val) == 3
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split([0, 1], (0.5, 0.5, 0.5), seed=0)
