"""Accuracy assessment of labelled maps against reference points, polygons and rasters: a reference built from
the map itself agrees exactly, deliberately wrong references do not, and the demo mosaic is checked
against the true class of every block."""
from __future__ import annotations

import csv
import json

import geopandas
import numpy as np
import pytest
import rasterio
import shapely

from sembridge_engine.events import CancelToken, Cancelled
from sembridge_engine.labelling.assess import AssessmentError, assess_map, assess_to_files, write_assessment
from sembridge_engine.labelling.options import LabelOptions
from sembridge_engine.labelling.scene import label_scene

from .labelling_fixtures import demo_mosaic
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def mosaic_map(scale_bundle, tmp_path_factory):
    """The demo mosaic labelled at the model's footprint (0.3 m, 256-px windows)."""
    out = tmp_path_factory.mktemp("assess")
    result = label_scene(scale_bundle, demo_mosaic(), out, LabelOptions(device="cpu", preview=False))
    with rasterio.open(result.classes) as dataset:
        return result, dataset.read(1), dataset.profile


def _reference():
    return demo_mosaic().with_name("ucmerced_mosaic_reference.gpkg")


def test_reference_built_from_the_map_agrees_exactly_in_every_form(mosaic_map, scale_bundle, tmp_path):
    result, classes, profile = mosaic_map
    names = scale_bundle.class_names
    # The map's own class raster as reference, and its own polygons (the GeoPackage label wrote).
    as_raster = assess_map(result.classes, result.classes)
    assert as_raster.accuracies[0].overall == 1.0 and as_raster.accuracies[0].samples == classes.size
    as_polygons = assess_map(result.classes, result.polygons, class_column="class_name")
    pixels, polygons = as_polygons.accuracies
    assert pixels.unit == "pixels" and pixels.overall == 1.0 and pixels.samples == classes.size
    assert polygons.overall == 1.0 and polygons.samples == len(geopandas.read_file(result.polygons))
    # Points at pixel centres, stored in WGS 84: reprojected onto the map's UTM grid.
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, classes.shape[0], 300), rng.integers(0, classes.shape[1], 300)
    xs, ys = rasterio.transform.xy(profile["transform"], rows, cols)
    points = geopandas.GeoDataFrame({"label": [names[value] for value in classes[rows, cols]]},
                                    geometry=geopandas.points_from_xy(xs, ys), crs=profile["crs"]).to_crs("EPSG:4326")
    points.to_file(tmp_path / "points.gpkg", engine="pyogrio")
    from_points = assess_map(result.classes, tmp_path / "points.gpkg")
    accuracy = from_points.accuracies[0]
    assert accuracy.unit == "points" and accuracy.samples == 300 and accuracy.overall == 1.0
    assert from_points.details["reference_crs"] == "EPSG:4326" and from_points.details["class_column"] == "label"
    low, high = accuracy.interval()
    assert 0.98 < low < 1.0 and high == 1.0  # Wilson interval: 300 agreeing points are not a certainty


def test_deliberately_wrong_references_score_as_they_should(mosaic_map, scale_bundle, tmp_path):
    result, classes, profile = mosaic_map
    names, k = scale_bundle.class_names, len(scale_bundle.class_names)
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(shifted, "w", **{**profile, "nodata": None}) as dataset:
        dataset.write(((classes.astype(np.int64) + 1) % k).astype(np.uint8), 1)
        dataset.update_tags(class_names=",".join(names))
    wrong = assess_map(result.classes, shifted).accuracies[0]
    assert wrong.overall == 0.0 and np.trace(wrong.confusion) == 0
    assert all(entry["users_accuracy"] in (0.0, None) for entry in wrong.per_class())
    # Blocks labelled with a random class: agreement near 1/K, far below the real reference.
    frame = geopandas.read_file(_reference())
    truth = assess_map(result.classes, _reference())
    frame["class"] = np.random.default_rng(1).choice(names, len(frame))
    frame.to_file(tmp_path / "random.gpkg", engine="pyogrio")
    random = assess_map(result.classes, tmp_path / "random.gpkg").accuracies[0]
    assert random.overall < 0.5 and random.overall < truth.accuracies[0].overall
    # A class the map does not know is left out and named.
    frame["class"] = ["Glacier"] * 6 + frame["class"].tolist()[6:]
    frame.to_file(tmp_path / "unknown.gpkg", engine="pyogrio")
    unknown = assess_map(result.classes, tmp_path / "unknown.gpkg")
    assert unknown.details["unknown_reference_classes"] == ["Glacier"] and unknown.details["features_with_unknown_class"] == 6
    assert unknown.accuracies[1].samples == len(frame) - 6


