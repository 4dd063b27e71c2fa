"""Export a finished run's model: the `.sembridge` bundle to a chosen file and, on request, a QGIS
(Deepness) model beside it, exactly as `sembridge export RUN --out FILE [--qgis]` writes them.

The export traces the network to ONNX and checks it with onnxruntime: seconds of work that hold the
GIL, so it runs in a child process (the worker thread only waits for it) and the window stays live."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout,
    QWidget,
)

from app.widgets import ask_save_file, error_label, show_error
from app.workers import EngineWorker, plain_worker


@dataclass
class ExportOutcome:
    bundle: Path
    qgis: Path | None = None
    qgis_metadata: dict[str, Any] | None = None


def export_model(run_dir: str, out: str, qgis: bool) -> ExportOutcome:
    """The engine's bundle export and, with ``qgis``, its Deepness ONNX beside the bundle (child process)."""
    from sembridge_engine.bundle import export_qgis_onnx, load_bundle, qgis_path
    from sembridge_engine.training.outputs import export_bundle

    bundle = export_bundle(Path(run_dir), Path(out))
    if not qgis:
        return ExportOutcome(bundle)
    path = qgis_path(bundle)
    return ExportOutcome(bundle, path, export_qgis_onnx(load_bundle(bundle), path))


def export_in_child(run_dir: str, out: str, qgis: bool) -> ExportOutcome:
    """``export_model`` in a spawned process; this (worker) thread waits without holding the GIL."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(export_model, run_dir, out, qgis).result()


def describe(outcome: ExportOutcome) -> str:
    lines = [f"Wrote {outcome.bundle}"]
    if outcome.qgis is not None:
        entries = outcome.qgis_metadata or {}
        resolution = (f"{entries['resolution']:g} cm/px" if "resolution" in entries
                      else "unknown to the model: set the layer's resolution in Deepness")
        lines.append(f"Wrote {outcome.qgis}")
        lines.append(f"QGIS Deepness model: {entries.get('tiles_size')} px tiles, {entries.get('tiles_overlap')} % "
                     f"overlap, resolution {resolution}")
    return "\n".join(lines)


class ExportDialog(QDialog):
    """Where to write the bundle, whether to add the QGIS model; Export runs it and says what was written."""

    exported = Signal()

    def __init__(self, settings, run_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Export model of {run_dir.name}")
        self.settings, self.run_dir = settings, Path(run_dir)
        self.outcome: ExportOutcome | None = None
        self.worker: EngineWorker | None = None
        folder = Path(settings.last_folders.get("bundle_export") or run_dir)
        self.path_edit = QLineEdit(str(folder / f"{run_dir.name}.sembridge"))
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose)
        self.qgis_check = QCheckBox("Also write a QGIS (Deepness) model")
        self.qgis_check.setToolTip("Writes <bundle name>_qgis.onnx beside the bundle: the model shaped as a segmentation "
                                   "model with the metadata the QGIS plugin Deepness reads (class names, tile size, "
                                   "resolution from the training images' footprint), checked against PyTorch")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = error_label()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(choose)
        form = QFormLayout()
        form.addRow("Model bundle:", path_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.qgis_check)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.resize(640, 0)

    def _choose(self) -> None:
        chosen = ask_save_file(self, self.settings, "bundle_export", "Export model bundle", Path(self.path_edit.text()).name,
                               "Model bundle (*.sembridge)")
        if chosen:
            self.path_edit.setText(chosen if chosen.endswith(".sembridge") else f"{chosen}.sembridge")

    def start(self) -> None:
        out = self.path_edit.text().strip()
        if not out:
            show_error(self.error_label, "Choose where to write the model bundle.")
            return
        if self.worker is not None:
            return
        show_error(self.error_label, "")
        self.outcome = None
        self.status_label.setText("Exporting (the ONNX export is checked with onnxruntime)…")
        self.export_button.setEnabled(False)
        worker = plain_worker(export_in_child, str(self.run_dir), out, self.qgis_check.isChecked())
        worker.succeeded.connect(self._exported)
        worker.failed.connect(lambda message, _cancelled: show_error(self.error_label, f"Export failed: {message}"))
        worker.finished.connect(self._done)
        self.worker = worker
        worker.start()

    def _exported(self, outcome: ExportOutcome) -> None:
        self.outcome = outcome
        self.status_label.setText(describe(outcome))

    def _done(self) -> None:
        self.worker.deleteLater()
        self.worker = None
        self.export_button.setEnabled(True)
        if self.outcome is None:
            self.status_label.setText("")
        self.exported.emit()

    def reject(self) -> None:
        if self.worker is None:  # the export finishes before the dialog goes: nothing half-written is left
            super().reject()
