"""Label map on the bundled scene: per-scene bands and areas, the engine's pre-flight plan in the
panel's words, outputs written (never replaced unasked), the map view before and after, the map's
accuracy against the scene's reference polygons (earlier assessments replaced only when the user says
so, a running one cancellable)."""
from __future__ import annotations

import json
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QMessageBox

from app.label import LabelPanel
from app.label.messages import for_the_panel
from resources import demo_project
from sembridge_engine.labelling.options import PixelWindow

SCENE = demo_project() / "scene" / "ucmerced_mosaic.tif"         # 0.3 m aerial RGB: the model's own scale
COARSE_SCENE = demo_project() / "scene" / "scene_subset.tif"    # 300 m Landsat: far coarser than training
REFERENCE = demo_project() / "scene" / "ucmerced_mosaic_reference.gpkg"  # the true class of each block


def crop(path: Path, target: Path, bands_at: tuple[int, ...] | None = None, size: int = 768) -> Path:
    """The top-left ``size`` px of the mosaic; with ``bands_at``, a 13-band scene holding its R, G, B
    at those 0-based positions and noise elsewhere."""
    with rasterio.open(path) as source:
        window = rasterio.windows.Window(0, 0, size, size)
        rgb = source.read(window=window)
        profile = {"driver": "GTiff", "dtype": "uint8", "crs": source.crs, "width": size, "height": size,
                   "transform": source.window_transform(window)}
    pixels = rgb
    if bands_at is not None:
        pixels = np.random.default_rng(0).integers(1, 255, size=(13, size, size), dtype=np.uint8)
        pixels[list(bands_at)] = rgb
    with rasterio.open(target, "w", **{**profile, "count": len(pixels)}) as out:
        out.write(pixels)
    return target


@pytest.fixture
def panel(qtbot, settings, trained_run):
    panel = LabelPanel(settings)
    qtbot.addWidget(panel)
    panel.resize(1200, 700)
    panel.show()
    with qtbot.waitSignal(panel.bundleLoaded, timeout=60000):
        panel.bundle_field.set_path(trained_run / "model.sembridge")
    return panel


def add_and_plan(qtbot, panel, *scenes) -> None:
    with qtbot.waitSignal(panel.planned, timeout=60000):
        panel.add_scenes(list(scenes))
    qtbot.waitUntil(lambda: all(entry.plan is not None or entry.error for entry in panel.entries.values()), timeout=60000)


def label(qtbot, panel, out_dir: Path) -> None:
    panel.output_field.set_path(out_dir)
    with qtbot.waitSignal(panel.labelled, timeout=120000):
        panel.run_button.click()


def test_label_the_demo_scene_and_look_at_it(qtbot, panel, tmp_path, monkeypatch):
    with qtbot.waitSignal(panel.map_view.sceneShown, timeout=60000):
        add_and_plan(qtbot, panel, SCENE)
    entry = panel.current_entry()
    assert entry.plan is not None, panel.error_label.text()
    assert [combo.currentData() for combo in panel.band_combos] == entry.plan.band_indexes
    assert "windows" in panel.plan_label.text() and "m/px" in panel.plan_label.text()
    assert panel.map_view.scene_image.image is not None, "the scene is on the map before labelling"

    out_dir = tmp_path / "maps"
    with qtbot.waitSignal(panel.map_view.labelsShown, timeout=120000):
        label(qtbot, panel, out_dir)
    assert panel.results, panel.error_label.text()
    result = panel.results[0]
    assert all(Path(path).is_file() and Path(path).parent == out_dir for path in result.paths())
    assert json.loads(Path(result.summary).read_text())["windows_classified"] > 0
    assert panel.legend.count() == len(panel.bundle.class_names)
    assert panel.open_button.isEnabled() and panel.progress.value() == panel.progress.maximum()
    with rasterio.open(result.classes) as classes:
        labelled = np.argwhere(classes.read(1) != 255)
    row, col = labelled[len(labelled) // 2]
    hover = panel.map_view.describe_pixel(int(col), int(row))
    assert any(name in hover for name in panel.bundle.class_names) and "confident" in hover

    view = panel.map_view  # zoomed in past the overview's resolution, the part in view is read again, finer
    with qtbot.waitSignal(view.detailShown, timeout=30000):
        view.viewbox.setRange(QRectF(400, 300, 240, 180), padding=0)
    detail = view.visible_window()
    assert detail.col <= 400 and detail.col + detail.width >= 640 and detail.width < 600, detail
    assert view.detail_image.image.shape[1] >= detail.width, "the detail has at least one pixel per scene pixel"
    assert view.class_detail.image is not None

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args[2]) or QMessageBox.StandardButton.No)
    panel.run_button.click()
    assert asked and "will be replaced" in asked[0] and panel.label_worker is None, "nothing is replaced unasked"


