"""The on-disk tile store: same tiles as in memory, compact dtype, reuse by key, bad files, cancel,
and a whole run on the store giving the same metrics as the run in memory."""
import json
import os

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from resources import demo_project
from sembridge_engine.config import apply_overrides, load_config
from sembridge_engine.data import cache, compute_channel_stats
from sembridge_engine.data.cache import load_tiles
from sembridge_engine.data.discovery import discover_ms_archive
from sembridge_engine.data.store import load_tile_set, open_tile_store
from sembridge_engine.events import CancelToken, Cancelled
from sembridge_engine.training import train
from sembridge_engine.training.dataset import on_disk_modalities
from sembridge_engine.training.rundir import TIMING_KEYS, RunFolder

from .test_training import TINY, teacher_cache


def _class_index(index):
    return {name: position for position, name in enumerate(index.classes)}


def _store(index, tile_size, tmp_path, **options):
    return open_tile_store(index.records, _class_index(index), tile_size, tmp_path / "tiles", workers=2, **options)


def test_native_size_tiles_are_stored_in_the_source_dtype_and_read_back_exactly(data_ms_archive, tmp_path):
    index = discover_ms_archive(data_ms_archive)
    stored = _store(index, 64, tmp_path)
    memory = load_tiles(index.records, _class_index(index), 64, workers=2)
    on_disk = np.load(stored.folder / "tiles.npy", mmap_mode="r")
    assert on_disk.dtype == np.uint16 and on_disk.shape == (12, 13, 64, 64)
    with rasterio.open(index.records[5].path) as source:
        assert np.array_equal(on_disk[5], source.read())
    assert stored.paths == memory.paths and torch.equal(stored.labels, memory.labels)
    order = torch.tensor([7, 0, 11, 3, 3, 4])
    assert torch.equal(stored.tiles[order], memory.tiles[order])
    assert torch.equal(stored.tiles[2:9], memory.tiles[2:9])
    stats = compute_channel_stats(memory.tiles[:6])
    assert compute_channel_stats(stored.tiles.subset(torch.arange(6))) == stats
    stored.tiles.use_stats(stats)
    assert torch.equal(stored.tiles.subset(torch.tensor([9, 1]))[:], stats.normalise(memory.tiles[[9, 1]]))


def test_resized_tiles_are_stored_as_float16(data_rgb_folder, tmp_path):
    from sembridge_engine.data.discovery import discover_rgb_folder

    index = discover_rgb_folder(data_rgb_folder)
    loaded = load_tile_set(index.records, _class_index(index), 32, store_dir=tmp_path / "tiles", modality="rgb")
    memory = load_tiles(index.records, _class_index(index), 32, modality="rgb")
    assert np.load(loaded.folder / "tiles.npy", mmap_mode="r").dtype == np.float16
    everything = torch.arange(len(memory))
    assert torch.allclose(loaded.tiles[everything], memory.tiles, rtol=1e-3, atol=1e-3)
    assert not torch.equal(loaded.tiles[everything], memory.tiles)  # float16, not a copy of the float32 tensor


def test_a_store_is_reused_until_its_data_changes(data_ms_archive, tmp_path, monkeypatch):
    decoded = []
    real_read = cache.read_tile
    monkeypatch.setattr(cache, "read_tile", lambda *args, **kwargs: decoded.append(args[0]) or real_read(*args, **kwargs))
    index = discover_ms_archive(data_ms_archive)
    first = _store(index, 64, tmp_path)
    again = _store(index, 64, tmp_path)
    assert not first.reused and again.reused and again.folder == first.folder and len(decoded) == 12
    assert _store(index, 32, tmp_path).folder != first.folder
    touched = index.records[0].path
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    changed = _store(discover_ms_archive(data_ms_archive), 64, tmp_path)
    assert not changed.reused and changed.folder != first.folder
    assert len([path for path in (tmp_path / "tiles").iterdir() if path.is_dir()]) == 3  # no temporaries left


def test_bad_files_are_skipped_named_and_left_out_of_the_rows(data_ms_archive, data_demo_tile, tmp_path):
    forest = data_ms_archive / "Forest"
    truncated = forest / "Forest_0_truncated.tif"
    truncated.write_bytes(data_demo_tile.read_bytes()[:40000])
    index = discover_ms_archive(data_ms_archive)
    stored = _store(index, 64, tmp_path)
    memory = load_tiles(index.records, _class_index(index), 64)
    assert [str(problem.path) for problem in stored.problems] == [str(truncated)]
    assert "corrupt or truncated" in stored.problems[0].message
    assert str(truncated) not in stored.paths and len(stored.tiles) == 12
    assert torch.equal(stored.tiles[torch.arange(12)], memory.tiles)
    assert json.loads((stored.folder / "index.json").read_text())["kept"] == [i for i in range(13) if i != 4]


