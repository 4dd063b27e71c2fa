"""Label map panel: pick scene GeoTIFF(s) and a model bundle, check the pre-flight estimate
(labelling.scene.plan_scene), label with progress and cancel, then look at the preview with its
legend and open the output folder."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QColor, QDesktopServices, QPixmap
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget,
    QListWidgetItem, QProgressBar, QPushButton, QSizePolicy, QSpinBox, QSplitter, QVBoxLayout, QWidget,
)

from app.settings import Settings, data_dir
from app.widgets import ask_open_files, DropArea, error_label, human_bytes, human_seconds, PathField, show_error
from app.workers import EngineWorker, plain_worker
from sembridge_engine.labelling.options import LabelOptions

SCENE_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}


@dataclass
class PlanOutcome:
    band_count: int
    band_descriptions: list[str]
    plan: Any = None
    error: str = ""


def plan_job(bundle, scene: str, tile: int, stride: int, batch: int, bands: list[int] | None,
             device: str) -> PlanOutcome:
    """Scene description plus plan_scene (worker thread); a band problem is reported, not raised."""
    from sembridge_engine.labelling.scene import plan_scene
    from sembridge_engine.labelling.source import describe_scene

    info = describe_scene(scene)
    outcome = PlanOutcome(info.band_count, list(info.band_descriptions))
    try:
        outcome.plan = plan_scene(bundle, scene, LabelOptions(tile=tile or None, stride=stride or None, batch=batch,
                                                              bands=bands, device=device))
    except ValueError as error:
        outcome.error = str(error)
    return outcome


def label_job(bundle, scenes: list[str], out_dir: Path, options, callback, cancel) -> list:
    """label_scene for each scene in turn (worker thread) with the same LabelOptions."""
    from sembridge_engine.labelling.scene import label_scene

    return [label_scene(bundle, scene, out_dir, options, callback=callback, cancel=cancel) for scene in scenes]


class LabelPanel(QWidget):
    labelled = Signal()
    planned = Signal()
    bundleLoaded = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.bundle = None
        self.bundle_path = ""
        self._requested_bundle = ""
        self.plan = None
        self.results: list = []
        self.band_count = 0
        self._bundle_worker: EngineWorker | None = None
        self._plan_worker: EngineWorker | None = None
        self._plan_again = False
        self.label_worker: EngineWorker | None = None

        self.scene_list = QListWidget()
        self.scene_list.setMinimumHeight(70)
        self.scene_list.currentRowChanged.connect(lambda _row: self._schedule_plan(reset_bands=True))
        self.drop_area = DropArea("Drop scene GeoTIFF(s) here")
        self.drop_area.pathsDropped.connect(self.add_scenes)
        add_scene = QPushButton("Add scene…")
        add_scene.clicked.connect(self._choose_scenes)
        remove_scene = QPushButton("Remove")
        remove_scene.clicked.connect(self._remove_scene)
        self.bundle_field = PathField("model.sembridge", folder=False, file_filter="Model bundle (*.sembridge)",
                                      settings=settings, key="bundle")
        self.bundle_field.pathChanged.connect(self._bundle_changed)
        self.tile_spin = QSpinBox(minimum=0, maximum=4096, value=0, specialValueText="auto (footprint)")
        self.tile_spin.setToolTip("Window size in scene pixels; auto: the ground one training image covered, "
                                  "at the scene's resolution")
        self.stride_spin = QSpinBox(minimum=0, maximum=4096, value=0, specialValueText="auto (half)")
        self.stride_spin.setToolTip("Step between windows; smaller than the window means overlapping windows")
        self.batch_spin = QSpinBox(minimum=1, maximum=4096, value=32)
        self.band_combos: list[QComboBox] = []
        self.bands_box = QGroupBox("Scene bands fed to the model")
        self.bands_form = QFormLayout(self.bands_box)
        self.probabilities_check = QCheckBox("Also write per-class probabilities")
        self.output_field = PathField("Folder for the outputs", settings=settings, key="maps")
        self.output_field.set_path(str(data_dir() / "maps"))
        self.plan_label = QLabel("Choose a scene and a model to see the estimate.")
        self.plan_label.setWordWrap(True)
        self.error_label = error_label()
        self.run_button = QPushButton("Label map")
        self.run_button.setStyleSheet("font-weight: bold; padding: 4px 14px;")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

        for spin in (self.tile_spin, self.stride_spin, self.batch_spin):
            spin.valueChanged.connect(lambda _v: self._schedule_plan())

        scenes_box = QGroupBox("Scenes")
        scenes_layout = QVBoxLayout(scenes_box)
        scenes_layout.addWidget(self.drop_area)
        scenes_layout.addWidget(self.scene_list, 1)
        scene_buttons = QHBoxLayout()
        scene_buttons.addWidget(add_scene)
        scene_buttons.addWidget(remove_scene)
        scene_buttons.addStretch(1)
        scenes_layout.addLayout(scene_buttons)
        options = QFormLayout()
        options.addRow("Model:", self.bundle_field)
        options.addRow("Tile (px):", self.tile_spin)
        options.addRow("Stride (px):", self.stride_spin)
        options.addRow("Batch:", self.batch_spin)
        options.addRow("Output folder:", self.output_field)
        options.addRow(self.probabilities_check)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        run_row.addWidget(self.progress, 1)
        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        controls_layout.setContentsMargins(0, 0, 0, 0)
        controls_layout.addWidget(scenes_box, 1)
        controls_layout.addLayout(options)
        controls_layout.addWidget(self.bands_box)
        controls_layout.addWidget(self.plan_label)
        controls_layout.addWidget(self.error_label)
        controls_layout.addLayout(run_row)

        self.preview_label = QLabel("The labelled map appears here.")
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setMinimumSize(320, 260)
        self.preview_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.preview_label.setStyleSheet("background: #f4f4f4; border: 1px solid #cccccc;")
        self.legend = QListWidget()
        self.legend.setMaximumHeight(150)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open output folder")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_output_folder)
        result = QWidget()
        result_layout = QVBoxLayout(result)
        result_layout.setContentsMargins(0, 0, 0, 0)
        result_layout.addWidget(self.preview_label, 1)
        result_layout.addWidget(QLabel("Legend (share of labelled pixels):"))
        result_layout.addWidget(self.legend)
        result_layout.addWidget(self.result_label)
        result_layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(controls)
        splitter.addWidget(result)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self._plan_timer = QTimer(self)
        self._plan_timer.setSingleShot(True)
        self._plan_timer.setInterval(400)
        self._plan_timer.timeout.connect(self.estimate)
        self._reset_bands_on_plan = True
        self._update_buttons()

    # -- inputs -----------------------------------------------------------------------------
    def set_default_bundle(self, path: str | Path | None) -> None:
        if path and not self.bundle_field.path():
            self.bundle_field.set_path(path)

    def _choose_scenes(self) -> None:
        files = ask_open_files(self, self.settings, "scenes", "Scenes to label", "GeoTIFF (*.tif *.tiff);;All files (*)")
        if files:
            self.add_scenes([Path(f) for f in files])

    def add_scenes(self, paths: list[Path]) -> None:
        """Add scene files (folders contribute their GeoTIFFs) and select the first new one."""
        existing = {self.scene_list.item(i).text() for i in range(self.scene_list.count())}
        added = []
        for path in paths:
            candidates = sorted(p for p in path.iterdir() if p.suffix.lower() in SCENE_SUFFIXES) if path.is_dir() else [path]
            for candidate in candidates:
                if str(candidate) not in existing:
                    self.scene_list.addItem(str(candidate))
                    existing.add(str(candidate))
                    added.append(candidate)
        if added:
            self.scene_list.setCurrentRow(self.scene_list.count() - len(added))
        self._update_buttons()

    def _remove_scene(self) -> None:
        row = self.scene_list.currentRow()
        if row >= 0:
            self.scene_list.takeItem(row)
        self._update_buttons()

    def scenes(self) -> list[str]:
        return [self.scene_list.item(i).text() for i in range(self.scene_list.count())]

    def current_scene(self) -> str:
        item = self.scene_list.currentItem()
        return item.text() if item is not None else ""

    def selected_bands(self) -> list[int] | None:
        if not self.band_combos or any(combo.currentData() is None for combo in self.band_combos):
            return None
        return [int(combo.currentData()) for combo in self.band_combos]

    # -- bundle -----------------------------------------------------------------------------
    def _bundle_changed(self, path: str) -> None:
        self.bundle = None
        self.plan = None
        self._update_buttons()
        if not path or not Path(path).is_file():
            self.plan_label.setText("Choose a model bundle (model.sembridge).")
            return
        if self._bundle_worker is not None:
            return
        from_path = self._requested_bundle = path

        def load(_callback, _cancel):
            from sembridge_engine.bundle import load_bundle

            return load_bundle(from_path)

        self.plan_label.setText("Loading the model…")
        worker = EngineWorker(load)
        worker.succeeded.connect(lambda bundle: self._bundle_ready(from_path, bundle))
        worker.failed.connect(self._bundle_failed)
        worker.finished.connect(self._bundle_worker_done)
        self._bundle_worker = worker
        worker.start()

    def _bundle_failed(self, message: str, _cancelled: bool) -> None:
        self.plan_label.setText("")
        show_error(self.error_label, f"Cannot load the model: {message}")

    def _bundle_worker_done(self) -> None:
        self._bundle_worker.deleteLater()
        self._bundle_worker = None
        if self.bundle_field.path() != self._requested_bundle:
            self._bundle_changed(self.bundle_field.path())

    def _bundle_ready(self, path: str, bundle) -> None:
        self.bundle, self.bundle_path = bundle, path
        show_error(self.error_label, "")
        for spin in (self.tile_spin, self.stride_spin):
            spin.blockSignals(True)
            spin.setValue(0)
            spin.blockSignals(False)
        self.bundleLoaded.emit()
        self._schedule_plan(reset_bands=True)

    # -- plan -------------------------------------------------------------------------------
    def _schedule_plan(self, reset_bands: bool = False) -> None:
        self._reset_bands_on_plan = self._reset_bands_on_plan or reset_bands
        self.plan = None
        self._update_buttons()
        if self.bundle is not None and self.current_scene():
            self._plan_timer.start()

    def estimate(self) -> None:
        """plan_scene in a worker; with fresh bands the engine picks them from the file."""
        self._plan_timer.stop()
        if self.bundle is None or not self.current_scene() or self.label_worker is not None:
            return
        if self._plan_worker is not None:
            self._plan_again = True
            return
        bands = None if self._reset_bands_on_plan else self.selected_bands()
        self.plan_label.setText("Estimating…")
        worker = plain_worker(plan_job, self.bundle, self.current_scene(), self.tile_spin.value(),
                              self.stride_spin.value(), self.batch_spin.value(), bands, self.settings.device)
        worker.succeeded.connect(self._show_plan)
        worker.failed.connect(self._plan_failed)
        worker.finished.connect(self._plan_worker_done)
        self._plan_worker = worker
        worker.start()

    def _plan_worker_done(self) -> None:
        self._plan_worker.deleteLater()
        self._plan_worker = None
        if self._plan_again:
            self._plan_again = False
            self.estimate()

    def _plan_failed(self, message: str, _cancelled: bool) -> None:
        self.plan_label.setText("")
        show_error(self.error_label, message)
        self.planned.emit()

    def _show_plan(self, outcome: PlanOutcome) -> None:
        if self._plan_again:
            return
        if self._reset_bands_on_plan or outcome.band_count != self.band_count:
            chosen = outcome.plan.band_indexes if outcome.plan is not None else list(range(1, self.bundle.in_channels + 1))
            self._build_band_combos(outcome.band_count, outcome.band_descriptions, chosen)
            self._reset_bands_on_plan = False
        self.plan = outcome.plan
        if outcome.plan is None:
            show_error(self.error_label, outcome.error + "\nPick the bands below.")
            self.plan_label.setText("")
        else:
            plan = outcome.plan
            show_error(self.error_label, "Stopped: " + plan.scale.warning if plan.blocked else "")
            self.plan_label.setText(
                f"<b>Scale:</b> {html.escape(plan.scale.describe())}<br><b>Estimate:</b> {plan.width}×{plan.height} px "
                f"scene, {plan.windows} windows (about {plan.windows_skipped_estimate} skipped as nodata), "
                f"peak memory {human_bytes(plan.memory_bytes)}, about {human_seconds(plan.seconds_estimate)} "
                f"on {plan.device}.")
        self._update_buttons()
        self.planned.emit()

    def _build_band_combos(self, band_count: int, descriptions: list[str], chosen: list[int]) -> None:
        self.band_count = band_count
        while self.bands_form.rowCount():
            self.bands_form.removeRow(0)
        self.band_combos = []
        names = self.bundle.band_names if self.bundle is not None else []
        for position, name in enumerate(names):
            combo = QComboBox()
            for band in range(1, band_count + 1):
                description = descriptions[band - 1] if band - 1 < len(descriptions) and descriptions[band - 1] else ""
                combo.addItem(f"Band {band}" + (f" ({description})" if description else ""), band)
            if position < len(chosen):
                combo.setCurrentIndex(max(0, combo.findData(chosen[position])))
            combo.currentIndexChanged.connect(lambda _i: self._schedule_plan())
            self.band_combos.append(combo)
            self.bands_form.addRow(f"Model band {name}:", combo)

    # -- run --------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        running = self.label_worker is not None
        self.run_button.setEnabled(not running and self.bundle is not None and bool(self.scenes())
                                   and self.plan is not None and not self.plan.blocked)
        self.cancel_button.setEnabled(running)

    def start(self) -> None:
        if self.bundle is None or not self.scenes() or self.label_worker is not None:
            return
        out_dir = Path(self.output_field.path() or data_dir() / "maps")
        options = LabelOptions(tile=self.tile_spin.value() or None, stride=self.stride_spin.value() or None,
                               batch=self.batch_spin.value(),
                               bands=self.selected_bands(), device=self.settings.device,
                               probabilities=self.probabilities_check.isChecked())
        scenes = self.scenes()
        bundle = self.bundle
        worker = EngineWorker(lambda callback, cancel: label_job(bundle, scenes, out_dir, options, callback, cancel))
        worker.batchProgress.connect(self._progress)
        worker.succeeded.connect(self._show_results)
        worker.failed.connect(self._failed)
        worker.finished.connect(self._label_done)
        self.label_worker = worker
        self.out_dir = out_dir
        self.progress.setRange(0, 0)
        show_error(self.error_label, "")
        self.result_label.setText(f"Labelling {len(scenes)} scene(s)…")
        self._update_buttons()
        worker.start()

    def cancel(self) -> None:
        if self.label_worker is not None:
            self.label_worker.cancel()
            self.cancel_button.setEnabled(False)

    def _progress(self, _stage: str, _epoch: int, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _failed(self, message: str, cancelled: bool) -> None:
        if cancelled:
            self.result_label.setText("Labelling cancelled; no partial outputs were kept.")
        else:
            self.result_label.setText("")
            show_error(self.error_label, f"Labelling failed: {message}")

    def _label_done(self) -> None:
        self.label_worker.deleteLater()
        self.label_worker = None
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.results else 0)
        self._update_buttons()
        self.labelled.emit()

    def _show_results(self, results: list) -> None:
        self.results = results
        last = results[-1]
        if last.preview is not None and Path(last.preview).exists():
            self.preview_pixmap = QPixmap(str(last.preview))
            self._fit_preview()
        self.legend.clear()
        colours = dict(zip(self.bundle.class_names, self.bundle.colours))
        for name, share in sorted(last.class_shares.items(), key=lambda item: -item[1]):
            item = QListWidgetItem(f"{name}: {share:.1%}")
            swatch = QPixmap(14, 14)
            swatch.fill(QColor(colours.get(name, "#888888")))
            item.setIcon(swatch)
            self.legend.addItem(item)
        files = "\n".join(str(path) for result in results for path in result.paths())
        self.result_label.setText(f"{len(results)} scene(s) labelled in {sum(r.seconds for r in results):.1f} s. "
                                  f"Outputs:\n{files}")
        self.open_button.setEnabled(True)

    def _fit_preview(self) -> None:
        pixmap = getattr(self, "preview_pixmap", None)
        if pixmap is not None and not pixmap.isNull():
            self.preview_label.setPixmap(pixmap.scaled(self.preview_label.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                                       Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_preview()

    def open_output_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.out_dir)))