def test_each_scene_keeps_its_own_bands(qtbot, panel, tmp_path):
    """An RGB scene and a 13-band one whose bands 4, 3, 2 hold the same red, green, blue: the 13-band
    scene needs its bands chosen, the RGB scene keeps its own, and both give the same map."""
    rgb = crop(SCENE, tmp_path / "rgb.tif")
    many = crop(SCENE, tmp_path / "thirteen_bands.tif", bands_at=(3, 2, 1))
    add_and_plan(qtbot, panel, rgb, many)
    thirteen, three = panel.entries[str(many)], panel.entries[str(rgb)]
    assert thirteen.plan is None and "Scene bands fed to the model" in thirteen.error and "--" not in thirteen.error
    assert three.ready and panel.run_button.text() == "Label 1 of 2 scenes"

    panel.scene_list.setCurrentRow(1)
    with qtbot.waitSignal(panel.planned, timeout=60000):
        for combo, band in zip(panel.band_combos, (4, 3, 2)):
            combo.setCurrentIndex(combo.findData(band))
    assert thirteen.ready and thirteen.plan.band_indexes == [4, 3, 2]
    assert three.bands is None and three.plan.band_indexes == [1, 2, 3], "the other scene's bands are untouched"
    label(qtbot, panel, tmp_path / "maps")
    assert len(panel.results) == 2, panel.error_label.text()
    with rasterio.open(three.result.classes) as first, rasterio.open(thirteen.result.classes) as second:
        assert np.array_equal(first.read(1), second.read(1))


def test_a_scene_far_coarser_than_training_waits_for_the_users_word(qtbot, panel):
    add_and_plan(qtbot, panel, COARSE_SCENE)
    entry = panel.current_entry()
    assert entry.plan.blocked and not panel.run_button.isEnabled()
    assert "far coarser" in panel.plan_label.text() and "'Label anyway at this scale'" in panel.plan_label.text()
    with qtbot.waitSignal(panel.planned, timeout=60000):
        panel.force_check.setChecked(True)
    assert entry.ready and panel.run_button.isEnabled()


def test_an_area_of_interest_is_labelled_alone(qtbot, panel, tmp_path):
    add_and_plan(qtbot, panel, SCENE)
    whole = panel.current_entry().plan.windows
    area = PixelWindow(256, 128, 512, 384)
    with qtbot.waitSignal(panel.planned, timeout=60000):
        panel.map_view.set_area(area)
    entry = panel.current_entry()
    assert entry.area == area and 0 < entry.plan.windows < whole
    label(qtbot, panel, tmp_path / "maps")
    summary = json.loads(Path(entry.result.summary).read_text())
    assert summary["window"] == [256, 128, 512, 384]
    with rasterio.open(entry.result.classes) as classes:
        assert (classes.width, classes.height) == (512, 384)


def test_a_failed_run_leaves_nothing_stale_and_speaks_the_panels_words(qtbot, panel, tmp_path):
    scene = crop(SCENE, tmp_path / "scene.tif", size=512)
    add_and_plan(qtbot, panel, scene)
    label(qtbot, panel, tmp_path / "maps")
    assert panel.results and panel.legend.count()
    scene.unlink()
    label(qtbot, panel, tmp_path / "other")
    assert not panel.results and panel.legend.count() == 0 and panel.progress.value() == 0
    assert panel.map_view.class_image.image is None, "the old class map is not left on the map"
    message = panel.error_label.text()
    assert "scene.tif" in message and "Errno" not in message and "--" not in message


def test_engine_messages_are_reworded_for_the_panel():
    bands = "x.tif: has 13 bands (1=?, 2=?) ...; choose them with --bands, 1-based, e.g. --bands 3,2,1"
    coarse = "x.tif is far coarser than the training data: ... Use imagery of 1 m per pixel or finer, or --force-scale to label anyway"
    for message in (bands, coarse, "[Errno 2] No such file or directory: '/data/x.tif'", "use --device auto or cpu"):
        reworded = for_the_panel(message)
        assert "--" not in reworded and "Errno" not in reworded, reworded
    assert "'Label anyway at this scale'" in for_the_panel(coarse)
    assert for_the_panel("[Errno 2] No such file or directory: '/data/x.tif'") == "No such file or directory: /data/x.tif"


