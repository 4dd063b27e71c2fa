"""Label map panel: scenes (each with its own band choice and area of interest), a model bundle,
the engine's pre-flight plan with its scale and radiometry warnings, labelling with progress and
cancel, the map view of the scene before and after labelling, and its accuracy against reference
data (app/label/assessment.py)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMessageBox,
    QProgressBar, QPushButton, QScrollArea, QSpinBox, QSplitter, QStyle, QVBoxLayout, QWidget,
)

from app.label.assessment import AssessmentBox
from app.label.jobs import SceneEntry, existing_outputs, label_job, plan_job
from app.label.map_view import MapView
from app.label.bands import BandChooser
from app.label.messages import for_the_panel, plan_html
from app.settings import Settings, data_dir
from app.widgets import DropArea, PathField, ask_open_files, error_label, open_folder, show_error, steady_label
from app.workers import EngineWorker, plain_worker

SCENE_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}
PathRole = Qt.ItemDataRole.UserRole


class LabelPanel(QWidget):
    labelled = Signal()
    planned = Signal()
    bundleLoaded = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.bundle = None
        self.entries: dict[str, SceneEntry] = {}
        self.results: list = []
        self.out_dir = data_dir() / "maps"
        self._requested_bundle = ""
        self._bundle_worker: EngineWorker | None = None
        self._plan_worker: EngineWorker | None = None
        self._plan_queue: list[str] = []
        self.label_worker: EngineWorker | None = None

        self.scene_list = QListWidget()
        self.scene_list.setMinimumHeight(60)
        self.scene_list.currentRowChanged.connect(lambda _row: self._scene_chosen())
        self.drop_area = DropArea("Drop scene GeoTIFF(s) here")
        self.drop_area.pathsDropped.connect(self.add_scenes)
        add_scene = QPushButton("Add scene…")
        add_scene.clicked.connect(self._choose_scenes)
        remove_scene = QPushButton("Remove")
        remove_scene.clicked.connect(self._remove_scene)
        self.bundle_field = PathField("model.sembridge", folder=False, file_filter="Model bundle (*.sembridge)",
                                      settings=settings, key="bundle")
        self.bundle_field.pathChanged.connect(self._bundle_changed)
        self.tile_spin = QSpinBox(minimum=0, maximum=100_000, value=0, specialValueText="from the model")
        self.tile_spin.setToolTip("Window size in scene pixels. 'From the model': the ground one training image "
                                  "covered, at this scene's resolution")
        self.stride_spin = QSpinBox(minimum=0, maximum=100_000, value=0, specialValueText="half a window")
        self.stride_spin.setToolTip("Step between windows; smaller than the window means overlapping windows "
                                    "(smoother maps, more time)")
        self.batch_spin = QSpinBox(minimum=1, maximum=4096, value=32)
        self.batch_spin.setToolTip("Windows per model call; lower it if memory runs out")
        self.force_check = QCheckBox("Label anyway at this scale")
        self.force_check.setToolTip("Label a scene far coarser than the training images, or smaller than one, although "
                                    "the labels will be at the wrong scale")
        self.probabilities_check = QCheckBox("Also write per-class probabilities")
        self.bands_box = BandChooser()
        self.bands_box.bandsChosen.connect(self._bands_changed)
        self.output_field = PathField("Folder for the outputs", settings=settings, key="maps")
        self.output_field.set_path(str(self.out_dir))
        self.plan_label = QLabel("Choose a scene and a model to see the estimate.")
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextFormat(Qt.TextFormat.RichText)
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
        for widget in (self.tile_spin, self.stride_spin, self.batch_spin):
            widget.valueChanged.connect(lambda _value: self._options_changed())
        self.force_check.toggled.connect(lambda _on: self._options_changed())
        self.probabilities_check.toggled.connect(lambda _on: self._options_changed())

        self.map_view = MapView()
        self.map_view.areaChanged.connect(self._area_changed)
        self.legend = self.map_view.legend
        self.result_label = steady_label(lines=3)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open output folder")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_output_folder)
        self.assessment = AssessmentBox(settings)

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
        options.addRow("Window (px):", self.tile_spin)
        options.addRow("Stride (px):", self.stride_spin)
        options.addRow("Batch:", self.batch_spin)
        options.addRow(self.force_check)
        options.addRow("Output folder:", self.output_field)
        options.addRow(self.probabilities_check)
        preflight = QGroupBox("Pre-flight check (this scene)")
        QVBoxLayout(preflight).addWidget(self.plan_label)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        run_row.addWidget(self.progress, 1)
        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        controls_layout.setContentsMargins(0, 0, 4, 0)
        controls_layout.addWidget(scenes_box, 1)
        controls_layout.addLayout(options)
        controls_layout.addWidget(self.bands_box)
        controls_layout.addWidget(preflight)
        controls_layout.addWidget(self.error_label)
        controls_layout.addWidget(self.assessment)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        left_layout.addLayout(run_row)
        result = QWidget()
        result_layout = QVBoxLayout(result)
        result_layout.setContentsMargins(0, 0, 0, 0)
        result_layout.addWidget(self.map_view, 1)
        result_layout.addWidget(self.result_label)
        result_layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(result)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self._plan_timer = QTimer(self)
        self._plan_timer.setSingleShot(True)
        self._plan_timer.setInterval(400)
        self._plan_timer.timeout.connect(self._plan_next)
        self._update_buttons()

    # -- scenes -------------------------------------------------------------------------------
    def set_default_bundle(self, path: str | Path | None) -> None:
        if path and not self.bundle_field.path():
            self.bundle_field.set_path(path)

    def _choose_scenes(self) -> None:
        files = ask_open_files(self, self.settings, "scenes", "Scenes to label", "GeoTIFF (*.tif *.tiff);;All files (*)")
        if files:
            self.add_scenes([Path(f) for f in files])

    def add_scenes(self, paths: list[Path]) -> None:
        """Add scene files (folders contribute their GeoTIFFs) and select the first new one."""
        added = []
        for path in map(Path, paths):
            candidates = sorted(p for p in path.iterdir() if p.suffix.lower() in SCENE_SUFFIXES) if path.is_dir() else [path]
            for candidate in map(str, candidates):
                if candidate not in self.entries:
                    self.entries[candidate] = SceneEntry(candidate)
                    item = QListWidgetItem(Path(candidate).name)
                    item.setData(PathRole, candidate)
                    self.scene_list.addItem(item)
                    added.append(candidate)
        self._plan_queue.extend(added)
        if added:
            self.scene_list.setCurrentRow(self.scene_list.count() - len(added))
        self._plan_timer.start()
        self._update_buttons()

    def _remove_scene(self) -> None:
        item = self.scene_list.currentItem()
        if item is not None:
            self.entries.pop(item.data(PathRole), None)
            self.scene_list.takeItem(self.scene_list.row(item))
        self._update_buttons()

    def scenes(self) -> list[str]:
        return [self.scene_list.item(row).data(PathRole) for row in range(self.scene_list.count())]

    def current_entry(self) -> SceneEntry | None:
        item = self.scene_list.currentItem()
        return self.entries.get(item.data(PathRole)) if item is not None else None

    def _scene_chosen(self) -> None:
        entry = self.current_entry()
        self._show_entry()
        self.assessment.set_map(entry.result.classes if entry is not None and entry.result is not None else None)
        if entry is not None and entry.info is not None:
            self._show_scene_on_map(entry)

    def _show_scene_on_map(self, entry: SceneEntry) -> None:
        bands = list(entry.bands or (entry.plan.band_indexes if entry.plan is not None else []))
        self.map_view.show_scene(entry.path, bands, (entry.info.width, entry.info.height))
        self.map_view.set_area(entry.area)
        if entry.result is not None:
            self._show_result(entry)

    # -- options ------------------------------------------------------------------------------
    def options_for(self, entry: SceneEntry):
        from sembridge_engine.labelling.options import LabelOptions

        return LabelOptions(tile=self.tile_spin.value() or None, stride=self.stride_spin.value() or None,
                            batch=self.batch_spin.value(), bands=entry.bands, device=self.settings.device,
                            probabilities=self.probabilities_check.isChecked(), window=entry.area,
                            force_scale=self.force_check.isChecked())

    def _options_changed(self) -> None:
        """Options apply to every scene: each is planned again."""
        for entry in self.entries.values():
            entry.plan = None
        self._plan_queue = self.scenes()
        self._plan_timer.start()
        self._update_buttons()

    def _replan(self, entry: SceneEntry) -> None:
        entry.plan = None
        self._plan_queue = [entry.path] + [path for path in self._plan_queue if path != entry.path]
        self._plan_timer.start()
        self._update_buttons()

    def _area_changed(self, window) -> None:
        entry = self.current_entry()
        if entry is not None and entry.area != window and entry.path == self.map_view.scene_path:
            entry.area = window
            self._replan(entry)

    @property
    def band_combos(self) -> list[QComboBox]:
        return self.bands_box.combos

    def _bands_changed(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            entry.bands = tuple(self.bands_box.selected() or ()) or None
            self._replan(entry)
            if entry.info is not None:
                self._show_scene_on_map(entry)

    # -- bundle -------------------------------------------------------------------------------
    def _bundle_changed(self, path: str) -> None:
        self.bundle = None
        for entry in self.entries.values():
            entry.plan = None
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
        worker.succeeded.connect(self._bundle_ready)
        worker.failed.connect(lambda message, _c: show_error(self.error_label, f"Cannot load the model: {for_the_panel(message)}"))
        worker.finished.connect(self._bundle_worker_done)
        self._bundle_worker = worker
        worker.start()

    def _bundle_worker_done(self) -> None:
        self._bundle_worker.deleteLater()
        self._bundle_worker = None
        if self.bundle_field.path() != self._requested_bundle:
            self._bundle_changed(self.bundle_field.path())

    def _bundle_ready(self, bundle) -> None:
        self.bundle = bundle
        show_error(self.error_label, "")
        self.bundleLoaded.emit()
        self._options_changed()

    # -- planning -------------------------------------------------------------------------------
    def _plan_next(self) -> None:
        """Plan one waiting scene at a time, the one on show first."""
        if self.bundle is None or self._plan_worker is not None or self.label_worker is not None:
            return
        current = self.current_entry()
        waiting = [path for path in self._plan_queue if path in self.entries]
        if current is not None and current.path in waiting:
            waiting.remove(current.path)
            waiting.insert(0, current.path)
        self._plan_queue = waiting[1:]
        if not waiting:
            return
        entry = self.entries[waiting[0]]
        if entry is current:
            self.plan_label.setText("Checking this scene…")
        worker = plain_worker(plan_job, self.bundle, entry.path, self.options_for(entry))
        worker.succeeded.connect(self._planned)
        worker.finished.connect(self._plan_worker_done)
        self._plan_worker = worker
        worker.start()

    def _plan_worker_done(self) -> None:
        self._plan_worker.deleteLater()
        self._plan_worker = None
        self._plan_next()
        self._update_buttons()

    def _planned(self, outcome) -> None:
        entry = self.entries.get(outcome.path)
        if entry is None:
            return
        first_look = entry.info is None
        entry.info, entry.plan, entry.error = outcome.info or entry.info, outcome.plan, outcome.error
        self._mark(entry)
        if entry is self.current_entry():
            self._show_entry()
            if first_look and entry.info is not None:
                self._show_scene_on_map(entry)
        self._update_buttons()
        self.planned.emit()

    def _mark(self, entry: SceneEntry) -> None:
        """The scene's line in the list: a tick when it can be labelled, else a warning and why."""
        for row in range(self.scene_list.count()):
            item = self.scene_list.item(row)
            if item.data(PathRole) != entry.path:
                continue
            icon = QStyle.StandardPixmap.SP_DialogApplyButton if entry.ready else QStyle.StandardPixmap.SP_MessageBoxWarning
            item.setIcon(self.style().standardIcon(icon))
            why = entry.error or (for_the_panel(entry.plan.scale.warning or "") if entry.plan is not None else "")
            item.setToolTip(f"{entry.path}\n{why}".strip())

    def _show_entry(self) -> None:
        """Band choice, pre-flight lines and problems of the scene on show."""
        entry = self.current_entry()
        self._build_band_combos(entry)
        if entry is None:
            self.plan_label.setText("Add a scene to see the estimate.")
            return
        show_error(self.error_label, entry.error)
        if entry.plan is None:
            self.plan_label.setText("" if entry.error else "Waiting for the model…" if self.bundle is None else "Checking…")
            return
        self.plan_label.setText(plan_html(entry.plan.lines()))

    def _build_band_combos(self, entry: SceneEntry | None) -> None:
        if entry is None or entry.info is None or self.bundle is None:
            self.bands_box.clear()
            return
        chosen = list(entry.bands or (entry.plan.band_indexes if entry.plan is not None else []))
        self.bands_box.show_bands(entry.info.band_count, entry.info.band_descriptions, self.bundle.band_names, chosen)

    # -- labelling ------------------------------------------------------------------------------
    def ready_entries(self) -> list[SceneEntry]:
        return [self.entries[path] for path in self.scenes() if self.entries[path].ready]

    def _update_buttons(self) -> None:
        running = self.label_worker is not None
        ready, total = len(self.ready_entries()), len(self.entries)
        self.run_button.setEnabled(not running and self.bundle is not None and ready > 0)
        self.run_button.setText("Label map" if ready == total or not ready else f"Label {ready} of {total} scenes")
        waiting = [entry.name for entry in self.entries.values() if not entry.ready]
        self.run_button.setToolTip(f"Not ready: {', '.join(waiting)} (see the warning in the list)" if waiting else "")
        self.cancel_button.setEnabled(running)

    def start(self) -> None:
        """Label every ready scene with its own bands and area; ask before replacing earlier outputs."""
        entries = self.ready_entries()
        if self.bundle is None or not entries or self.label_worker is not None:
            return
        out_dir = Path(self.output_field.path() or data_dir() / "maps")
        jobs = [(entry.path, self.options_for(entry)) for entry in entries]
        replaced = existing_outputs(jobs, out_dir)
        if replaced:
            names = "\n".join(path.name for path in replaced[:8]) + ("\n…" if len(replaced) > 8 else "")
            answer = QMessageBox.question(self, "Replace earlier outputs?",
                                          f"{len(replaced)} file(s) in {out_dir} from an earlier labelling will be "
                                          f"replaced:\n{names}\n\nReplace them?")
            if answer != QMessageBox.StandardButton.Yes:
                return
        bundle = self.bundle
        worker = EngineWorker(lambda callback, cancel: label_job(bundle, jobs, out_dir, callback, cancel))
        worker.batchProgress.connect(self._progress)
        worker.succeeded.connect(lambda results: self._show_results(entries, results))
        worker.failed.connect(self._failed)
        worker.finished.connect(self._label_done)
        self.label_worker = worker
        self.out_dir = out_dir
        self.progress.setRange(0, 0)
        show_error(self.error_label, "")
        self.result_label.setText(f"Labelling {len(jobs)} scene(s)…")
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
        """Nothing of a failed or cancelled job stays on show: no old map, no full progress bar."""
        self.results = []
        self.assessment.set_map(None)
        self.map_view.clear_labels()
        self.open_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if cancelled:
            self.result_label.setText("Labelling cancelled; no partial outputs were kept.")
        else:
            self.result_label.setText("")
            show_error(self.error_label, f"Labelling failed: {for_the_panel(message)}")

    def _label_done(self) -> None:
        self.label_worker.deleteLater()
        self.label_worker = None
        if self.results:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        self._update_buttons()
        self._plan_next()
        self.labelled.emit()

    def _show_results(self, entries: list[SceneEntry], results: list) -> None:
        self.results = results
        for entry, result in zip(entries, results):
            entry.result = result
        files = "\n".join(str(path) for result in results for path in result.paths())
        self.result_label.setText(f"{len(results)} scene(s) labelled in {sum(r.seconds for r in results):.1f} s. "
                                  f"Outputs:\n{files}")
        self.result_label.setToolTip(files)
        self.open_button.setEnabled(True)
        current = self.current_entry()
        self._show_result(current if current is not None and current.result is not None else entries[-1])

    def _show_result(self, entry: SceneEntry) -> None:
        result = entry.result
        self.assessment.set_map(result.classes)
        self.map_view.show_labels(str(result.classes), str(result.confidence), self.bundle.class_names,
                                  self.bundle.colours, result.class_shares)

    def open_output_folder(self) -> None:
        open_folder(self, self.out_dir)
