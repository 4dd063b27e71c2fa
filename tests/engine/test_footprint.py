"""The model knows its footprint, and scenes are labelled at the right scale: training records the ground
one RGB image covers (from GeoTIFF transforms or data.rgb_gsd), bundles carry it, the labeller chooses
windows of footprint / scene GSD, and stops honestly when the scene is far coarser or finer."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from resources import demo_project
from sembridge_engine.bundle import BundleError, load_bundle
from sembridge_engine.config import apply_overrides, load_config
from sembridge_engine.labelling.options import LabelOptions, PixelWindow, SceneError
from sembridge_engine.labelling.scene import label_scene, plan_scene
from sembridge_engine.training.dataset import assemble_run_data
from sembridge_engine.training.outputs import export_bundle

from .labelling_fixtures import TEST_TILE, demo_scene, make_run_folder, scene_with_gsd
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")
UCM_GSD = 0.3


@pytest.fixture(scope="module")
def bundle(scale_bundle):
    """A bundle whose student.json records footprint and radiometry as training does (demo photos at 0.3 m)."""
    return scale_bundle


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory):
    return load_bundle(export_bundle(make_run_folder(tmp_path_factory.mktemp("old") / "run"), check_onnx=False))


def _summary(result) -> dict:
    return json.loads(result.summary.read_text())


def test_training_records_the_footprint_from_geotiff_transforms_and_the_config_gsd(tmp_path):
    """Forest images as UTM GeoTIFFs at 0.5 m, River as geographic GeoTIFFs at ~0.5 m, Highway as PNG (config GSD)."""
    rgb = tmp_path / "rgb"
    latitude = 37.3
    for name, crs in (("Forest", "EPSG:32610"), ("River", "EPSG:4326"), ("Highway", None)):
        (rgb / name).mkdir(parents=True)
        for path in sorted((demo_project() / "rgb" / name).glob("*"))[:5]:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
            if crs is None:
                Image.fromarray(pixels.transpose(1, 2, 0)).save(rgb / name / f"{path.stem}.png")
                continue
            if crs == "EPSG:4326":
                step_x, step_y = 0.5 / (111_320 * np.cos(np.radians(latitude))), 0.5 / 110_990
                transform = Affine(step_x, 0, -120.5, 0, -step_y, latitude)
            else:
                transform = Affine(0.5, 0, 720000, 0, -0.5, 4132000)
            with rasterio.open(rgb / name / f"{path.stem}.tif", "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1],
                               count=3, dtype="uint8", crs=crs, transform=transform) as dataset:
                dataset.write(pixels)
    config = apply_overrides(load_config(demo_project() / "demo.toml"),
                             [f"data.rgb_path={rgb}", "data.rgb_gsd=0.25", "data.rgb_tile_size=32"])
    data = assemble_run_data(config, need_ms=False)
    by_class = {}
    for path, width, height, gsd in data.rgb_train_images:
        by_class.setdefault(Path(path).parent.name, []).append((width, height, gsd))
    assert {gsd for _, _, gsd in by_class["Forest"]} == {0.5}
    assert all(gsd == pytest.approx(0.5, rel=0.01) for _, _, gsd in by_class["River"])
    assert {gsd for _, _, gsd in by_class["Highway"]} == {0.25}
    footprint = data.rgb_footprint
    assert footprint["gsd_source"] == "config+geotiff" and footprint["images"] == len(data.rgb_train_images) == 9
    assert footprint["metres_min"] == pytest.approx(0.25 * 256, rel=0.02) and footprint["metres_max"] == pytest.approx(128, rel=0.02)
    assert footprint["metres"] == pytest.approx(128, rel=0.02)
    radiometry = data.rgb_radiometry
    assert radiometry["source_dtype"] == "uint8" and radiometry["percentiles"] == [1.0, 50.0, 99.0]
    assert all(0 <= low < middle < high <= 255 for low, middle, high in radiometry["values"])

    unknown = assemble_run_data(apply_overrides(config, ["data.rgb_gsd=0"]), need_ms=False)
    assert unknown.rgb_footprint["images_without_gsd"] == 3 and unknown.rgb_footprint["gsd_source"] == "geotiff"


def test_bundle_carries_footprint_and_radiometry_and_refuses_broken_values(bundle, tmp_path):
    assert bundle.footprint_m == pytest.approx(256 * UCM_GSD, abs=1.0) and bundle.training_gsd == UCM_GSD
    assert bundle.radiometry["source_dtype"] == "uint8" and len(bundle.radiometry["values"]) == 3
    with zipfile.ZipFile(bundle.path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    for change, message in ((("footprint", "metres"), "positive number 'metres'"), (("input_radiometry", "values"), "input_radiometry")):
        broken = json.loads(json.dumps(metadata))
        broken[change[0]][change[1]] = -1
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, json.dumps(broken) if name == "metadata.json" else data)
        path = tmp_path / f"{change[0]}.sembridge"
        path.write_bytes(buffer.getvalue())
        with pytest.raises(BundleError, match=message):
            load_bundle(path)


@pytest.mark.parametrize("gsd", [0.3, 0.45])
def test_window_covers_the_training_footprint_within_one_pixel(bundle, tmp_path, gsd):
    scene = scene_with_gsd(tmp_path / "scene.tif", gsd)
    plan = plan_scene(bundle, scene, LabelOptions(device="cpu"))
    assert abs(plan.tile * gsd - bundle.footprint_m) <= gsd  # within one scene pixel
    assert plan.stride == plan.tile // 2 and not plan.blocked
    assert f"window {plan.tile} px" in plan.lines()[0] and f"scene {gsd:.3g} m/px" in plan.lines()[0]
    assert "model footprint 76.8 m" in plan.lines()[0] and "scale factor" in plan.lines()[0]
    result = label_scene(bundle, scene, tmp_path / "out", LabelOptions(device="cpu", polygons=False, preview=False))
    scale = _summary(result)["scale"]
    assert scale["window"] == plan.tile and scale["scale_factor"] == pytest.approx(plan.tile / TEST_TILE)
    assert abs(scale["window_m"] - bundle.footprint_m) <= gsd and _summary(result)["scale_warning"] is None


def test_geographic_scene_gsd_is_measured_at_its_centre(bundle, tmp_path):
    """0.3 m expressed in degrees at 60 degrees north: the window is the same number of pixels."""
    step_x, step_y = 0.3 / (111_412 * 0.5), 0.3 / 111_412
    with rasterio.open(demo_scene()) as source:
        data, profile = source.read(), source.profile
    profile = {**profile, "crs": "EPSG:4326", "transform": Affine(step_x, 0, 10.0, 0, -step_y, 60.0 + 144 * step_y)}
    with rasterio.open(tmp_path / "geographic.tif", "w", **profile) as dataset:
        dataset.write(data)
    plan = plan_scene(bundle, tmp_path / "geographic.tif", LabelOptions(device="cpu"))
    assert abs(plan.tile - 256) <= 2


def test_three_times_coarser_scene_gets_a_three_times_smaller_window(bundle, tmp_path):
    fine = plan_scene(bundle, scene_with_gsd(tmp_path / "fine.tif", 0.3), LabelOptions(device="cpu"))
    coarse = plan_scene(bundle, scene_with_gsd(tmp_path / "coarse.tif", 0.9, factor=3), LabelOptions(device="cpu"))
    assert fine.tile == 256 and coarse.tile == 85 and not coarse.blocked


def test_far_too_coarse_scene_stops_naming_both_resolutions_and_labels_when_forced(bundle, tmp_path, capsys):
    from sembridge_engine.cli import main

    with pytest.raises(SceneError, match=r"pixels are 300 m.*76\.8 m across \(0\.3 m per pixel\).*--force-scale"):
        label_scene(bundle, demo_scene(), tmp_path / "refused", LabelOptions(device="cpu"))
    assert not (tmp_path / "refused").exists()
    code = main(["label", "--model", str(bundle.path), "--scene", str(demo_scene()), "--out", str(tmp_path / "cli"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and "stopped:" in captured.err and "far coarser" in captured.err and "scene 300 m/px" in captured.out
    forced = label_scene(bundle, demo_scene(), tmp_path / "forced",
                         LabelOptions(device="cpu", force_scale=True, window=PixelWindow(200, 150, 24, 20), polygons=False))
    summary = _summary(forced)
    assert summary["scale"]["window"] == 1 and "far coarser" in summary["scale_warning"] and summary["labelled_pixels"] == 24 * 20


def test_scene_smaller_than_the_footprint_stops_and_footprint_option_overrides(bundle, tmp_path):
    small = scene_with_gsd(tmp_path / "small.tif", 0.1)  # 320 x 288 px at 0.1 m: the 76.8 m footprint is 768 px
    with pytest.raises(SceneError, match=r"smaller than one training image.*768 pixels.*sembridge classify"):
        label_scene(bundle, small, tmp_path / "x", LabelOptions(device="cpu"))
    assert plan_scene(bundle, small, LabelOptions(device="cpu")).blocked
    overridden = plan_scene(bundle, small, LabelOptions(device="cpu", footprint=12.0))
    assert overridden.tile == 120 and not overridden.blocked and overridden.scale.footprint_m == 12.0
    explicit = label_scene(bundle, small, tmp_path / "tile", LabelOptions(device="cpu", tile=64, polygons=False, preview=False))
    summary = _summary(explicit)
    assert summary["scale"]["basis"] == "tile option" and "covers 6.4 m of ground" in summary["scale_warning"]


def test_old_bundle_without_footprint_labels_as_before_with_a_warning(old_bundle, tmp_path):
    assert old_bundle.footprint_m is None and old_bundle.radiometry is None
    result = label_scene(old_bundle, demo_scene(), tmp_path / "old", LabelOptions(device="cpu", polygons=False))
    summary = _summary(result)
    assert summary["tile"] == TEST_TILE and summary["labelled_pixels"] > 0
    assert "no training footprint" in summary["scale_warning"]


def test_not_georeferenced_scene_is_assumed_at_the_training_resolution(bundle, tmp_path):
    with rasterio.open(demo_scene()) as source:
        data = source.read()
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3, dtype="uint8") as dataset:
        dataset.write(data)
    plan = plan_scene(bundle, plain, LabelOptions(device="cpu"))
    assert plan.tile == 256 and "not georeferenced" in plan.scale.warning and not plan.blocked


def test_scale_choice_is_the_same_function_for_every_caller():
    """The decision itself, on round numbers (no files)."""
    from sembridge_engine.labelling.scale import choose_window

    assert choose_window("s", 64, 76.8, 0.3, 0.3, 1000, 1000).window == 256
    assert choose_window("s", 64, 76.8, 0.3, 1.2, 1000, 1000).window == 64
    assert choose_window("s", 64, 76.8, 0.3, 4.9, 1000, 1000).blocked  # 15.7 px < 64 / 4
    assert not choose_window("s", 64, 76.8, 0.3, 4.7, 1000, 1000).blocked
    assert choose_window("s", 64, 76.8, 0.3, 0.3, 200, 1000).blocked and not choose_window("s", 64, 76.8, 0.3, 0.3, 256, 256).blocked
    assert not choose_window("s", 64, 76.8, 0.3, 0.3, 256, 249).blocked  # UC Merced's odd 256 x 249 photo: padded


def test_band_presets_name_the_bands_of_sentinel2_scenes_without_descriptions(bundle, tmp_path):
    """Real EuroSAT L1C tiles (13 bands, B8A last) side by side, and the same pixels in Sentinel-2 L2A's 12-band order."""
    from sembridge_engine.data.bands import SENTINEL2_EUROSAT13, SENTINEL2_L2A12

    tiles = sorted((demo_project() / "ms" / "Forest").glob("*.tif"))[:4]
    with rasterio.open(tiles[0]) as first:
        profile = first.profile
    pixels = np.concatenate([rasterio.open(path).read() for path in tiles], axis=2)
    l2a = pixels[[SENTINEL2_EUROSAT13.band_names.index(name) for name in SENTINEL2_L2A12.band_names]].astype(np.int16)
    for name, data in (("l1c13", pixels), ("l2a12", l2a)):
        with rasterio.open(tmp_path / f"{name}.tif", "w", **{**profile, "count": len(data), "dtype": str(data.dtype),
                                                             "width": data.shape[2], "photometric": "minisblack"}) as dataset:
            dataset.write(data)
    with pytest.raises(SceneError, match=r"l2a12\.tif: has 12 bands .*--band-preset \(sentinel2_l2a12\)"):
        plan_scene(bundle, tmp_path / "l2a12.tif", LabelOptions(device="cpu"))
    for name, preset in (("l2a12", "sentinel2_l2a12"), ("l1c13", "sentinel2_eurosat13")):
        plan = plan_scene(bundle, tmp_path / f"{name}.tif", LabelOptions(device="cpu", band_preset=preset, force_scale=True))
        assert plan.band_indexes == [4, 3, 2]  # B04, B03, B02 in both orders
        assert "scene 10 m/px" in plan.lines()[0] and "far coarser" in plan.scale.warning  # 10 m against 0.3 m photos
    with pytest.raises(SceneError, match=r"has 12 bands but band preset 'sentinel2_eurosat13' names 13"):
        plan_scene(bundle, tmp_path / "l2a12.tif", LabelOptions(device="cpu", band_preset="sentinel2_eurosat13"))
