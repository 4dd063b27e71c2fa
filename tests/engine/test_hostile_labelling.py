"""Hostile inputs to classification and scene labelling (issue 13, labelling side), one test per case, each
built from real-format files: NaN/inf pixels, broken models, re-labelling into a used folder, class counts
beyond 255, absurd window and tile sizes, huge and empty scenes, a failing GeoPackage write."""
from __future__ import annotations

import errno
import io
import os
import json
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from safetensors.torch import load_file, save_file

from sembridge_engine.bundle import BundleError, load_bundle
from sembridge_engine.colours import hex_to_rgb
from sembridge_engine.labelling.classify import classify_files, tile_windows
from sembridge_engine.labelling.options import MAX_WINDOW, LabelOptions, SceneError
from sembridge_engine.labelling.scene import label_scene, plan_scene
from sembridge_engine.labelling.writers import class_encoding
from sembridge_engine.training.outputs import export_bundle

from .labelling_fixtures import DEMO_CLASSES, demo_rgb_files, demo_scene, make_run_folder
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")
OPTIONS = LabelOptions(device="cpu", stride=24)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle without footprint (windows of its 32-px tile) so the demo Landsat crop is labelled directly."""
    return load_bundle(export_bundle(make_run_folder(tmp_path_factory.mktemp("hostile") / "run"), check_onnx=False))


def _scene(path: Path, data: np.ndarray, **changes) -> Path:
    with rasterio.open(demo_scene()) as source:
        profile = {**source.profile, "count": data.shape[0], "dtype": str(data.dtype), "width": data.shape[2],
                   "height": data.shape[1], **changes}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
    return path


def _demo_pixels() -> np.ndarray:
    with rasterio.open(demo_scene()) as source:
        return source.read()


def _rewrite_bundle(path: Path, out: Path, *, metadata=None, tensors=None) -> Path:
    """A copy of the bundle at ``path`` with its metadata and/or safetensors weights changed."""
    from safetensors.torch import save

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if metadata is not None:
        members["metadata.json"] = json.dumps(metadata(json.loads(members["metadata.json"]))).encode()
    if tensors is not None:
        from safetensors.torch import load

        members["weights.safetensors"] = save(tensors(load(members["weights.safetensors"])))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    out.write_bytes(buffer.getvalue())
    return out


def test_nan_and_inf_pixels_never_reach_a_probability(bundle, tmp_path):
    """float32 reflectance with NaN nodata, stray NaN and inf pixels in single bands and a NaN block."""
    data = _demo_pixels().astype(np.float32) / 255
    data[:, (_demo_pixels() == 0).all(axis=0)] = np.nan
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, data.shape[1], 400), rng.integers(0, data.shape[2], 400)
    data[rng.integers(0, 3, 400), rows, cols] = np.where(np.arange(400) % 2, np.nan, np.inf)
    data[:, 150:190, 200:260] = np.nan
    scene = _scene(tmp_path / "nan.tif", data, nodata=float("nan"))
    result = label_scene(bundle, scene, tmp_path / "out", OPTIONS.with_changes(probabilities=True, polygons=False))
    with rasterio.open(result.classes) as classes, rasterio.open(result.probabilities) as probabilities, \
            rasterio.open(result.confidence) as confidence:
        labels, shares, best = classes.read(1), probabilities.read(), confidence.read(1)
    broken = ~np.isfinite(data).all(axis=0)
    assert (labels[broken] == 255).all() and (labels[~broken] != 255).all()
    assert np.isfinite(shares).all() and np.isfinite(best).all()
    np.testing.assert_allclose(shares[:, ~broken].sum(axis=0), 1.0, atol=1e-4)
    summary = json.loads(result.summary.read_text())
    assert summary["nodata_pixels"] == int(broken.sum())
    assert all(entry["mean_confidence"] is None or np.isfinite(entry["mean_confidence"]) for entry in summary["classes"])


def test_classify_a_float_tile_with_nan_pixels_gives_finite_probabilities(bundle, tmp_path):
    with Image.open(demo_rgb_files(1)[0]) as image:
        pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1).astype(np.float32)
    pixels[:, :40, :40] = np.nan
    pixels[1, 100:110, :] = np.inf
    path = tmp_path / "nan_tile.tif"
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=3,
                       dtype="float32", nodata=float("nan")) as dataset:
        dataset.write(pixels)
    result = classify_files(bundle, [path], top_k=len(DEMO_CLASSES), device="cpu")[0]
    assert result.error is None and all(np.isfinite(probability) for _, probability in result.top)
    assert sum(probability for _, probability in result.top) == pytest.approx(1.0, abs=1e-5)


def test_broken_models_are_refused_not_run(bundle, tmp_path, capsys):
    from sembridge_engine.cli import main

    zero_std = _rewrite_bundle(bundle.path, tmp_path / "std0.sembridge",
                               metadata=lambda meta: {**meta, "channel_stats": {**meta["channel_stats"], "std": [0.0, 0.0, 0.0]}})
    with pytest.raises(BundleError, match=r"std0\.sembridge.*'channel_stats\.std' must be above 0"):
        load_bundle(zero_std)
    assert main(["classify", "--model", str(zero_std), str(demo_rgb_files(1)[0]), "--backend", "torch"]) == 1
    assert "must be above 0" in capsys.readouterr().err

    def poison(tensors):
        tensors["classifier.weight"][0, 0] = float("nan")
        return tensors

    nan_weights = load_bundle(_rewrite_bundle(bundle.path, tmp_path / "nan.sembridge", tensors=poison))
    with pytest.raises(ValueError, match="NaN or infinite probabilities"):
        classify_files(nan_weights, demo_rgb_files(1)[:2], device="cpu")
    with pytest.raises(ValueError, match="NaN or infinite probabilities"):
        label_scene(nan_weights, demo_scene(), tmp_path / "nan_map", OPTIONS)
    assert not (tmp_path / "nan_map" / "scene_subset_classes.tif").exists()


def _outputs(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_relabelling_replaces_the_whole_previous_set(bundle, tmp_path):
    out = tmp_path / "maps"
    first = label_scene(bundle, demo_scene(), out, OPTIONS.with_changes(probabilities=True))
    assert {"scene_subset_probabilities.tif", "scene_subset_classes.gpkg", "scene_subset_manifest.json"} <= _outputs(out)
    second = label_scene(bundle, demo_scene(), out, OPTIONS.with_changes(polygons=False, preview=False))
    assert _outputs(out) == {path.name for path in second.paths()}
    assert not {"scene_subset_probabilities.tif", "scene_subset_classes.gpkg", "scene_subset_preview.png"} & _outputs(out)
    manifest = json.loads(second.manifest.read_text())
    assert manifest["state"] == "complete" and sorted(manifest["outputs"]) == sorted(_outputs(out) - {second.manifest.name})
    assert manifest["scene"] == str(demo_scene().resolve()) and first.manifest == second.manifest

    # Outputs of an older SemBridge (no manifest) and a set left half-replaced by a crash are both cleared.
    second.manifest.unlink()
    (out / "scene_subset_probabilities.tif").write_bytes(b"an older labelling's file")
    label_scene(bundle, demo_scene(), out, OPTIONS.with_changes(polygons=False, preview=False))
    assert "scene_subset_probabilities.tif" not in _outputs(out)
    (out / "scene_subset_preview.png").write_bytes(b"left by a crash")
    second.manifest.write_text(json.dumps({**manifest, "state": "replacing", "outputs": [*manifest["outputs"], "scene_subset_preview.png"]}))
    label_scene(bundle, demo_scene(), out, OPTIONS.with_changes(polygons=False, preview=False))
    assert "scene_subset_preview.png" not in _outputs(out) and json.loads(second.manifest.read_text())["state"] == "complete"


def test_a_failed_or_cancelled_relabelling_keeps_the_previous_set_and_another_scene_is_refused(bundle, tmp_path, monkeypatch):
    from sembridge_engine.events import BatchProgress, Cancelled, CancelToken

    out = tmp_path / "maps"
    label_scene(bundle, demo_scene(), out, OPTIONS)
    before = {name: (out / name).read_bytes() for name in _outputs(out)}
    token = CancelToken()

    def cancel_mid_scene(event):
        if isinstance(event, BatchProgress) and event.done == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        label_scene(bundle, demo_scene(), out, OPTIONS.with_changes(probabilities=True), callback=cancel_mid_scene, cancel=token)
    assert {name: (out / name).read_bytes() for name in _outputs(out)} == before

    def full_disk(*args, **kwargs):
        import pyogrio.errors

        raise pyogrio.errors.DataSourceError("sqlite3_exec(CREATE TABLE) failed: database or disk is full")

    monkeypatch.setattr(geopandas.GeoDataFrame, "to_file", full_disk)
    with pytest.raises(OSError, match="cannot write the GeoPackage of class polygons .*disk is full"):
        label_scene(bundle, demo_scene(), out, OPTIONS)
    assert {name: (out / name).read_bytes() for name in _outputs(out)} == before  # no temporary left either

    def no_space(*args, **kwargs):  # what PIL raises writing the preview onto a full disk: no file named
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.undo()  # the GeoPackage writes again
    monkeypatch.setattr(Image.Image, "save", no_space)
    with pytest.raises(OSError, match=f"No space left on device while writing it .*{out.name}"):
        label_scene(bundle, demo_scene(), out, OPTIONS)
    assert {name: (out / name).read_bytes() for name in _outputs(out)} == before

    namesake = tmp_path / "elsewhere" / "scene_subset.tif"
    namesake.parent.mkdir()
    namesake.write_bytes(demo_scene().read_bytes())
    with pytest.raises(SceneError, match=r"holds the outputs of another scene with the same name"):
        label_scene(bundle, namesake, out, OPTIONS)
    assert {name: (out / name).read_bytes() for name in _outputs(out)} == before


def test_class_rasters_hold_300_classes_with_ids_beyond_255(tmp_path):
    """A 300-class model whose trained classes sit at ids 255..260: uint16, nodata 65535, colour table and QML agree."""
    names = [f"class_{index:03d}" for index in range(300)]
    run = make_run_folder(tmp_path / "run", class_names=names, fit_steps=30)
    permutation = list(range(300))  # output row 255 + k takes trained class k's weights, and the other way round
    for trained in range(len(DEMO_CLASSES)):
        permutation[trained], permutation[255 + trained] = permutation[255 + trained], permutation[trained]
    tensors = load_file(str(run / "student.safetensors"))
    for name in ("classifier.weight", "classifier.bias"):
        tensors[name] = tensors[name][permutation].contiguous()
    save_file(tensors, str(run / "student.safetensors"))
    info = json.loads((run / "student.json").read_text())
    info["class_names"] = [names[index] for index in permutation]
    (run / "student.json").write_text(json.dumps(info))
    big = load_bundle(export_bundle(run, check_onnx=False))
    result = label_scene(big, demo_scene(), tmp_path / "out", OPTIONS)
    with rasterio.open(result.classes) as dataset:
        classes, colormap = dataset.read(1), dataset.colormap(1)
        assert dataset.dtypes[0] == "uint16" and dataset.nodata == 65535
    present = set(np.unique(classes)) - {65535}
    assert present and min(present) >= 255, present  # the trained classes, written as themselves
    assert all(colormap[index][:3] == hex_to_rgb(big.colours[index]) for index in present) and colormap[65535][3] == 0
    entries = ElementTree.parse(result.style).getroot().findall(".//paletteEntry")
    assert len(entries) == 300 and {entries[index].get("label") for index in present} == {big.class_names[index] for index in present}
    summary = json.loads(result.summary.read_text())
    assert summary["class_dtype"] == "uint16" and summary["labelled_pixels"] == int((classes != 65535).sum())
    assert sum(entry["pixels"] for entry in summary["classes"] if entry["class_id"] >= 255) == summary["labelled_pixels"]
    polygons = geopandas.read_file(result.polygons)
    assert set(polygons["class_id"]) == present and all(polygons["class_name"] == [big.class_names[i] for i in polygons["class_id"]])
    assert (class_encoding(255), class_encoding(256)) == (("uint8", 255), ("uint16", 65535))


def test_absurd_windows_and_tiles_are_refused_with_a_message(bundle, tmp_path, capsys):
    from sembridge_engine.cli import main

    base = ["label", "--model", str(bundle.path), "--scene", str(demo_scene()), "--out", str(tmp_path / "x"), "--device", "cpu"]
    for flag, value, message in (("--tile", "0", "tile must be a positive number"), ("--stride", "0", "stride must be a positive number"),
                                 ("--tile", "100000", f"beyond the limit of {MAX_WINDOW} scene pixels")):
        assert main([*base, flag, value]) == 1
        assert message in capsys.readouterr().err
    huge_tile = _rewrite_bundle(bundle.path, tmp_path / "tile.sembridge", metadata=lambda meta: {**meta, "tile_size": 100000})
    with pytest.raises(BundleError, match=r"'tile_size' 100000 is beyond"):
        load_bundle(huge_tile)
    sparse = tmp_path / "wide.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=40000, height=40000, count=3, dtype="uint8", nodata=0, crs="EPSG:32610",
                       transform=Affine(0.3, 0, 7e5, 0, -0.3, 4.1e6), tiled=True, sparse_ok=True):
        pass
    with pytest.raises(SceneError, match=r"windows of 10000 scene pixels .* beyond the limit of 4096"):
        plan_scene(bundle, sparse, LabelOptions(device="cpu", footprint=3000.0))
    from sembridge_engine.labelling.source import open_source

    source = open_source(sparse, bundle, LabelOptions(device="cpu", tile=2048))
    with source.dataset:
        assert source.batch == 5  # a batch of 2048-px windows is held to 256 MiB of float32 inputs


def test_empty_huge_scene_is_planned_honestly_and_labelled_quickly(bundle, tmp_path):
    """An all-nodata 12000 x 12000 sparse GeoTIFF: every window skipped, the estimate is not zero, outputs are nodata."""
    scene = tmp_path / "empty.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=12000, height=12000, count=3, dtype="uint8", nodata=0, crs="EPSG:32610",
                       transform=Affine(10, 0, 7e5, 0, -10, 4.1e6), tiled=True, sparse_ok=True):
        pass
    options = LabelOptions(device="cpu", tile=128, polygons=False, preview=False)
    plan = plan_scene(bundle, scene, options)
    assert plan.windows_skipped_estimate == plan.windows and plan.seconds_estimate > 0  # reading is not free
    result = label_scene(bundle, scene, tmp_path / "out", options)
    summary = json.loads(result.summary.read_text())
    assert summary["windows_classified"] == 0 and summary["labelled_pixels"] == 0 and summary["nodata_pixels"] == 12000 ** 2
    with rasterio.open(result.classes) as dataset:
        assert (dataset.read(1, window=rasterio.windows.Window(5000, 5000, 512, 512)) == 255).all()
    assert result.classes.stat().st_size < 2**20  # nodata blocks are not written (sparse GeoTIFF)


def test_classify_a_huge_image_reads_it_reduced_to_the_model_input(bundle, tmp_path):
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=12000, height=12000, count=3, dtype="uint8", tiled=True,
                       sparse_ok=True, compress="deflate") as dataset:
        dataset.write(np.full((3, 512, 512), 90, np.uint8), window=rasterio.windows.Window(0, 0, 512, 512))
    windows, warning = tile_windows(bundle, huge)
    assert len(windows) == 1 and max(windows[0].shape[1:]) == bundle.tile_size and warning is None
    result = classify_files(bundle, [huge], device="cpu")[0]
    assert result.error is None and result.top
