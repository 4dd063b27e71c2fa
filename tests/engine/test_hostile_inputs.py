"""Hostile inputs and faults for training, inspection, configs, run folders and bundles.

Each test is one case of a hostile review: bad pixels, bad configs, bad folders, concurrent
writers, changed data, oversized or malformed bundles. Every one must end with a clear message
and no lost or mixed data. Files are real formats (rasterio-written GeoTIFFs, real zips).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from sembridge_engine.bundle import METADATA_NAME, BundleError, load_bundle
from sembridge_engine.cli import main as cli_main
from sembridge_engine.config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config
from sembridge_engine.data.discovery import discover_manifest
from sembridge_engine.data.summary import summarise_imagery
from sembridge_engine.data.readers import read_image, read_tile
from sembridge_engine.training import resume, train
from sembridge_engine.training.outputs import export_bundle
from sembridge_engine.training.rundir import RunFolder, RunLocked
from sembridge_engine.training.stage_loop import StageSpec, TrainingDiverged, run_stage

from .labelling_fixtures import make_run_folder

TINY = [
    "data.ms_tile_size=16", "data.rgb_tile_size=16", "data.rgb_split=[0.34, 0.33, 0.33]", "train.device=cpu",
    "teacher.arch=shufflenet_v2_x0_5", "teacher.epochs=1", "teacher.batch_size=8",
    "matcher.arch=shufflenet_v2_x0_5", "matcher.epochs=1", "matcher.batch_size=8", "matcher.embed_dim=16",
    "student.arch=shufflenet_v2_x0_5", "student.epochs=1", "student.batch_size=8",
    "distill.loss=kd", "distill.dynm=false", "distill.probe_size=4",
]


@pytest.fixture
def tiny(data_ms_archive, data_rgb_folder, tmp_path, monkeypatch):
    """A tiny valid run config on real demo imagery (3 classes), teacher cache inside tmp_path."""
    torch.set_num_threads(1)
    monkeypatch.setenv("SEMBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    base = config_from_dict({"data": {"ms_path": str(data_ms_archive), "rgb_path": str(data_rgb_folder)}})
    return apply_overrides(base, TINY)


def _write_float_tile(path: Path, source: Path, nan_rows: int) -> None:
    """A copy of a real 13-band tile as float32 reflectance with NaN rows (nodata = nan)."""
    with rasterio.open(source) as dataset:
        data = dataset.read().astype(np.float32) / 10000
        profile = dataset.profile | {"dtype": "float32", "nodata": float("nan"), "compress": "deflate"}
    data[:, :nan_rows] = np.nan
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)


# -- 1: non-finite numbers -------------------------------------------------------------------------
def test_nan_pixels_are_filled_and_reported(data_ms_archive, data_demo_tile, tmp_path):
    tile = data_ms_archive / "Forest" / "nan_tile.tif"
    _write_float_tile(tile, data_demo_tile, nan_rows=10)
    array, filled = read_tile(tile)
    assert filled == 10 * 64 and np.isfinite(array).all()
    summary = summarise_imagery(data_ms_archive, "ms")
    assert summary["nodata"] == ["nan"]
    assert any("NaN or infinite" in problem["message"] for problem in summary["problems"])


def test_a_nan_tile_does_not_poison_training(tiny, data_ms_archive, data_demo_tile, tmp_path):
    for index in range(4):  # every Forest tile holds NaN rows (float32, nodata = nan)
        source = sorted((data_ms_archive / "Forest").glob("*.tif"))[index]
        _write_float_tile(source.with_name(f"float_{index}.tif"), data_demo_tile, nan_rows=8)
        source.unlink()
    events = []
    result = train(tiny, run_dir=tmp_path / "run", callback=events.append)
    assert result.status == "finished"
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(row["loss_total"]) for row in rows)
    weights = load_bundle(result.run_dir / "model.sembridge").model.state_dict()
    assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point())
    assert any("filled with their band's median" in getattr(event, "message", "") for event in events)


def test_a_diverging_stage_stops_with_the_stage_and_epoch(tiny, tmp_path):
    from sembridge_engine.events import ignore_event
    from sembridge_engine.training.context import RunContext

    folder = RunFolder(tmp_path / "run")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    spec = StageSpec("teacher", 2, 2, 4, {"teacher": model}, optimizer, None,
                     lambda positions, generator, epoch: {"n": len(positions), "loss_total": float("nan")},
                     lambda epoch: {}, {})
    with pytest.raises(TrainingDiverged, match=r"teacher stage, epoch 1, batch 1: the loss is nan"):
        run_stage(RunContext(tiny, folder, ignore_event, None), spec)
    assert not folder.checkpoint("teacher").exists()


@pytest.mark.parametrize("override, key", [
    ("teacher.lr=inf", "teacher.lr"), ("train.weight_decay=inf", "train.weight_decay"),
    ("teacher.epochs=inf", "teacher.epochs"), ("teacher.epochs=1e400", "teacher.epochs"),
    ("teacher.epochs=nan", "teacher.epochs"), ("distill.gamma=nan", "distill.gamma"),
    ("student.batch_size=100000000", "student.batch_size"), ("train.seed=1e30", "train.seed"),
    ("distill.params.temperature=inf", "distill.params.temperature"),
])
def test_non_finite_and_absurd_values_are_rejected_with_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        apply_overrides(RunConfig(), [override])
    assert error.value.key == key


def test_export_refuses_a_model_with_nan_weights(tmp_path):
    run_dir = make_run_folder(tmp_path / "run")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(run_dir / "student.safetensors"))
    name = next(key for key, value in tensors.items() if value.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(run_dir / "student.safetensors"))
    with pytest.raises(BundleError, match="NaN or infinite weights"):
        export_bundle(run_dir, check_onnx=False)
    assert not (run_dir / "model.sembridge").exists() and not list(run_dir.glob(".*partial*"))


def test_an_export_killed_mid_write_leaves_nothing_after_the_next_export(tmp_path):
    run_dir = make_run_folder(tmp_path / "run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "exports" / "model.sembridge"
    out.parent.mkdir()
    killed = out.parent / f".model.{dead.stdout.strip()}-0123abcd.partial.sembridge"  # what kill -9 mid-export leaves
    killed.write_bytes(b"")
    other = out.parent / f".other.{dead.stdout.strip()}-0123abcd.partial.sembridge"  # another output's: not ours
    other.write_bytes(b"")
    export_bundle(run_dir, out, check_onnx=False)
    assert out.is_file() and not killed.exists() and other.exists()


# -- 2, 3, 6: run folders --------------------------------------------------------------------------
def test_train_refuses_a_folder_with_the_users_files(tiny, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.toml").write_text("my own notes")
    (folder / "metrics.jsonl").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        train(tiny, run_dir=folder)
    assert (folder / "config.toml").read_text() == "my own notes"
    assert sorted(path.name for path in folder.iterdir()) == ["config.toml", "metrics.jsonl"]


def _cancelled_run(config, run_dir: Path) -> Path:
    from sembridge_engine.events import CancelToken, EpochFinished

    token = CancelToken()
    train(config, run_dir=run_dir, callback=lambda event: isinstance(event, EpochFinished) and token.cancel(),
          cancel=token)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    return run_dir


def test_resume_refuses_changed_data_and_says_what_changed(tiny, data_rgb_folder, tmp_path):
    run_dir = _cancelled_run(tiny, tmp_path / "run")
    forest = sorted((data_rgb_folder / "Forest").iterdir())
    forest[0].unlink()
    shutil.move(str(forest[1]), data_rgb_folder / "River" / forest[1].name)
    shutil.copy(forest[2], data_rgb_folder / "AnnualCrop" / f"new{forest[2].suffix}")
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(ValueError) as error:
        resume(run_dir)
    message = str(error.value)
    assert "1 RGB file(s) added" in message and "1 RGB file(s) removed" in message
    assert "1 RGB file(s) moved to another class" in message
    assert not (run_dir / "matches").exists() or not list((run_dir / "matches").glob("round_*.csv"))
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_resume_goes_by_content_not_file_times(tiny, data_ms_archive, data_rgb_folder, tmp_path):
    """An archive copied or restored from a backup has new file times but the same bytes: it resumes.
    An edit that keeps the size and the time is still caught."""
    run_dir = _cancelled_run(tiny, tmp_path / "run")
    files = sorted(path for root in (data_ms_archive, data_rgb_folder) for path in root.rglob("*") if path.is_file())
    for path in files:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 3_600 * 10**9))
    edited = sorted((data_rgb_folder / "Forest").iterdir())[0]
    original, times = edited.read_bytes(), (edited.stat().st_atime_ns, edited.stat().st_mtime_ns)
    edited.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    os.utime(edited, ns=times)
    with pytest.raises(ValueError) as error:
        resume(run_dir)
    assert "the data of run" in str(error.value)
    assert str(error.value).count("file(s)") == 1 and f"1 RGB file(s) modified (Forest/{edited.name})" in str(error.value)

    edited.write_bytes(original)
    os.utime(edited, ns=times)
    resume(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    recorded = json.loads((run_dir / "data_manifest.json").read_text())
    assert recorded["rgb"][f"Forest/{edited.name}"][2] == times[1]


def test_the_data_check_follows_each_file_and_stops_when_cancelled(tiny):
    """Hashing a large archive takes a while: the user sees it advance and can cancel it."""
    from sembridge_engine.events import Cancelled, CancelToken
    from sembridge_engine.training.dataset import data_manifest

    calls = []
    manifest = data_manifest(tiny, progress=lambda modality, done, total: calls.append((modality, done, total)))
    last = {modality: (done, total) for modality, done, total in calls}
    assert last == {modality: (len(files), len(files)) for modality, files in manifest.items()}
    assert set(last) == {"rgb", "ms"} and all(len(files) > 0 for files in manifest.values())
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        data_manifest(tiny, cancel=token)


def test_a_second_writer_is_refused_and_a_dead_writers_lock_taken_over(tiny, tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.writer_lock():
        with pytest.raises(RunLocked, match=f"PID {os.getpid()}"):
            with folder.writer_lock():
                pass
        assert folder.writer_alive()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder.lock_path.write_text(dead.stdout.strip())
    stale = folder.root / f".checkpoint.{dead.stdout.strip()}-0123abcd.partial.pt"
    stale.write_bytes(b"")
    with folder.writer_lock() as previous:
        assert previous == int(dead.stdout.strip())
    assert not stale.exists() and not folder.writer_alive()


def test_a_run_left_running_by_a_killed_process_reads_as_interrupted(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.update_run_json(status="running")
    assert folder.status == "interrupted" and folder.resumable


def test_a_full_disk_leaves_no_temporary_checkpoint_and_marks_the_run_failed(tiny, tmp_path, monkeypatch):
    from sembridge_engine.training import checkpoint

    def disk_full(state, path):
        Path(path).write_bytes(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train(tiny, run_dir=tmp_path / "run")
    run_dir = tmp_path / "run"
    assert not [path for path in run_dir.rglob("*") if "partial" in path.name or path.suffix == ".tmp"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "No space left" in info["error"]


# -- 7, 9: bundles -----------------------------------------------------------------------------------
def test_a_bundle_member_that_inflates_past_the_limit_is_refused_before_reading(tmp_path):
    bomb = tmp_path / "bomb.sembridge"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA_NAME, b" " * (17 * 2**20))
        archive.writestr("weights.safetensors", b"")
    assert bomb.stat().st_size < 100_000
    with pytest.raises(BundleError, match="more than a bundle may hold"):
        load_bundle(bomb)


def test_deeply_nested_bundle_metadata_is_a_message(tmp_path):
    bundle = tmp_path / "deep.sembridge"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr(METADATA_NAME, "[" * 100_000 + "]" * 100_000)
        archive.writestr("weights.safetensors", b"")
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(bundle)


@pytest.mark.parametrize("change, message", [
    ({"channel_stats": {"mean": [0.5], "std": [0.2]}}, "channel_stats.mean"),
    ({"tile_size": "abc"}, "malformed value"),
    ({"class_names": ["A", "B"]}, "'class_names' lists 2 classes"),
])
def test_export_never_writes_a_bundle_that_cannot_be_loaded(tmp_path, change, message):
    run_dir = make_run_folder(tmp_path / "run")
    info = json.loads((run_dir / "student.json").read_text())
    (run_dir / "student.json").write_text(json.dumps(info | change))
    with pytest.raises(BundleError, match=message):
        export_bundle(run_dir, check_onnx=False)
    assert not (run_dir / "model.sembridge").exists() and not list(run_dir.glob(".*"))


def test_a_huge_image_is_read_reduced_not_decoded_whole(tmp_path):
    huge = tmp_path / "huge.tif"
    profile = {"driver": "GTiff", "width": 12000, "height": 12000, "count": 3, "dtype": "uint8",
               "tiled": True, "sparse_ok": True, "compress": "deflate"}
    with rasterio.open(huge, "w", **profile) as out:
        out.write(np.full((3, 256, 256), 200, dtype=np.uint8), window=rasterio.windows.Window(0, 0, 256, 256))
    array = read_image(huge, as_rgb=True)
    assert array.shape == (3, 4096, 4096)


# -- 10, 11: messages instead of tracebacks ---------------------------------------------------------------
def test_config_files_that_are_not_utf8_or_are_folders_are_messages(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(latin)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_the_cli_prints_one_message_and_no_traceback(tmp_path, capsys):
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    assert cli_main(["train", "--config", str(tmp_path / "bad.toml")]) == 2
    assert cli_main(["train", "--config", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and "not UTF-8" in error and "is a folder" in error


def test_manifest_rows_with_nul_bytes_or_overlong_paths_are_problems(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,labels\nbad\x00name.tif,Forest\n" + "x" * 5000 + ".tif,Forest\n")
    index = discover_manifest(manifest, "ms")
    messages = [problem.message for problem in index.problems]
    assert sum("not a usable path" in message for message in messages) == 2