def test_an_unreadable_scene_shows_the_engine_message(qtbot, panel, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    add_and_plan(qtbot, panel, bad)
    assert panel.current_entry().plan is None
    assert "bad.tif" in panel.error_label.text()
    assert not panel.run_button.isEnabled()


def assess(qtbot, box) -> None:
    assert box.assess_button.isEnabled(), box.assess_button.toolTip()
    with qtbot.waitSignal(box.assessed, timeout=60000):
        box.assess_button.click()


def test_the_labelled_map_is_assessed_against_the_scenes_reference(qtbot, panel, tmp_path, monkeypatch):
    from sembridge_engine.labelling.assess import assess_map

    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.Yes)  # re-assessing replaces
    box = panel.assessment
    with qtbot.waitSignal(box.layoutRead, timeout=30000):
        box.reference_field.set_path(REFERENCE)
    assert box.column_combo.currentText() == "class" and not box.column_note.isVisibleTo(box)
    assert not box.assess_button.isEnabled(), "nothing to assess before the scene is labelled"
    add_and_plan(qtbot, panel, SCENE)
    label(qtbot, panel, tmp_path / "maps")
    classes = panel.current_entry().result.classes
    assess(qtbot, box)
    assert box.assessment is not None, box.error_label.text()
    expected = assess_map(classes, REFERENCE).to_dict()["units"]
    polygons = box.accuracy()
    assert box.unit_combo.currentData() == "polygons" and polygons.samples == 36, "one sample per block of the mosaic"
    assert polygons.to_dict() == expected["polygons"]
    low, high = polygons.interval()
    assert f"Overall accuracy {polygons.overall:.1%}" in box.overall_label.text()
    assert f"{low:.1%} – {high:.1%}" in box.overall_label.text()
    assert box.table.rowCount() == len(panel.bundle.class_names)
    for row, entry in enumerate(expected["polygons"]["classes"]):
        shown = [box.table.item(row, column).text() for column in range(box.table.columnCount())]
        users = "–" if entry["users_accuracy"] is None else f"{entry['users_accuracy']:.1%}"
        assert shown[0] == entry["class_name"] and shown[1] == users and shown[4] == str(entry["reference_count"])
    box.unit_combo.setCurrentIndex(box.unit_combo.findData("pixels"))
    assert box.accuracy().samples == expected["pixels"]["samples"] > 36 * 1000
    written = json.loads((classes.parent / "ucmerced_mosaic_assessment.json").read_text())
    assert written["units"] == expected, "the JSON beside the map holds what the panel shows"
    assert {path.name for path in box.written} == {"ucmerced_mosaic_assessment.json", "ucmerced_mosaic_assessment_pixels.csv",
                                                     "ucmerced_mosaic_assessment_polygons.csv"}

    box.column_combo.setCurrentText("ucmerced_class")  # UC Merced's own names: only forest and river are map classes
    assess(qtbot, box)
    assert 0 < box.accuracy().samples < 36
    assert "left out" in box.error_label.text() and "agricultural" in box.error_label.text()

    reference = geopandas.read_file(REFERENCE)
    elsewhere = tmp_path / "reference_elsewhere.gpkg"
    reference.set_geometry(reference.geometry.translate(50_000, 0)).to_file(elsewhere)
    with qtbot.waitSignal(box.layoutRead, timeout=30000):
        box.reference_field.set_path(elsewhere)
    assess(qtbot, box)
    assert box.assessment is None and box.table.rowCount() == 0 and not box.overall_label.text()
    assert "Assessment failed" in box.error_label.text() and "no reference sample" in box.error_label.text()

    renamed = tmp_path / "reference_without_a_class_column.gpkg"
    reference.rename(columns={"class": "truth"}).to_file(renamed)
    with qtbot.waitSignal(box.layoutRead, timeout=30000):
        box.reference_field.set_path(renamed)
    assert box.column_combo.currentIndex() == -1 and "choose the one holding the class" in box.column_note.text()
    assert not box.assess_button.isEnabled()
    box.column_combo.setCurrentText("truth")
    assess(qtbot, box)
    assert box.accuracy().to_dict() == expected["polygons"], "the chosen column gives the same assessment"

    with qtbot.waitSignal(box.layoutRead, timeout=30000):
        box.reference_field.set_path(classes)  # a class raster as reference: the map against itself
    assert not box.column_combo.isVisibleTo(box), "a raster has no class column to choose"
    assess(qtbot, box)
    assert box.unit_combo.currentData() == "pixels" and box.accuracy().overall == 1.0
    assert box.accuracy().samples == expected["pixels"]["samples"]


