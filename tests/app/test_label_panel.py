"""Label map on the bundled scene: estimate, run in a worker, outputs written and previewed."""
from __future__ import annotations

import json
from pathlib import Path

from app.label_panel import LabelPanel
from resources import demo_project


def test_label_the_demo_scene(qtbot, settings, trained_run, tmp_path):
    scene = demo_project() / "scene" / "ucmerced_mosaic.tif"
    panel = LabelPanel(settings)
    qtbot.addWidget(panel)
    panel.resize(1000, 700)
    panel.show()
    with qtbot.waitSignal(panel.bundleLoaded, timeout=60000):
        panel.bundle_field.set_path(trained_run / "model.sembridge")
    assert panel.tile_spin.value() == 0 and panel.bundle.tile_size == 32  # auto: the training footprint
    with qtbot.waitSignal(panel.planned, timeout=60000):
        panel.drop_area.pathsDropped.emit([scene])
    assert panel.plan is not None, panel.error_label.text()
    assert [combo.currentData() for combo in panel.band_combos] == panel.plan.band_indexes
    assert "windows" in panel.plan_label.text() and panel.plan.tile == 256 and "window 256 px" in panel.plan_label.text()
    assert panel.run_button.isEnabled()

    out_dir = tmp_path / "maps"
    panel.output_field.set_path(out_dir)
    with qtbot.waitSignal(panel.labelled, timeout=120000):
        panel.run_button.click()
    assert panel.results, panel.error_label.text()
    result = panel.results[0]
    for path in result.paths():
        assert Path(path).is_file() and Path(path).parent == out_dir
    assert result.preview is not None and Path(result.preview).suffix == ".png"
    assert panel.preview_label.pixmap() is not None and not panel.preview_label.pixmap().isNull()
    summary = json.loads(Path(result.summary).read_text())
    assert summary["windows_classified"] > 0
    assert panel.legend.count() == len(panel.bundle.class_names)
    assert panel.open_button.isEnabled()


def test_unreadable_scene_shows_the_engine_message(qtbot, settings, trained_run, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    panel = LabelPanel(settings)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.bundleLoaded, timeout=60000):
        panel.bundle_field.set_path(trained_run / "model.sembridge")
    with qtbot.waitSignal(panel.planned, timeout=60000):
        panel.add_scenes([bad])
    assert panel.plan is None
    assert "bad.tif" in panel.error_label.text()
    assert not panel.run_button.isEnabled()


def test_far_too_coarse_scene_is_stopped_in_the_preflight_box(qtbot, settings, trained_run):
    panel = LabelPanel(settings)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.bundleLoaded, timeout=60000):
        panel.bundle_field.set_path(trained_run / "model.sembridge")
    with qtbot.waitSignal(panel.planned, timeout=60000):
        panel.add_scenes([demo_project() / "scene" / "scene_subset.tif"])
    assert panel.plan is not None and panel.plan.blocked
    assert "far coarser than the training data" in panel.error_label.text() and "300 m" in panel.error_label.text()
    assert not panel.run_button.isEnabled()
