"""Dropping files on the Classify panel fills the grid with predictions from a real bundle."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import rasterio
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from app.classify_panel import ClassifyPanel
from resources import demo_project
from sembridge_engine.data.readers import read_image


def drop_urls(widget, paths: list[Path]) -> None:
    """Deliver a real QDropEvent carrying file URLs, as a file manager would."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)


def test_drop_files_and_folders_fills_the_grid(qtbot, settings, trained_run, tmp_path):
    import json

    class_names = json.loads((trained_run / "student.json").read_text())["class_names"]
    panel = ClassifyPanel(settings)
    qtbot.addWidget(panel)
    panel.resize(900, 700)
    panel.show()
    panel.set_default_bundle(trained_run / "model.sembridge")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    forest = demo_project() / "rgb" / "Forest"
    river = sorted((demo_project() / "rgb" / "River").glob("*.jpg"))[:3]
    deep = tmp_path / "river_uint16.tif"  # the same photo stored at 16 bits: its values get mapped, and it says so
    pixels = read_image(river[0], as_rgb=True).astype(np.uint16) * 257
    with rasterio.open(deep, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=3,
                       dtype="uint16") as out:
        out.write(pixels)

    with qtbot.waitSignal(panel.classified, timeout=120000):
        drop_urls(panel.drop_area, [forest, *river, deep, broken])

    tiles = panel.model.tiles
    assert len(tiles) == 30 + 3 + 1 + 1
    good = [tile for tile in tiles if tile.error is None]
    assert len(good) == 34
    noted = [tile for tile in good if tile.warning]
    assert [Path(tile.path).name for tile in noted] == ["river_uint16.tif"] and "uint16 mapped" in noted[0].warning
    assert "1 with a note" in panel.status_label.text()
    row = next(index for index, tile in enumerate(tiles) if tile is noted[0])
    assert "Note: radiometry" in panel.model.data(panel.model.index(row), Qt.ItemDataRole.ToolTipRole)
    assert all(tile.predicted in class_names and 0.0 < tile.confidence <= 1.0 for tile in good)
    assert all(tile.image is not None and tile.image.width() > 0 for tile in good)
    bad = [tile for tile in tiles if tile.error]
    assert [Path(tile.path).name for tile in bad] == ["broken.png"]
    assert "broken.png" in panel.status_label.text() or "could not be read" in panel.status_label.text()

    panel.sort_combo.setCurrentIndex(2)
    confidences = [tile.confidence for tile in panel.visible_tiles()]
    assert confidences == sorted(confidences, reverse=True)

    predicted = good[0].predicted
    panel.class_filter.setCurrentIndex(panel.class_filter.findData(predicted))
    visible = panel.visible_tiles()
    assert visible and all(tile.predicted == predicted for tile in visible)

    out = panel.export_csv(tmp_path / "predictions.csv", only_shown=True)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(visible)
    assert {row["predicted_class"] for row in rows} == {predicted}
    everything = panel.export_csv(tmp_path / "all.csv")  # a filter on does not drop rows unasked
    with everything.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(tiles)
    assert {row["path"] for row in rows} == {tile.path for tile in tiles}
    assert [Path(row["path"]).name for row in rows if row["warning"]] == ["river_uint16.tif"]

    panel.class_filter.setCurrentIndex(panel.class_filter.findData("__errors__"))
    assert [Path(t.path).name for t in panel.visible_tiles()] == ["broken.png"]
    panel.view.viewport().grab()


def test_missing_bundle_is_an_inline_error(qtbot, settings, tmp_path):
    panel = ClassifyPanel(settings)
    qtbot.addWidget(panel)
    panel.add_paths([demo_project() / "rgb" / "Forest"])
    assert panel.worker is None
    assert "model bundle" in panel.error_label.text().lower()
