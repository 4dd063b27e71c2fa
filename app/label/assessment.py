"""Accuracy of a labelled map against reference data, in the Label map panel: the user picks a
reference (points or polygons with a class column, or a class raster), the engine's assessment
(sembridge_engine.labelling.assess, the same as `sembridge assess`) runs in a worker, and the box
shows the overall accuracy with its 95 % interval and each class's user's / producer's accuracy and
F1. The JSON and CSV go beside the map, under the names the command line uses; earlier ones are
replaced only when the user says so, and a cancelled assessment writes nothing."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QMessageBox, QPushButton,
    QTableWidget, QTableWidgetItem, QVBoxLayout,
)

from app.label.messages import for_the_panel
from app.widgets import PathField, error_label, show_error
from app.workers import EngineWorker, plain_worker

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img")
REFERENCE_FILTER = ("Reference data (*.gpkg *.shp *.geojson *.json *.fgb *.tif *.tiff *.vrt *.img);;"
                    "Vector files (*.gpkg *.shp *.geojson *.json *.fgb);;Class rasters (*.tif *.tiff *.vrt *.img);;"
                    "All files (*)")
# Short headers (the panel's column is narrow), each explained in its tooltip.
COLUMNS = (("Class", "The map's class"),
           ("UA", "User's accuracy: of what the map labels as this class, the share that is this class on the ground"),
           ("PA", "Producer's accuracy: of the ground that is this class, the share the map labels as this class"),
           ("F1", "F1: the harmonic mean of user's and producer's accuracy"),
           ("n", "Reference samples of this class"))
UNIT_NAMES = {"polygons": "polygons (majority)", "pixels": "pixels", "points": "points"}


@dataclass
class ReferenceLayout:
    """What the user must choose in a reference file: its layer and class column (vectors only)."""

    path: str
    raster: bool = False
    layers: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)   # columns named like a class column
    error: str = ""


def read_reference_layout(path: str, layer: str | None) -> ReferenceLayout:
    """Layers and attribute columns of a reference file (worker thread; reads the header only)."""
    import pyogrio

    from sembridge_engine.labelling.assess import CLASS_COLUMNS

    layout = ReferenceLayout(path, raster=Path(path).suffix.lower() in RASTER_SUFFIXES)
    if layout.raster:
        return layout
    try:
        layout.layers = [str(name) for name, _geometry in pyogrio.list_layers(path)]
        info = pyogrio.read_info(path, layer=layer or layout.layers[0])
    except Exception as error:  # pyogrio raises DataSourceError / DataLayerError with GDAL's message
        layout.error = f"{path}: not a readable vector file ({error})"
        return layout
    layout.columns = [str(name) for name in info["fields"]]
    layout.candidates = [name for name in layout.columns if name.lower() in CLASS_COLUMNS]
    return layout


def output_prefix(map_path: str) -> Path:
    """Where the assessment of ``map_path`` is written: beside it, as `sembridge assess` names it."""
    from sembridge_engine.commands.assess import default_prefix

    return default_prefix(Path(map_path))


def earlier_assessment(map_path: str) -> list[Path]:
    """Files of an earlier assessment of ``map_path`` that a new one would replace."""
    from sembridge_engine.labelling.assess import assessment_files

    return [path for path in assessment_files(output_prefix(map_path)) if path.exists()]


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


class AssessmentBox(QGroupBox):
    """``set_map`` with the labelled class raster on show (None: nothing labelled yet)."""

    layoutRead = Signal()
    assessed = Signal()

    def __init__(self, settings, parent=None) -> None:
        super().__init__("Accuracy against reference data", parent)
        self.map_path = ""
        self.layout_info: ReferenceLayout | None = None
        self.assessment = None
        self.written: list[Path] = []
        self._layout_worker: EngineWorker | None = None
        self._assess_worker: EngineWorker | None = None
        self.reference_field = PathField("Reference points, polygons or class raster", folder=False,
                                         file_filter=REFERENCE_FILTER, settings=settings, key="reference")
        self.reference_field.setToolTip("Labelled points or polygons (GeoPackage, shapefile, …) with a class column, "
                                        "or a class raster; reprojected to the map's CRS")
        self.reference_field.pathCommitted.connect(self._reference_chosen)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The layer of the file that holds the reference features")
        self.layer_combo.activated.connect(lambda _index: self._read_layout(self.layer_combo.currentText()))
        self.column_combo = QComboBox()
        self.column_combo.setToolTip("The attribute holding each feature's class (a class name of the map, or its "
                                     "number counted from 0)")
        self.column_combo.currentIndexChanged.connect(lambda _index: self._update_button())
        self.column_note = QLabel()
        self.column_note.setWordWrap(True)
        self.column_note.setStyleSheet("color: #8a5a00;")
        self.assess_button = QPushButton("Assess accuracy")
        self.assess_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the assessment; nothing is written and earlier files stay as they were")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.unit_combo = QComboBox()
        self.unit_combo.setToolTip("Polygons: each judged by the map's majority class inside it (independent "
                                   "samples, the honest interval); pixels: every covered pixel")
        self.unit_combo.currentIndexChanged.connect(lambda _index: self._show_unit())
        self.status_label = QLabel()  # what the assessment is doing, or why it did not run
        self.status_label.setWordWrap(True)
        self.status_label.hide()
        self.overall_label = QLabel()
        self.overall_label.setWordWrap(True)
        self.overall_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        for column, (title, explanation) in enumerate(COLUMNS):
            header = QTableWidgetItem(title)
            header.setToolTip(explanation)
            self.table.setHorizontalHeaderItem(column, header)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # long class names are elided, not scrolled
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.written_label = QLabel()
        self.written_label.setWordWrap(True)
        self.written_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = error_label()

        self.form = form = QFormLayout()
        form.addRow("Reference:", self.reference_field)
        form.addRow("Layer:", self.layer_combo)
        form.addRow("Class column:", self.column_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.assess_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(QLabel("Accuracy:"))
        buttons.addWidget(self.unit_combo, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.column_note)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.overall_label)
        layout.addWidget(self.table)
        layout.addWidget(self.written_label)
        layout.addWidget(self.error_label)
        self._show_layout()
        self.clear_result()

    # -- inputs -------------------------------------------------------------------------------
    def set_map(self, classes_path: str | Path | None) -> None:
        """The class raster the assessment compares (the scene on show's labelled map)."""
        path = str(classes_path or "")
        if path != self.map_path:
            self.map_path = path
            self.clear_result()
        self._update_button()

    def _reference_chosen(self, path: str) -> None:
        self.layer_combo.clear()
        self._read_layout(None)

    def _read_layout(self, layer: str | None) -> None:
        path = self.reference_field.path()
        self.layout_info = None
        self._show_layout()
        if not path or self._layout_worker is not None:
            return
        if not Path(path).exists():
            show_error(self.error_label, f"Reference not found: {path}")
            return
        worker = plain_worker(read_reference_layout, path, layer)
        worker.succeeded.connect(self._layout_ready)
        worker.finished.connect(self._layout_worker_done)
        self._layout_worker = worker
        worker.start()

    def _layout_worker_done(self) -> None:
        self._layout_worker.deleteLater()
        self._layout_worker = None
        if self.layout_info is not None and self.layout_info.path != self.reference_field.path():
            self._reference_chosen(self.reference_field.path())  # chosen again while reading the first
        self.layoutRead.emit()

    def _layout_ready(self, layout: ReferenceLayout) -> None:
        self.layout_info = layout
        self.clear_result()
        show_error(self.error_label, for_the_panel(layout.error))
        self._show_layout()

    def _show_layout(self) -> None:
        """Layer and column choices of a vector reference; a guess the user should check is said so."""
        layout = self.layout_info
        vector = layout is not None and not layout.raster and not layout.error
        self.form.setRowVisible(self.layer_combo, vector and len(layout.layers) > 1)
        self.form.setRowVisible(self.column_combo, vector)
        note = ""
        if vector:
            if self.layer_combo.count() != len(layout.layers):
                self.layer_combo.clear()
                self.layer_combo.addItems(layout.layers)
            self.column_combo.blockSignals(True)
            self.column_combo.clear()
            self.column_combo.addItems(layout.columns)
            self.column_combo.setCurrentIndex(layout.columns.index(layout.candidates[0]) if layout.candidates else -1)
            self.column_combo.blockSignals(False)
            if not layout.candidates:
                note = "No column is named like a class column (class, label, …): choose the one holding the class."
            elif len(layout.candidates) > 1:
                note = (f"Several columns could hold the class ({', '.join(layout.candidates)}); "
                        f"'{layout.candidates[0]}' is used unless you choose another.")
        self.column_note.setText(note)
        self.column_note.setVisible(bool(note))
        self._update_button()

    def reference_choice(self) -> tuple[str, str | None, str | None]:
        """(reference path, class column, layer) as chosen; column and layer None for a raster."""
        layout = self.layout_info
        if layout is None or layout.raster:
            return self.reference_field.path(), None, None
        layer = self.layer_combo.currentText() if len(layout.layers) > 1 else None
        return layout.path, self.column_combo.currentText() or None, layer

    def _update_button(self) -> None:
        layout = self.layout_info
        ready = (layout is not None and not layout.error and (layout.raster or self.column_combo.currentIndex() >= 0))
        self.assess_button.setEnabled(bool(self.map_path) and ready and self._assess_worker is None)
        self.assess_button.setToolTip("Compare the labelled map on show with the reference; writes "
                                      "<scene>_assessment.json and .csv beside the map" if self.map_path else
                                      "Label the scene first: the assessment compares its map")

    # -- assessment -----------------------------------------------------------------------------
    def start(self) -> None:
        if not self.assess_button.isEnabled():
            return
        if not self._may_replace(earlier_assessment(self.map_path)):
            self.set_status("Not assessed: the earlier assessment files were kept.")
            return
        from sembridge_engine.labelling.assess import assess_to_files

        map_path, (reference, column, layer) = self.map_path, self.reference_choice()
        prefix = output_prefix(map_path)

        def job(_callback, cancel):
            return assess_to_files(map_path, reference, prefix, class_column=column, layer=layer, cancel=cancel)

        worker = EngineWorker(job)
        worker.succeeded.connect(lambda outcome: self._assessed(map_path, *outcome))
        worker.failed.connect(self._assessment_failed)
        worker.finished.connect(self._assess_worker_done)
        self._assess_worker = worker
        self.clear_result()
        self.set_status("Assessing…")
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self._update_button()
        worker.start()

    def _may_replace(self, earlier: list[Path]) -> bool:
        """Ask before an assessment replaces earlier files beside the map; True when none exist."""
        if not earlier:
            return True
        names = "\n".join(path.name for path in earlier)
        answer = QMessageBox.question(self, "Replace the earlier assessment?",
                                      f"An earlier assessment of this map is in {earlier[0].parent}:\n{names}\n\n"
                                      "Assessing again replaces these files. Replace them?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def cancel(self) -> None:
        """Stop the running assessment at its next check (between blocks of the map)."""
        if self._assess_worker is not None:
            self._assess_worker.cancel()
            self.cancel_button.setEnabled(False)
            self.set_status("Cancelling…")

    def _assessment_failed(self, message: str, cancelled: bool) -> None:
        if cancelled:
            self.set_status("Assessment cancelled: nothing was written (earlier files, if any, are unchanged).")
        else:
            show_error(self.error_label, f"Assessment failed: {for_the_panel(message)}")

    def _assess_worker_done(self) -> None:
        self._assess_worker.deleteLater()
        self._assess_worker = None
        self.cancel_button.hide()
        if self.status_label.text() in ("Assessing…", "Cancelling…"):
            self.set_status("")
        self._update_button()
        self.assessed.emit()

    def _assessed(self, map_path: str, assessment, written: list[Path]) -> None:
        if map_path != self.map_path:
            return  # the scene on show changed while assessing
        self.assessment, self.written = assessment, written
        units = [accuracy.unit for accuracy in assessment.accuracies]
        self.unit_combo.blockSignals(True)
        self.unit_combo.clear()
        for unit in units:
            self.unit_combo.addItem(UNIT_NAMES.get(unit, unit), unit)
        self.unit_combo.setCurrentIndex(units.index("polygons") if "polygons" in units else 0)
        self.unit_combo.blockSignals(False)
        self.unit_combo.setEnabled(len(units) > 1)
        unknown = assessment.details.get("unknown_reference_classes") or []
        show_error(self.error_label, f"Reference classes not in the map, left out: {', '.join(unknown)}" if unknown else "")
        self.written_label.setText("Written: " + ", ".join(path.name for path in written))
        self.written_label.setToolTip("\n".join(map(str, written)))
        self._show_unit()

    def accuracy(self):
        """The Accuracy of the chosen unit, or None."""
        if self.assessment is None:
            return None
        unit = self.unit_combo.currentData()
        return next((accuracy for accuracy in self.assessment.accuracies if accuracy.unit == unit), None)

    def _show_unit(self) -> None:
        accuracy = self.accuracy()
        if accuracy is None:
            return
        low, high = accuracy.interval()
        self.overall_label.setText(f"<b>Overall accuracy {percent(accuracy.overall)}</b> (95% interval "
                                   f"{percent(low)} – {percent(high)}) over {accuracy.samples} {accuracy.unit}")
        rows = accuracy.per_class()
        self.table.setRowCount(len(rows))
        for row, entry in enumerate(rows):
            cells = (entry["class_name"], percent(entry["users_accuracy"]), percent(entry["producers_accuracy"]),
                     "–" if entry["f1"] is None else f"{entry['f1']:.2f}", str(entry["reference_count"]))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.table.show()
        self.table.resizeRowsToContents()
        self.table.setFixedHeight(self.table.horizontalHeader().height() + self.table.verticalHeader().length()
                                  + 2 * self.table.frameWidth() + 2)  # every class visible, no inner scrolling

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setVisible(bool(text))

    def clear_result(self) -> None:
        self.set_status("")
        self.assessment, self.written = None, []
        self.unit_combo.clear()
        self.unit_combo.setEnabled(False)
        self.overall_label.setText("")
        self.table.setRowCount(0)
        self.table.hide()
        self.written_label.setText("")
        show_error(self.error_label, "")
