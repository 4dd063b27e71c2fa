"""The in-memory tile tensor: real decoding, skipped bad files, progress, cancel, no re-decoding."""

import numpy as np
import pytest
import rasterio
import torch

from sembridge_engine.data import cache
from sembridge_engine.data.cache import estimate_memory_bytes, load_index, load_tiles
from sembridge_engine.data.discovery import TileRecord, discover_ms_archive, discover_rgb_folder
from sembridge_engine.events import CancelToken, Cancelled

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _class_index(index):
    return {name: position for position, name in enumerate(index.classes)}


def test_ms_cache_shape_dtype_labels_and_memory(data_ms_archive):
    index = discover_ms_archive(data_ms_archive)
    loaded = load_index(index, _class_index(index), 32, workers=2)
    assert loaded.tiles.shape == (12, 13, 32, 32) and loaded.tiles.dtype == torch.float32
    assert loaded.labels.dtype == torch.int64 and loaded.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert loaded.problems == [] and loaded.paths == [str(record.path) for record in index.records]
    assert estimate_memory_bytes(12, 13, 32) == loaded.tiles.nelement() * 4
    assert 0.0 < loaded.tiles.mean().item() < 1.0


def test_bands_selection_and_worker_counts_agree(data_ms_archive):
    index = discover_ms_archive(data_ms_archive)
    serial = load_index(index, _class_index(index), 16, workers=1, bands=[3, 2, 1])
    parallel = load_index(index, _class_index(index), 16, workers=2, bands=[3, 2, 1])
    assert serial.tiles.shape == (12, 3, 16, 16)
    assert torch.equal(serial.tiles, parallel.tiles)


def test_second_epoch_does_not_decode_again(data_ms_archive, monkeypatch):
    decoded = []
    real_read = cache.read_tile
    monkeypatch.setattr(cache, "read_tile", lambda *args, **kwargs: decoded.append(args[0]) or real_read(*args, **kwargs))
    index = discover_ms_archive(data_ms_archive)
    loaded = load_index(index, _class_index(index), 16, workers=2)
    assert len(decoded) == 12 and isinstance(loaded.tiles, torch.Tensor)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(loaded.tiles, loaded.labels), batch_size=5, shuffle=True)
    for _epoch in range(2):
        assert sum(len(labels) for _, labels in loader) == 12
    assert len(decoded) == 12


def test_bad_tiles_skipped_and_named(data_ms_archive, data_demo_tile):
    forest = data_ms_archive / "Forest"
    truncated = forest / "truncated.tif"
    truncated.write_bytes(data_demo_tile.read_bytes()[:40000])
    zero = forest / "zero.tif"
    zero.touch()
    with rasterio.open(data_demo_tile) as source:
        profile, data = source.profile, source.read()
    four_bands = forest / "four_bands.tif"
    with rasterio.open(four_bands, "w", **{**profile, "count": 4}) as target:
        target.write(data[:4])
    all_nodata = forest / "all_nodata.tif"
    with rasterio.open(all_nodata, "w", **{**profile, "nodata": 0}) as target:
        target.write(np.zeros_like(data))

    index = discover_ms_archive(data_ms_archive)
    assert {problem.path for problem in index.problems} == {str(zero)}
    records = index.records + [TileRecord(zero, ("Forest",))]
    loaded = load_tiles(records, _class_index(index), 16, workers=2)
    problems = {problem.path: problem.message for problem in loaded.problems}
    assert loaded.tiles.shape == (12, 13, 16, 16)
    assert "corrupt or truncated" in problems[str(truncated)]
    assert "empty file (0 bytes)" in problems[str(zero)]
    assert "has 4 bands but most files here have 13" in problems[str(four_bands)]
    assert "every pixel is nodata" in problems[str(all_nodata)]
    assert all(str(path) not in loaded.paths for path in (truncated, zero, four_bands, all_nodata))
    assert loaded.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    good_records = [record for record in index.records if str(record.path) in loaded.paths]
    assert torch.equal(loaded.tiles, load_tiles(good_records, _class_index(index), 16, workers=1).tiles)


def test_rgb_mix_of_formats_sizes_and_modes(data_rgb_folder, data_demo_rgb_image):
    from PIL import Image

    Image.open(data_demo_rgb_image).convert("L").save(data_rgb_folder / "River" / "grey.png")
    index = discover_rgb_folder(data_rgb_folder)
    loaded = load_index(index, _class_index(index), 32, workers=2)
    assert loaded.tiles.shape == (10, 3, 32, 32) and loaded.problems == []
    grey = loaded.tiles[loaded.paths.index(str(data_rgb_folder / "River" / "grey.png"))]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_multi_label_manifest_gives_multi_hot(data_ms_archive):
    tiles = sorted(data_ms_archive.rglob("*.tif"))[:3]
    manifest = data_ms_archive / "labels.csv"
    manifest.write_text("path,labels\n" + "".join(
        f"{tile.relative_to(data_ms_archive)},{labels}\n" for tile, labels in zip(tiles, ["Crop;Water", "Water", "Urban|Crop"])))
    index = discover_ms_archive(manifest)
    loaded = load_index(index, _class_index(index), 8)
    assert loaded.labels.dtype == torch.float32
    assert loaded.labels.tolist() == [[1, 0, 1], [0, 0, 1], [1, 1, 0]]


def test_progress_and_cancel(data_ms_archive):
    index = discover_ms_archive(data_ms_archive)
    calls = []
    load_index(index, _class_index(index), 8, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (12, 12) and [done for done, _ in calls] == sorted(done for done, _ in calls)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        load_index(index, _class_index(index), 8, workers=2, cancel=token)
    with pytest.raises(Cancelled):
        load_index(index, _class_index(index), 8, workers=1, cancel=token)


def test_records_of_unselected_classes_are_left_out_quietly(data_ms_archive):
    index = discover_ms_archive(data_ms_archive)
    loaded = load_index(index, {"River": 0}, 8)
    assert len(loaded) == 4 and loaded.problems == [] and loaded.labels.tolist() == [0] * 4