def test_demo_mosaic_against_its_true_blocks_with_json_and_csv(mosaic_map, tmp_path, capsys):
    from sembridge_engine.cli import main

    result, classes, _ = mosaic_map
    assessment = assess_map(result.classes, _reference())
    pixels, blocks = assessment.accuracies
    assert pixels.samples == 1536 * 1536 and blocks.samples == 36
    assert blocks.confusion.sum(axis=1).tolist() == [6] * 6  # six blocks of each class
    written = write_assessment(assessment, tmp_path / "mosaic")
    report = json.loads(written[0].read_text())
    assert report["units"]["polygons"]["samples"] == 36 and report["reference_kind"] == "polygons"
    assert report["units"]["polygons"]["overall_accuracy"] == pytest.approx(np.trace(blocks.confusion) / 36, abs=1e-6)
    with written[2].open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][0] == "reference \\ map" and len(rows) == 1 + 6 + 2 and rows[-1][0] == "overall_accuracy"
    assert [int(value) for value in rows[1][1:7]] == blocks.confusion[0].tolist()

    code = main(["assess", "--map", str(result.classes), "--reference", str(_reference()), "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert code == 0 and "polygons: 36 samples, overall accuracy" in out and "95% CI" in out
    assert (tmp_path / "cli.json").is_file() and (tmp_path / "cli_pixels.csv").is_file()


def test_unusable_references_give_clear_messages(mosaic_map, tmp_path, capsys):
    from sembridge_engine.cli import main

    result, _, profile = mosaic_map
    frame = geopandas.read_file(_reference()).rename(columns={"class": "kind"})
    frame.to_file(tmp_path / "no_column.gpkg", engine="pyogrio")
    with pytest.raises(AssessmentError, match=r"no_column\.gpkg: no class column.*--class-column"):
        assess_map(result.classes, tmp_path / "no_column.gpkg")
    elsewhere = geopandas.GeoDataFrame({"class": ["Forest"]}, geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32610")
    elsewhere.to_file(tmp_path / "elsewhere.gpkg", engine="pyogrio")
    with pytest.raises(AssessmentError, match="no reference sample falls on a labelled pixel"):
        assess_map(result.classes, tmp_path / "elsewhere.gpkg")
    assert main(["assess", "--map", str(tmp_path / "missing.tif"), "--reference", str(_reference())]) == 1
    assert "map not found" in capsys.readouterr().err


class CancelAfter(CancelToken):
    """Cancels itself at its ``checks + 1``-th check: a user pressing Cancel part-way through."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks, self.seen = checks, 0

    def raise_if_cancelled(self) -> None:
        self.seen += 1
        if self.seen > self.checks:
            self.cancel()
        super().raise_if_cancelled()


def test_a_cancelled_assessment_stops_part_way_and_writes_nothing(mosaic_map, scale_bundle, tmp_path):
    result, classes, profile = mosaic_map
    names = scale_bundle.class_names
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, classes.shape[0], 5000), rng.integers(0, classes.shape[1], 5000)
    xs, ys = rasterio.transform.xy(profile["transform"], rows, cols)
    geopandas.GeoDataFrame({"class": [names[value] for value in classes[rows, cols]]},
                           geometry=geopandas.points_from_xy(xs, ys), crs=profile["crs"]).to_file(tmp_path / "points.gpkg")
    for reference in (_reference(), result.classes, tmp_path / "points.gpkg"):  # polygons, raster, points
        token = CancelAfter(checks=2)
        with pytest.raises(Cancelled):
            assess_to_files(result.classes, reference, tmp_path / "out" / "mosaic", cancel=token)
        assert token.seen == 3, f"{reference.name}: cancel checked between blocks / point chunks"
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "nothing partial written"
    assess_to_files(result.classes, _reference(), tmp_path / "out" / "mosaic")
    before = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}
    assert set(before) == {"mosaic.json", "mosaic_pixels.csv", "mosaic_polygons.csv"}
    token = CancelAfter(checks=3)  # points: read, two chunks, then cancelled just before writing
    with pytest.raises(Cancelled):
        assess_to_files(result.classes, tmp_path / "points.gpkg", tmp_path / "out" / "mosaic", cancel=token)
    assert {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()} == before, \
        "a cancelled re-assessment leaves the earlier files as they were"
    # Not cancelled, the same token type lets it finish: the checks do not end it by themselves.
    finished = assess_map(result.classes, _reference(), block=256, cancel=CancelAfter(checks=10_000))
    assert finished.accuracies[1].samples == 36
