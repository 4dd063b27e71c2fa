"""Scene labelling on the real demo Landsat subset: outputs, georeferencing, nodata, overlap averaging,
band selection, geographic CRS, bounded reads, cancel and the pre-flight plan."""
from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
from PIL import Image

from sembridge_engine.events import BatchProgress, CancelToken, Cancelled
from sembridge_engine.bundle import load_bundle
from sembridge_engine.training.outputs import export_bundle
from sembridge_engine.labelling.options import LabelOptions, PixelWindow
from sembridge_engine.labelling.predictor import make_predictor
from sembridge_engine.colours import hex_to_rgb
from sembridge_engine.labelling.scene import SceneError, label_scene, plan_scene, scene_layout
from sembridge_engine.labelling.windows import fill_invalid

from .labelling_fixtures import DEMO_CLASSES, demo_scene, make_run_folder
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SCENE_OUTPUTS = {"scene_subset_classes.tif", "scene_subset_classes.qml", "scene_subset_confidence.tif",
                 "scene_subset_probabilities.tif", "scene_subset_classes.gpkg", "scene_subset_preview.png",
                 "scene_subset_summary.json", "scene_subset_manifest.json"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(export_bundle(make_run_folder(tmp_path_factory.mktemp("label") / "run"), check_onnx=False))


@pytest.fixture(scope="module")
def labelled(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled")
    events = []
    result = label_scene(bundle, demo_scene(), out, LabelOptions(stride=24, device="cpu", probabilities=True), callback=events.append)
    return result, out, events


def _read(path: Path, band: int | None = None):
    with rasterio.open(path) as dataset:
        return dataset.read(band) if band else dataset.read(), dataset.profile, dataset


def _scene_valid(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return ~(dataset.read() == dataset.nodata).all(axis=0)


def _write_like(path: Path, data: np.ndarray, profile: dict, **changes) -> Path:
    profile = {**profile, "count": data.shape[0], "dtype": str(data.dtype), **changes}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
    return path


def test_label_writes_every_output_with_the_scenes_georeferencing(labelled):
    result, out, events = labelled
    assert {path.name for path in out.iterdir()} == SCENE_OUTPUTS
    assert set(result.paths()) == {out / name for name in SCENE_OUTPUTS}
    classes, profile, dataset = _read(result.classes, 1)
    with rasterio.open(demo_scene()) as scene:
        assert dataset.crs == scene.crs and dataset.crs.to_epsg() == 32618
        assert dataset.transform == scene.transform
        assert (dataset.width, dataset.height) == (scene.width, scene.height)
    assert profile["dtype"] == "uint8" and profile["nodata"] == 255
    assert profile["blockxsize"] == 256 and profile["blockysize"] == 256 and profile["compress"] == "deflate"
    with rasterio.open(result.classes) as dataset:
        colormap = dataset.colormap(1)
    colours = [entry["colour"] for entry in json.loads(result.summary.read_text())["classes"]]
    assert len(colours) == len(DEMO_CLASSES)
    assert [colormap[index][:3] for index in range(len(colours))] == [hex_to_rgb(colour) for colour in colours]
    assert colormap[255][3] == 0
    progress = [event for event in events if isinstance(event, BatchProgress)]
    assert progress and progress[-1].done == progress[-1].total == len(scene_layout(320, 288, 32, 24).ys)


def test_nodata_border_stays_nodata_and_every_valid_pixel_is_labelled(labelled):
    result, _, _ = labelled
    valid = _scene_valid(demo_scene())
    assert 0.2 < valid.mean() < 0.9, "the demo subset has a black border"
    classes, _, _ = _read(result.classes, 1)
    confidence, confidence_profile, _ = _read(result.confidence, 1)
    assert np.array_equal(classes != 255, valid)
    assert (confidence[~valid] == confidence_profile["nodata"]).all()
    assert (confidence[valid] >= 1 / len(DEMO_CLASSES) - 1e-6).all() and (confidence[valid] <= 1 + 1e-6).all()
    probabilities, _, _ = _read(result.probabilities)
    assert probabilities.shape[0] == len(DEMO_CLASSES)
    np.testing.assert_allclose(probabilities[:, valid].sum(axis=0), 1.0, atol=1e-4)
    assert np.array_equal(probabilities[:, valid].argmax(axis=0), classes[valid])
    summary = json.loads(result.summary.read_text())
    assert summary["labelled_pixels"] == int(valid.sum()) and summary["windows_skipped"] == result.windows_skipped > 0
    assert sum(entry["share"] for entry in summary["classes"]) == pytest.approx(1.0)


def test_overlapping_windows_are_averaged_per_pixel(bundle, labelled):
    """Brute force: classify every window on its own (nodata pixels filled with the window's band medians)
    and average over each pixel's covering windows."""
    result, _, _ = labelled
    with rasterio.open(demo_scene()) as dataset:
        scene = dataset.read()
    valid = _scene_valid(demo_scene())
    layout = scene_layout(scene.shape[2], scene.shape[1], 32, 24)
    assert layout.xs[-1] + 32 == scene.shape[2] and layout.ys[-1] + 32 == scene.shape[1]  # edge windows shifted inside
    origins = [(int(y), int(x)) for y in layout.ys for x in layout.xs if valid[y:y + 32, x:x + 32].any()]
    assert len(origins) == layout.windows - result.windows_skipped
    windows = fill_invalid(np.stack([scene[:, y:y + 32, x:x + 32] for y, x in origins]),
                           np.stack([valid[y:y + 32, x:x + 32] for y, x in origins]))
    window_probabilities = make_predictor(bundle, "cpu").predict(windows)
    total = np.zeros((len(DEMO_CLASSES), *scene.shape[1:]))
    count = np.zeros(scene.shape[1:])
    for (y, x), probabilities in zip(origins, window_probabilities):
        total[:, y:y + 32, x:x + 32] += probabilities[:, None, None]
        count[y:y + 32, x:x + 32] += 1
    expected = total[:, valid] / count[valid]
    written, _, _ = _read(result.probabilities)
    np.testing.assert_allclose(written[:, valid], expected, atol=1e-5)


def test_qgis_style_geopackage_and_preview(labelled, bundle):
    result, _, _ = labelled
    root = ElementTree.parse(result.style).getroot()
    entries = root.findall("./pipe/rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    assert [entry.get("label") for entry in entries] == DEMO_CLASSES
    assert [entry.get("color") for entry in entries] == bundle.colours
    assert [int(entry.get("value")) for entry in entries] == list(range(len(DEMO_CLASSES)))

    polygons = geopandas.read_file(result.polygons)
    assert list(polygons.columns) == ["class_id", "class_name", "mean_confidence", "area", "geometry"]
    assert set(polygons["class_name"]) <= set(DEMO_CLASSES) and len(polygons) >= 1
    assert polygons.crs.to_epsg() == 32618
    classes, _, dataset = _read(result.classes, 1)
    pixel_area = abs(dataset.transform.a * dataset.transform.e)
    assert polygons["area"].sum() == pytest.approx((classes != 255).sum() * pixel_area, rel=1e-6)
    assert polygons["area"].to_numpy() == pytest.approx(polygons.geometry.area.to_numpy())
    for row in polygons.itertuples():
        assert row.class_name == DEMO_CLASSES[row.class_id] and 0 < row.mean_confidence <= 1
        assert row.area == pytest.approx((classes == row.class_id).sum() * pixel_area, rel=1e-6)

    with Image.open(result.preview) as preview:
        assert preview.format == "PNG" and preview.height >= 288 and preview.width > 320  # map plus legend panel
        legend = np.asarray(preview.convert("RGB"))[:, 320:]
    swatches = {tuple(pixel) for pixel in legend.reshape(-1, 3)}
    assert all(hex_to_rgb(colour) in swatches for colour in bundle.colours)


def test_geographic_crs_scene_keeps_its_crs_and_transform(bundle, tmp_path):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(demo_scene()) as source:
        transform, width, height = calculate_default_transform(source.crs, "EPSG:4326", source.width, source.height, *source.bounds)
        data = np.zeros((source.count, height, width), dtype=np.uint8)
        reproject(source.read(), data, src_transform=source.transform, src_crs=source.crs, dst_transform=transform,
                  dst_crs="EPSG:4326", resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
        profile = {**source.profile, "crs": "EPSG:4326", "transform": transform, "width": width, "height": height}
    geographic = _write_like(tmp_path / "geographic.tif", data, profile)
    result = label_scene(bundle, geographic, tmp_path / "out", LabelOptions(device="cpu"))
    with rasterio.open(result.classes) as dataset, rasterio.open(geographic) as scene:
        assert dataset.crs.to_epsg() == 4326 and dataset.transform == scene.transform
        assert (dataset.width, dataset.height) == (width, height)
        assert np.array_equal(dataset.read(1) != 255, ~(scene.read() == 0).all(axis=0))
    polygons = geopandas.read_file(result.polygons)
    assert polygons.crs.to_epsg() == 4326 and (polygons["area"] > 0).all()


def test_band_selection_from_descriptions_override_and_clear_error(bundle, tmp_path, labelled):
    reference, _, _ = labelled
    with rasterio.open(demo_scene()) as source:
        rgb, profile = source.read(), source.profile
    four = np.concatenate([np.full_like(rgb[:1], 7), rgb])  # a 'nir' band first, then R, G, B
    described = _write_like(tmp_path / "described.tif", four, profile, photometric="MINISBLACK")
    with rasterio.open(described, "r+") as dataset:
        for index, name in enumerate(["nir", "Red", "Green", "Blue"], start=1):
            dataset.set_band_description(index, name)
    result = label_scene(bundle, described, tmp_path / "described", LabelOptions(stride=24, device="cpu", polygons=False))
    assert np.array_equal(_read(result.classes, 1)[0], _read(reference.classes, 1)[0])

    anonymous = _write_like(tmp_path / "anonymous.tif", four, profile, photometric="MINISBLACK")
    with pytest.raises(SceneError, match=r"anonymous\.tif: has 4 bands .* --bands"):
        label_scene(bundle, anonymous, tmp_path / "anonymous", LabelOptions(device="cpu"))
    assert not (tmp_path / "anonymous").exists() or not any((tmp_path / "anonymous").iterdir())
    chosen = label_scene(bundle, anonymous, tmp_path / "chosen", LabelOptions(bands=[2, 3, 4], stride=24, device="cpu", polygons=False))
    assert np.array_equal(_read(chosen.classes, 1)[0], _read(reference.classes, 1)[0])
    with pytest.raises(SceneError, match=r"band\(s\) \[5\] do not exist"):
        label_scene(bundle, anonymous, tmp_path / "bad", LabelOptions(bands=[2, 3, 5], device="cpu"))


def test_reads_stay_within_one_block_whatever_the_scene_size(bundle, tmp_path, monkeypatch):
    with rasterio.open(demo_scene()) as source:
        data, profile = source.read(), source.profile
    mosaic = _write_like(tmp_path / "mosaic.tif", np.tile(data, (1, 3, 3)), profile, width=data.shape[2] * 3,
                         height=data.shape[1] * 3, tiled=True, blockxsize=256, blockysize=256)
    largest: dict[str, int] = {}
    original_read = rasterio.io.DatasetReader.read

    def recording_read(self, *args, **kwargs):
        array = original_read(self, *args, **kwargs)
        largest[current] = max(largest.get(current, 0), int(np.prod(array.shape[-2:])))
        return array

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", recording_read)
    tile, stride, batch, block = 32, 32, 8, 128
    for current, scene in (("small", demo_scene()), ("large", mosaic)):
        label_scene(bundle, scene, tmp_path / current, LabelOptions(tile=tile, stride=stride, batch=batch, block=block, device="cpu"))
    limit = max(block * block, tile * ((batch - 1) * stride + tile))
    assert largest["large"] <= limit and largest["small"] <= limit
    assert largest["large"] < data.size  # far smaller than even the small scene


def test_cancel_mid_scene_leaves_no_files(bundle, tmp_path):
    token = CancelToken()

    def cancel_after_first_strip(event):
        if isinstance(event, BatchProgress) and event.done == 2:
            token.cancel()

    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        label_scene(bundle, demo_scene(), out, LabelOptions(device="cpu", probabilities=True), callback=cancel_after_first_strip, cancel=token)
    assert list(out.iterdir()) == []


def test_plan_estimates_windows_skips_memory_and_time(bundle, labelled):
    result, _, _ = labelled
    plan = plan_scene(bundle, demo_scene(), LabelOptions(stride=24, device="cpu"))
    assert (plan.tile, plan.stride, plan.band_indexes, plan.nodata) == (32, 24, [1, 2, 3], 0.0)
    assert plan.windows == result.windows
    assert abs(plan.windows_skipped_estimate - result.windows_skipped) <= 0.1 * result.windows
    assert 1e6 < plan.memory_bytes < 500e6 and plan.seconds_estimate > 0


def test_scene_smaller_than_a_window_and_bad_options(bundle, tmp_path):
    with rasterio.open(demo_scene()) as source:
        window = rasterio.windows.Window(150, 120, 25, 20)
        crop, profile = source.read(window=window), {**source.profile, "transform": source.window_transform(window)}
    small = _write_like(tmp_path / "small.tif", crop, profile, width=25, height=20)
    result = label_scene(bundle, small, tmp_path / "small", LabelOptions(device="cpu"))
    classes, _, dataset = _read(result.classes, 1)
    assert classes.shape == (20, 25) and (classes != 255).all() and dataset.transform == profile["transform"]
    with pytest.raises(SceneError, match="stride must be between 1 and the window size 32"):
        label_scene(bundle, small, tmp_path / "x", LabelOptions(stride=40, device="cpu"))
    with pytest.raises(SceneError, match=r"missing\.tif: scene not found"):
        label_scene(bundle, tmp_path / "missing.tif", tmp_path / "x", LabelOptions(device="cpu"))


def test_label_command(bundle, tmp_path, capsys):
    from sembridge_engine.cli import main

    out = tmp_path / "cli"
    code = main(["label", "--model", str(bundle.path), "--scene", str(demo_scene()), "--out", str(out),
                 "--tile", "48", "--stride", "32", "--batch", "16", "--bands", "1,2,3", "--device", "cpu", "--no-polygons"])
    assert code == 0
    assert (out / "scene_subset_classes.tif").is_file() and not (out / "scene_subset_classes.gpkg").exists()
    assert "windows" in capsys.readouterr().out
    assert main(["label", "--model", str(bundle.path), "--scene", str(demo_scene()), "--out", str(out), "--bands", "1,2"]) == 1
    assert "--bands lists 2 band(s)" in capsys.readouterr().err


def test_nodata_override_internal_mask_and_float_or_uint16_scenes_scaled_like_training(bundle, tmp_path, labelled):
    reference, _, _ = labelled
    with rasterio.open(demo_scene()) as source:
        data, profile = source.read(), source.profile
    untagged = _write_like(tmp_path / "untagged.tif", data, profile, nodata=None)
    everything = label_scene(bundle, untagged, tmp_path / "all", LabelOptions(stride=24, device="cpu", polygons=False))
    assert (_read(everything.classes, 1)[0] != 255).all()
    overridden = label_scene(bundle, untagged, tmp_path / "override", LabelOptions(stride=24, nodata=0, device="cpu", polygons=False))
    assert np.array_equal(_read(overridden.classes, 1)[0], _read(reference.classes, 1)[0])
    masked = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked, "w", **{**profile, "nodata": None}) as dataset:
        dataset.write(data)
        dataset.write_mask(np.where((data == 0).all(axis=0), 0, 255).astype(np.uint8))
    from_mask = label_scene(bundle, masked, tmp_path / "mask", LabelOptions(stride=24, device="cpu", polygons=False))
    assert np.array_equal(_read(from_mask.classes, 1)[0], _read(reference.classes, 1)[0])

    # float32 reflectance in [0, 1] with NaN nodata: scale_by_dtype keeps floats, uint8 is divided by 255.
    reflectance = np.where((data == 0).all(axis=0), np.nan, data / np.float32(255)).astype(np.float32)
    floating = _write_like(tmp_path / "float.tif", reflectance, profile, nodata=float("nan"))
    result = label_scene(bundle, floating, tmp_path / "float", LabelOptions(stride=24, device="cpu", polygons=False))
    classes, reference_classes = _read(result.classes, 1)[0], _read(reference.classes, 1)[0]
    assert np.array_equal(classes == 255, reference_classes == 255)
    assert (classes == reference_classes).mean() > 0.99

    # uint16 reflectance (DN / 10000 in training): labelled, previewed with a percentile stretch.
    reflectance16 = _write_like(tmp_path / "uint16.tif", (data.astype(np.uint16) * 20), profile)
    result = label_scene(bundle, reflectance16, tmp_path / "uint16", LabelOptions(device="cpu", polygons=False))
    assert np.array_equal(_read(result.classes, 1)[0] == 255, reference_classes == 255)
    with Image.open(result.preview) as preview:
        assert np.asarray(preview.convert("L"))[:, :320].std() > 10


def test_scene_without_any_data_writes_empty_outputs(bundle, tmp_path):
    with rasterio.open(demo_scene()) as source:
        profile = source.profile
    empty = _write_like(tmp_path / "empty.tif", np.zeros((3, 64, 80), dtype=np.uint8), profile, width=80, height=64)
    result = label_scene(bundle, empty, tmp_path / "out", LabelOptions(device="cpu"))
    assert result.windows_skipped == result.windows
    assert (_read(result.classes, 1)[0] == 255).all()
    assert len(geopandas.read_file(result.polygons)) == 0
    assert json.loads(result.summary.read_text())["labelled_pixels"] == 0


def test_window_or_extent_labels_that_part_exactly_as_a_cropped_file(bundle, tmp_path):
    with rasterio.open(demo_scene()) as source:
        window = rasterio.windows.Window(40, 30, 200, 150)
        crop, profile = source.read(window=window), {**source.profile, "transform": source.window_transform(window)}
        bounds = source.window_bounds(window)
    cropped = _write_like(tmp_path / "crop.tif", crop, profile, width=200, height=150)
    reference = label_scene(bundle, cropped, tmp_path / "crop", LabelOptions(stride=24, device="cpu", polygons=False))
    expected = _read(reference.classes, 1)[0]
    for name, options in (("window", LabelOptions(window=PixelWindow(40, 30, 200, 150))), ("extent", LabelOptions(extent=bounds))):
        result = label_scene(bundle, demo_scene(), tmp_path / name, options.with_changes(stride=24, device="cpu", polygons=False))
        classes, _, dataset = _read(result.classes, 1)
        assert dataset.transform == profile["transform"] and classes.shape == (150, 200)
        assert np.array_equal(classes, expected), name
        assert json.loads(result.summary.read_text())["window"] == [40, 30, 200, 150]
    with pytest.raises(SceneError, match="outside the scene"):
        label_scene(bundle, demo_scene(), tmp_path / "outside", LabelOptions(window=PixelWindow(1000, 0, 10, 10), device="cpu"))


def test_options_are_checked_where_they_are_made():
    for bad in (dict(tile=0), dict(stride=0), dict(batch=0), dict(extent=(1, 1, 0, 2)), dict(window=PixelWindow(0, 0, 0, 5))):
        with pytest.raises(SceneError):
            LabelOptions(**bad)
    assert LabelOptions.stride_for(64) == 32 and LabelOptions(bands=[3, 2, 1]).bands == (3, 2, 1)


def test_describe_scene_reports_size_bands_crs_and_ground_resolution(tmp_path):
    from rasterio.warp import calculate_default_transform

    from sembridge_engine.labelling.source import describe_scene

    info = describe_scene(demo_scene())
    assert (info.width, info.height, info.band_count, info.dtypes) == (320, 288, 3, ("uint8",) * 3)
    assert info.crs == "EPSG:32618" and info.nodata == 0 and info.gsd == pytest.approx(300.04, abs=0.01)
    with rasterio.open(demo_scene()) as source:
        transform, width, height = calculate_default_transform(source.crs, "EPSG:4326", source.width, source.height, *source.bounds)
        profile = {**source.profile, "crs": "EPSG:4326", "transform": transform, "width": width, "height": height}
    geographic = _write_like(tmp_path / "geographic.tif", np.zeros((3, height, width), np.uint8), profile)
    assert describe_scene(geographic).gsd == pytest.approx(300, rel=0.05)  # degrees converted at the scene centre
    with pytest.raises(SceneError, match="scene not found"):
        describe_scene(tmp_path / "nothing.tif")


def test_window_medians_over_valid_pixels_equal_numpys_nanmedian():
    from sembridge_engine.labelling.windows import masked_medians

    rng = np.random.default_rng(0)
    for _ in range(100):
        height, width = rng.integers(1, 7, size=2)
        values = rng.normal(size=(4, 3, height, width))
        invalid = np.repeat(rng.random((4, 1, height, width)) < rng.random(), 3, axis=1)
        with_nan = np.where(invalid, np.nan, values)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nan_to_num(np.nanmedian(with_nan, axis=(2, 3)), nan=0.0)  # all-invalid planes: 0
        assert np.allclose(masked_medians(values, invalid), expected)