def test_build_reports_progress_and_a_cancel_leaves_nothing(data_ms_archive, tmp_path):
    index = discover_ms_archive(data_ms_archive)
    token, calls = CancelToken(), []

    def cancel_halfway(done, total):
        calls.append((done, total))
        if done >= total // 2:
            token.cancel()

    with pytest.raises(Cancelled):
        _store(index, 64, tmp_path, progress=cancel_halfway, cancel=token)
    assert calls and calls[0][1] == 12
    assert [path.name for path in (tmp_path / "tiles").iterdir() if path.suffix != ".lock"] == []
    progress = []
    stored = _store(index, 64, tmp_path, progress=lambda done, total: progress.append(done))
    assert progress[-1] == 12 and len(stored.tiles) == 12


def test_modalities_go_to_disk_largest_first_when_over_budget():
    assert on_disk_modalities({"rgb": 10, "ms": 50}, 100) == set()
    assert on_disk_modalities({"rgb": 10, "ms": 95}, 100) == {"ms"}
    assert on_disk_modalities({"rgb": 120, "ms": 95}, 100) == {"rgb"}
    assert on_disk_modalities({"rgb": 10, "ms": 95}, 5) == {"rgb", "ms"}


@pytest.fixture(scope="module")
def native_size_project(tmp_path_factory):
    """Three classes of real tiles at their stored size: the EuroSAT tiles (64 px, uint16) and UC Merced
    images written as 32 px PNGs, so both modalities are stored in their source dtype, losslessly."""
    root = tmp_path_factory.mktemp("native")
    for name in ("AnnualCrop", "Forest", "River"):
        (root / "ms" / name).mkdir(parents=True)
        for tile in sorted((demo_project() / "ms" / name).glob("*.tif"))[:10]:
            (root / "ms" / name / tile.name).write_bytes(tile.read_bytes())
        (root / "rgb" / name).mkdir(parents=True)
        for image in sorted((demo_project() / "rgb" / name).iterdir())[:15]:
            Image.open(image).convert("RGB").resize((32, 32), Image.BILINEAR).save(root / "rgb" / name / f"{image.stem}.png")
    return root


def _metrics_without_timing(run_dir):
    return [{key: value for key, value in row.items() if key not in TIMING_KEYS} for row in RunFolder(run_dir).metrics()]


def test_a_run_on_the_tile_store_gives_the_same_metrics_as_in_memory(native_size_project, tmp_path):
    root = native_size_project
    base = [*TINY, "data.ms_tile_size=64", f"data.ms_path={root / 'ms'}", f"data.rgb_path={root / 'rgb'}",
            "teacher.batch_size=16", "matcher.batch_size=16", "student.batch_size=16", "data.class_mapping={}"]
    torch.set_num_threads(1)
    demo = load_config(demo_project() / "demo.toml")
    results = {}
    for name, budget in (("memory", 0), ("disk", 1e-6)):
        with teacher_cache(tmp_path / name / "cache"):
            config = apply_overrides(demo, [*base, f"data.memory_budget_gb={budget}"])
            results[name] = train(config, run_dir=tmp_path / name / "run")
    memory, disk = results["memory"], results["disk"]
    assert memory.status == disk.status == "finished"
    log = "\n".join(RunFolder(disk.run_dir).log_lines())
    assert "RGB tiles read from the tile store" in log and "MS tiles read from the tile store" in log
    assert "tile store" not in "\n".join(RunFolder(memory.run_dir).log_lines())
    stores = sorted(path.name.split("-")[0] for path in (tmp_path / "disk" / "cache" / "tiles").iterdir() if path.is_dir())
    assert stores == ["ms", "rgb"]
    assert _metrics_without_timing(disk.run_dir) == _metrics_without_timing(memory.run_dir)
    assert (disk.run_dir / "predictions.csv").read_text() == (memory.run_dir / "predictions.csv").read_text()
    for round_index in RunFolder(memory.run_dir).match_rounds():
        assert RunFolder(disk.run_dir).read_match_table(round_index) == RunFolder(memory.run_dir).read_match_table(round_index)


def test_tiles_of_a_store_survive_an_odd_record_of_another_dtype(data_ms_archive, data_demo_tile, tmp_path):
    """An 8-bit file in a uint16 archive is scaled as 8-bit in memory (it once was stacked with the 16-bit
    tiles of its decode chunk and scaled as 16-bit) and quantised onto the store's own scale on disk."""
    with rasterio.open(data_demo_tile) as source:
        profile, pixels = source.profile, source.read()
    odd = data_ms_archive / "River" / "River_byte.tif"
    with rasterio.open(odd, "w", **{**profile, "dtype": "uint8"}) as target:
        target.write((pixels // 40).clip(0, 255).astype(np.uint8))
    index = discover_ms_archive(data_ms_archive)
    stored, memory = _store(index, 64, tmp_path), load_tiles(index.records, _class_index(index), 64)
    position = memory.paths.index(str(odd))
    expected = torch.from_numpy((pixels // 40).clip(0, 255).astype(np.float32) / np.float32(255))
    assert torch.equal(memory.tiles[position], expected)
    assert torch.allclose(stored.tiles[[position]][0], expected, atol=1e-4)
