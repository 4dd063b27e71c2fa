"""Batch labelling (labelling/batch.py): many scenes, or the row strips of one, shared among torchrun's processes.

Strips must give the whole-scene run's class raster (their windows, scale and radiometry are the whole
scene's), a 2-process torchrun job the one-process run's files byte for byte, and a corrupt scene must be
reported while the others are written. Scenes are real imagery: the demo UC Merced mosaic, and a uint16
copy of its lower part (so radiometry is mapped from percentiles sampled over the whole scene).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import geopandas
import numpy as np
import psutil
import pytest
import rasterio
from PIL import Image

from sembridge_engine.cli import main
from sembridge_engine.events import CancelToken
from sembridge_engine.labelling.batch import INDEX_LAYER, SUMMARY_NAME, label_scenes, plan_jobs, run_jobs, write_batch_outputs
from sembridge_engine.labelling.strips import STRIP_FOLDER
from sembridge_engine.labelling.options import LabelOptions
from sembridge_engine.labelling.scene import label_scene

from .labelling_fixtures import demo_mosaic
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")
REPO = Path(__file__).resolve().parents[2]
OPTIONS = LabelOptions(device="cpu", preview=False)
PREVIEW = OPTIONS.with_changes(preview=True)


def _copy(source: Path, target: Path, rows: slice = slice(None), scale: int = 1, dtype: str = "uint8") -> Path:
    """Real pixels of ``source`` (rows ``rows``, times ``scale``, as ``dtype``) in a new GeoTIFF, georeferenced."""
    with rasterio.open(source) as dataset:
        data = dataset.read()[:, rows]
        transform = dataset.transform @ rasterio.Affine.translation(0, rows.start or 0)
        profile = {**dataset.profile, "height": data.shape[1], "transform": transform, "dtype": dtype,
                   "compress": "deflate", "photometric": "rgb"}
    with rasterio.open(target, "w", **profile) as out:
        out.write(data.astype(dtype) * scale)
    return target


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scenes")
    corrupt = folder / "corrupt.tif"
    corrupt.write_bytes(demo_mosaic().read_bytes()[:4096])  # a truncated download
    return {"mosaic": _copy(demo_mosaic(), folder / "mosaic.tif"),
            "reflectance": _copy(demo_mosaic(), folder / "reflectance.tif", slice(512, None), 40, "uint16"),
            "corrupt": corrupt}


@pytest.fixture(scope="module")
def one_process(scale_bundle, scenes, tmp_path_factory) -> Path:
    """Each good scene labelled whole, as `sembridge label --scene` does in one process."""
    out = tmp_path_factory.mktemp("one")
    for name in ("mosaic", "reflectance"):
        label_scene(scale_bundle, scenes[name], out, OPTIONS)
    return out


def _pixels(path) -> tuple[np.ndarray, object, object]:
    with rasterio.open(path) as dataset:
        return dataset.read(), dataset.transform, dataset.crs


def test_row_strips_give_the_class_raster_of_the_whole_scene(scale_bundle, scenes, one_process, tmp_path):
    out = tmp_path / "strips"
    jobs = plan_jobs(scale_bundle, [scenes["mosaic"], scenes["reflectance"]], OPTIONS, workers=6)
    assert [len([job for job in jobs if job.scene == str(scenes[name])]) for name in ("mosaic", "reflectance")] == [3, 3]
    records = run_jobs(scale_bundle, jobs, out, OPTIONS)
    summary = write_batch_outputs(scale_bundle, jobs, records, out, PREVIEW, 6, 0.0)
    assert [scene["status"] for scene in summary["scenes"]] == ["finished", "finished"]
    for name, scene in zip(("mosaic", "reflectance"), summary["scenes"]):
        assert scene["outputs"]["classes"] == str(out / f"{name}_classes.vrt")
        classes, transform, crs = _pixels(scene["outputs"]["classes"])
        expected, expected_transform, expected_crs = _pixels(one_process / f"{name}_classes.tif")
        assert classes.shape == expected.shape and transform == expected_transform and crs == expected_crs
        assert np.array_equal(classes, expected) and len(np.unique(expected)) > 1
        confidence = _pixels(scene["outputs"]["confidence"])[0]
        np.testing.assert_allclose(confidence, _pixels(one_process / f"{name}_confidence.tif")[0], atol=1e-5)
        with rasterio.open(scene["outputs"]["classes"]) as joined, rasterio.open(one_process / f"{name}_classes.tif") as whole:
            assert joined.colormap(1)[0] == whole.colormap(1)[0] and joined.nodata == whole.nodata
        polygons = geopandas.read_file(scene["outputs"]["polygons"])
        expected_polygons = geopandas.read_file(one_process / f"{name}_classes.gpkg")
        assert list(polygons["class_name"]) == list(expected_polygons["class_name"])
        np.testing.assert_allclose(polygons["area"], expected_polygons["area"], rtol=1e-9)
        np.testing.assert_allclose(polygons["mean_confidence"], expected_polygons["mean_confidence"], atol=1e-5)
    assert not any((out / STRIP_FOLDER).iterdir())
    whole = label_scene(scale_bundle, scenes["mosaic"], tmp_path / "whole", PREVIEW.with_changes(polygons=False))
    with Image.open(summary["scenes"][0]["outputs"]["preview"]) as joined, Image.open(whole.preview) as expected:
        differing = np.nonzero((np.asarray(joined) != np.asarray(expected)).any(axis=2))[0]
    # The preview is a decimated read (1536 -> 1024 rows); through the VRT, GDAL's nearest neighbour can take the
    # class of the next source row at a strip seam (rows 512 and 1024: preview rows 341 and 682), nowhere else.
    assert set(differing.tolist()) <= {341, 682}
    index = geopandas.read_file(out / "batch_index.gpkg", layer=INDEX_LAYER)
    assert sorted(Path(location).name for location in index["location"]) == ["mosaic_classes.vrt", "reflectance_classes.vrt"]
    assert index.crs.to_epsg() == 4326 and index.geometry.is_valid.all() and not index.geometry.is_empty.any()


def test_a_corrupt_scene_is_reported_and_the_others_are_written(scale_bundle, scenes, one_process, tmp_path, capsys):
    out = tmp_path / "batch"
    code = main(["label", "--model", str(scale_bundle.path), "--scenes", str(scenes["corrupt"]), str(scenes["mosaic"]),
                 "--out", str(out), "--device", "cpu", "--no-preview"])
    assert code == 1
    summary = json.loads((out / SUMMARY_NAME).read_text())
    corrupt, mosaic = summary["scenes"]
    assert corrupt["status"] == "failed" and "corrupt.tif" in corrupt["errors"][0] and not corrupt["outputs"]
    assert mosaic["status"] == "finished" and mosaic["jobs"][0]["rank"] == 0
    assert (out / "mosaic_classes.tif").read_bytes() == (one_process / "mosaic_classes.tif").read_bytes()
    assert not list(out.glob("corrupt*"))
    assert "corrupt.tif: failed" in capsys.readouterr().err
    index = geopandas.read_file(summary["index"], layer=INDEX_LAYER)
    assert list(index["scene"]) == [str(scenes["mosaic"])]


def _files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if not path.name.startswith(".")}


def _label_in_strips(bundle, scene: Path, out: Path, options: LabelOptions = OPTIONS) -> dict:
    jobs = plan_jobs(bundle, [scene], options, workers=2)
    assert len(jobs) == 2
    return write_batch_outputs(bundle, jobs, run_jobs(bundle, jobs, out, options), out, options, 2, 0.0)


def test_a_striped_scene_is_one_output_set_replacing_and_replaced_by_a_whole_run(scale_bundle, scenes, one_process, tmp_path):
    out, scene = tmp_path / "out", scenes["reflectance"]
    whole_set = _files(label_scene(scale_bundle, scene, out, OPTIONS).classes.parent)
    striped = _label_in_strips(scale_bundle, scene, out)["scenes"][0]
    strips = {f"reflectance_rows{start}-{stop}_{key}.tif" for start, stop in (job["rows"] for job in striped["jobs"])
              for key in ("classes", "confidence")}
    manifest = json.loads((out / "reflectance_manifest.json").read_text())
    assert manifest["state"] == "complete" and set(manifest["outputs"]) == strips | {
        "reflectance_classes.vrt", "reflectance_confidence.vrt", "reflectance_classes.qml", "reflectance_classes.gpkg",
        "reflectance_summary.json"}
    # whole then striped: only the striped set (and the batch's own files) is left, nothing staged
    assert _files(out) == set(manifest["outputs"]) | {"reflectance_manifest.json", SUMMARY_NAME, "batch_index.gpkg"}
    assert not any((out / STRIP_FOLDER).iterdir())
    assert striped["outputs"]["summary"] == str(out / "reflectance_summary.json")
    assert {Path(path).name for job in striped["jobs"] for path in job["outputs"].values()} == strips | {"reflectance_classes.qml"}

    # the merged summary is a whole run's: the strips' pixels are the whole run's, so their counts are too
    summary = json.loads((out / "reflectance_summary.json").read_text())
    expected = json.loads((one_process / "reflectance_summary.json").read_text())
    for key in ("width", "height", "window", "crs", "bands", "tile", "stride", "scale", "radiometry", "scale_warning",
                "radiometry_warning", "windows", "labelled_pixels", "nodata_pixels", "class_dtype", "class_nodata"):
        assert summary[key] == expected[key], key
    assert [entry["pixels"] for entry in summary["classes"]] == [entry["pixels"] for entry in expected["classes"]]
    assert sum(entry["pixels"] > 0 for entry in summary["classes"]) > 1
    for entry, whole in zip(summary["classes"], expected["classes"]):
        assert entry["share"] == pytest.approx(whole["share"], abs=1e-12)
        # the strips' confidences are read back as float32, the whole run sums them before rounding
        assert (entry["mean_confidence"] is None) == (whole["mean_confidence"] is None)
        if whole["mean_confidence"] is not None:
            assert entry["mean_confidence"] == pytest.approx(whole["mean_confidence"], abs=1e-6)
    # windows straddling the seam are run by both strips
    assert sum(strip["windows"] for strip in summary["strips"]) > summary["windows"]
    assert summary["windows_classified"] + summary["windows_skipped"] == sum(strip["windows"] for strip in summary["strips"])

    # striped then whole: only the whole set is left
    label_scene(scale_bundle, scene, out, OPTIONS)
    assert _files(out) == whole_set | {SUMMARY_NAME, "batch_index.gpkg"}
    assert (out / "reflectance_classes.tif").read_bytes() == (one_process / "reflectance_classes.tif").read_bytes()


def test_a_scene_whose_strips_cannot_be_joined_is_reported_failed(scale_bundle, scenes, tmp_path, monkeypatch):
    label_scene(scale_bundle, scenes["reflectance"], tmp_path, OPTIONS)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    jobs = plan_jobs(scale_bundle, [scenes["reflectance"]], OPTIONS, workers=2)
    records = run_jobs(scale_bundle, jobs, tmp_path, OPTIONS)

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("sembridge_engine.labelling.writers.write_polygons", full_disk)
    summary = write_batch_outputs(scale_bundle, jobs, records, tmp_path, OPTIONS, 2, 0.0)
    (scene,) = summary["scenes"]
    assert [job["status"] for job in scene["jobs"]] == ["finished", "finished"] and scene["status"] == "failed"
    assert scene["errors"] == ["joining the strips: OSError: No space left on device"]
    assert not scene["outputs"] and not any(job["outputs"] for job in scene["jobs"])
    assert json.loads((tmp_path / SUMMARY_NAME).read_text())["scenes"][0]["status"] == "failed"
    assert summary["index"] is None and not any((tmp_path / STRIP_FOLDER).iterdir())
    # the earlier whole-scene set is untouched and nothing of the strips is left
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert _files(tmp_path) == set(before) | {SUMMARY_NAME}


def test_a_striped_scene_cancelled_after_its_first_strip_leaves_its_previous_set(scale_bundle, scenes, tmp_path):
    label_scene(scale_bundle, scenes["reflectance"], tmp_path, OPTIONS)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    token = CancelToken()
    jobs = plan_jobs(scale_bundle, [scenes["reflectance"]], OPTIONS, workers=2)
    records = run_jobs(scale_bundle, jobs, tmp_path, OPTIONS, cancel=token, report=lambda record: token.cancel())
    assert [record.status for record in records] == ["finished", "cancelled"]
    (scene,) = write_batch_outputs(scale_bundle, jobs, records, tmp_path, OPTIONS, 2, 0.0)["scenes"]
    assert scene["status"] == "cancelled" and not scene["outputs"] and not any(job["outputs"] for job in scene["jobs"])
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert _files(tmp_path) == set(before) | {SUMMARY_NAME} and not any((tmp_path / STRIP_FOLDER).iterdir())


def test_scenes_with_the_same_name_are_refused_before_any_work(scale_bundle, scenes, tmp_path):
    other = tmp_path / "elsewhere" / "mosaic.tif"
    other.parent.mkdir()
    other.write_bytes(scenes["mosaic"].read_bytes())
    with pytest.raises(ValueError, match="several scenes are named mosaic"):
        label_scenes(scale_bundle, [scenes["mosaic"], other], tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists()


def _torchrun_command(arguments: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
            "-m", "sembridge_engine.cli", "label", *arguments, "--device", "cpu", "--no-preview"]


def _torchrun_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _torchrun(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun_command(arguments), env=_torchrun_environment(), cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_write_the_class_rasters_of_one_process_byte_for_byte(scale_bundle, scenes, one_process, tmp_path):
    out = tmp_path / "two"
    finished = _torchrun(["--model", str(scale_bundle.path), "--out", str(out),
                          "--scenes", *(str(scenes[name]) for name in ("mosaic", "reflectance", "corrupt"))])
    assert finished.returncode == 1, finished.stdout + finished.stderr   # one scene failed
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["processes"] == 2
    statuses = {Path(scene["scene"]).stem: (scene["status"], scene["jobs"][0]["rank"]) for scene in summary["scenes"]}
    assert statuses["mosaic"][0] == statuses["reflectance"][0] == "finished" and statuses["corrupt"][0] == "failed"
    assert statuses["mosaic"][1] != statuses["reflectance"][1]   # the two scenes ran on different ranks
    for name in ("mosaic", "reflectance"):
        assert (out / f"{name}_classes.tif").read_bytes() == (one_process / f"{name}_classes.tif").read_bytes(), name
    assert "labelled 2 of 3 scenes" in finished.stdout


@pytest.mark.slow
def test_one_scene_under_torchrun_is_labelled_in_strips_joined_by_a_vrt(scale_bundle, scenes, one_process, tmp_path):
    out = tmp_path / "strips"
    finished = _torchrun(["--model", str(scale_bundle.path), "--out", str(out), "--scene", str(scenes["reflectance"])])
    assert finished.returncode == 0, finished.stdout + finished.stderr
    (scene,) = json.loads((out / SUMMARY_NAME).read_text())["scenes"]
    assert scene["status"] == "finished" and sorted(job["rank"] for job in scene["jobs"]) == [0, 1]
    classes, transform, _ = _pixels(out / "reflectance_classes.vrt")
    expected, expected_transform, _ = _pixels(one_process / "reflectance_classes.tif")
    assert transform == expected_transform and np.array_equal(classes, expected)


def _scene_rows(source: Path, target: Path, rows: slice, repeat: int = 1) -> Path:
    """Rows ``rows`` of a real scene, stacked ``repeat`` times, as a georeferenced GeoTIFF."""
    with rasterio.open(source) as dataset:
        data = np.concatenate([dataset.read()[:, rows]] * repeat, axis=1)
        profile = {**dataset.profile, "height": data.shape[1], "compress": "deflate", "photometric": "rgb"}
    with rasterio.open(target, "w", **profile) as out:
        out.write(data)
    return target


@pytest.mark.slow
def test_a_cancel_on_one_process_stops_every_process(scale_bundle, tmp_path):
    """Rank 1 gets SIGINT after its first scene: rank 0, midway through a scene many times larger, stops too."""
    big = _scene_rows(demo_mosaic(), tmp_path / "big.tif", slice(None), repeat=8)   # seconds of work on a quiet machine
    small = [_scene_rows(demo_mosaic(), tmp_path / f"small{index}.tif", slice(384 * index, 384 * (index + 1)))
             for index in range(3)]
    out = tmp_path / "out"
    process = subprocess.Popen(_torchrun_command(["--model", str(scale_bundle.path), "--out", str(out),
                                                  "--scenes", str(big), *map(str, small)]),
                               env=_torchrun_environment(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("rank 1: small0: "):
                break
        assert lines[-1].startswith("rank 1: small0: finished"), "".join(lines)
        (second_rank,) = [child for child in psutil.Process(process.pid).children(recursive=True)
                          if child.environ().get("RANK") == "1"]
        second_rank.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=300)   # no rank hangs: both leave long before big.tif could be finished
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert "rank 0: big: cancelled" in output and "rank 1: small1: cancelled" in output, output
    summary = json.loads((out / SUMMARY_NAME).read_text())
    statuses = {Path(scene["scene"]).stem: (scene["status"], scene["jobs"][0]["rank"]) for scene in summary["scenes"]}
    assert statuses == {"big": ("cancelled", 0), "small0": ("finished", 1), "small1": ("cancelled", 1), "small2": ("cancelled", 1)}
    manifest = json.loads((out / "small0_manifest.json").read_text())
    assert manifest["state"] == "complete"
    assert _files(out) == {*manifest["outputs"], "small0_manifest.json", SUMMARY_NAME, "batch_index.gpkg"}
    assert "labelled 1 of 4 scenes" in output