def labelled_and_assessed(qtbot, panel, out_dir: Path) -> dict[str, bytes]:
    """The demo scene labelled and assessed once against its reference; the files written, by name."""
    box = panel.assessment
    with qtbot.waitSignal(box.layoutRead, timeout=30000):
        box.reference_field.set_path(REFERENCE)
    add_and_plan(qtbot, panel, SCENE)
    label(qtbot, panel, out_dir)
    assess(qtbot, box)
    assert box.assessment is not None, box.error_label.text()
    return {path.name: path.read_bytes() for path in box.written}


def assessment_files_beside(panel) -> dict[str, bytes]:
    folder = panel.current_entry().result.classes.parent
    return {path.name: path.read_bytes() for path in folder.glob("ucmerced_mosaic_assessment*")}


def test_reassessing_asks_before_replacing_the_earlier_files(qtbot, panel, tmp_path, monkeypatch):
    asked = []

    def answer(reply):
        monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args[2]) or reply)

    answer(QMessageBox.StandardButton.Yes)
    box = panel.assessment
    first = labelled_and_assessed(qtbot, panel, tmp_path / "maps")
    assert not asked, "nothing to replace the first time"
    assert set(first) == {"ucmerced_mosaic_assessment.json", "ucmerced_mosaic_assessment_pixels.csv",
                          "ucmerced_mosaic_assessment_polygons.csv"}
    shown = box.overall_label.text()

    answer(QMessageBox.StandardButton.No)
    box.column_combo.setCurrentText("ucmerced_class")
    box.assess_button.click()
    assert len(asked) == 1 and "ucmerced_mosaic_assessment_polygons.csv" in asked[0] and "replaces" in asked[0]
    assert box._assess_worker is None, "No: the assessment does not run"
    assert "earlier assessment files were kept" in box.status_label.text()
    assert box.overall_label.text() == shown and assessment_files_beside(panel) == first

    answer(QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(box.layoutRead, timeout=30000):
        box.reference_field.set_path(panel.current_entry().result.classes)  # the map against itself: pixels only
    assess(qtbot, box)
    assert len(asked) == 2 and box.accuracy().overall == 1.0
    replaced = assessment_files_beside(panel)
    assert set(replaced) == {"ucmerced_mosaic_assessment.json", "ucmerced_mosaic_assessment_pixels.csv"}, \
        "the earlier polygons CSV is gone: the files beside the map describe one assessment"
    assert replaced["ucmerced_mosaic_assessment.json"] != first["ucmerced_mosaic_assessment.json"]
    assert json.loads(replaced["ucmerced_mosaic_assessment.json"])["reference_kind"] == "raster"


def test_a_running_assessment_can_be_cancelled(qtbot, panel, tmp_path, monkeypatch):
    """Cancel while the engine reads the map: the panel is idle again, says so, and the earlier files
    are untouched. The engine's block reader waits for the cancel here, so the click lands mid-run."""
    import threading
    import time

    from sembridge_engine.labelling import assess

    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.Yes)
    box = panel.assessment
    earlier = labelled_and_assessed(qtbot, panel, tmp_path / "maps")
    reading, real_blocks = threading.Event(), assess._blocks

    def blocks_once_cancelled(dataset, block, cancel):
        reading.set()
        deadline = time.monotonic() + 60
        while not cancel.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        yield from real_blocks(dataset, block, cancel)

    monkeypatch.setattr(assess, "_blocks", blocks_once_cancelled)
    assert not box.cancel_button.isVisibleTo(box), "Cancel shows only while assessing"
    box.assess_button.click()
    assert box.cancel_button.isVisibleTo(box) and not box.assess_button.isEnabled()
    assert box.status_label.text() == "Assessing…"
    qtbot.waitUntil(reading.is_set, timeout=30000)
    with qtbot.waitSignal(box.assessed, timeout=30000):
        box.cancel_button.click()
    assert box._assess_worker is None and box.assess_button.isEnabled() and not box.cancel_button.isVisibleTo(box)
    assert box.status_label.text().startswith("Assessment cancelled: nothing was written")
    assert box.assessment is None and box.table.rowCount() == 0 and not box.error_label.text()
    assert assessment_files_beside(panel) == earlier, "the earlier assessment is untouched"
