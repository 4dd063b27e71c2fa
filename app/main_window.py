"""Main window: a sidebar (Projects & runs, Train, Monitor, Classify, Label map), the pages, and a
status bar that always shows the active compute device and the running job."""
from __future__ import annotations

import copy
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
    QListWidget, QListWidgetItem, QMainWindow, QMessageBox, QProgressBar, QSpinBox, QStackedWidget, QStyle,
    QVBoxLayout, QWidget,
)

from app.classify_panel import ClassifyPanel
from app.label import LabelPanel
from app.monitor import MonitorPanel
from app.runs import RunsPanel, latest_bundle
from app.settings import Settings, log_dir
from app.help import show_method_help
from app.widgets import ask_open_file, open_folder, PathField
from app.workers import EngineWorker, TrainWorker, plain_worker, stop_all_workers, warm_up_engine

PAGES = ("Projects & runs", "Train", "Monitor", "Classify", "Label map")
PAGE_ICONS = (QStyle.StandardPixmap.SP_DirHomeIcon, QStyle.StandardPixmap.SP_MediaPlay,
              QStyle.StandardPixmap.SP_ComputerIcon, QStyle.StandardPixmap.SP_FileDialogContentsView,
              QStyle.StandardPixmap.SP_DriveNetIcon)


def load_project(path: Path):
    """The project's RunConfig (loading imports the engine, so this runs in a worker).

    A missing bundled demo config falls back to the defaults pointed at the demo folders."""
    from resources import demo_project
    from sembridge_engine.config import RunConfig, load_config

    if path.exists():
        return load_config(path)
    demo = demo_project()
    if path == demo / "demo.toml":
        config = RunConfig(name="demo")
        config.data.ms_path = str(demo / "ms")
        config.data.rgb_path = str(demo / "rgb")
        return config
    return load_config(path)


def device_description(name: str = "auto") -> str:
    from sembridge_engine.device import describe_device, resolve_device

    return describe_device(resolve_device(name))


class TrainPage(QWidget):
    """Holds the wizard once the project's config has been loaded."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.wizard = None
        self.placeholder = QLabel("Loading the project…")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.layout_ = QVBoxLayout(self)
        self.layout_.addWidget(self.placeholder)

    def set_wizard(self, wizard) -> None:
        self.placeholder.hide()
        self.layout_.addWidget(wizard)
        self.wizard = wizard


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, devices: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.output_field = PathField("Default folder for runs", settings=settings, key="runs_output")
        self.output_field.set_path(str(settings.output_path))
        self.device_combo = QComboBox()
        for name, description in devices or [("auto", "Automatic")]:
            self.device_combo.addItem(description, name)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(settings.device)))
        self.threads_spin = QSpinBox()
        self.threads_spin.setRange(0, max(1, os.cpu_count() or 1))
        self.threads_spin.setSpecialValueText("Automatic (all cores but one)")
        self.threads_spin.setValue(settings.training_threads)
        self.threads_spin.setToolTip("CPU threads a training run uses. Automatic leaves one core free so the window "
                                     "stays responsive; choose every core for the fastest run on a machine you are "
                                     "not using meanwhile.")
        form = QFormLayout()
        form.addRow("Runs folder:", self.output_field)
        form.addRow("Device for classify/label:", self.device_combo)
        form.addRow("Training CPU threads:", self.threads_spin)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.resize(560, 140)

    def accept(self) -> None:
        self.settings.output_dir = self.output_field.path()
        self.settings.device = self.device_combo.currentData() or "auto"
        self.settings.training_threads = self.threads_spin.value()
        self.settings.save()
        super().accept()


class MainWindow(QMainWindow):
    """Owns the settings, the open project and the one training worker that may be running."""

    projectLoaded = Signal()
    trainingStarted = Signal(object)

    def __init__(self, settings: Settings, project_path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.project_path = Path(project_path)
        self.project_config = None
        self.train_worker: TrainWorker | None = None
        self._startup_worker: EngineWorker | None = None
        self.setWindowTitle("SemBridge Studio")

        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setIconSize(QSize(20, 20))
        self.sidebar.setSpacing(2)
        for text, icon in zip(PAGES, PAGE_ICONS):
            QListWidgetItem(self.style().standardIcon(icon), text, self.sidebar)
        self.sidebar.setStyleSheet("#sidebar { font-size: 11pt; } #sidebar::item { padding: 8px 6px; }")
        self.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sidebar.setFixedWidth(190)

        self.runs_panel = RunsPanel(settings)
        self.train_page = TrainPage()
        self.monitor = MonitorPanel()
        self.classify_panel = ClassifyPanel(settings)
        self.label_panel = LabelPanel(settings)
        self.stack = QStackedWidget()
        for page in (self.runs_panel, self.train_page, self.monitor, self.classify_panel, self.label_panel):
            self.stack.addWidget(page)
        self.sidebar.currentRowChanged.connect(self._page_changed)

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.device_label = QLabel("Device: detecting…")
        self.job_label = QLabel("Ready.")
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(180)
        self.job_progress.setRange(0, 1000)
        self.job_progress.setFormat("batch %v/%m")
        self.job_progress.hide()
        self.statusBar().addWidget(self.job_label, 1)
        self.statusBar().addPermanentWidget(self.job_progress)
        self.statusBar().addPermanentWidget(self.device_label)

        self._build_menu()
        self.runs_panel.trainRequested.connect(lambda: self.show_page("Train"))
        self.runs_panel.openProjectRequested.connect(lambda path: self.open_project(Path(path)))
        self.runs_panel.resumeRequested.connect(lambda path: self.resume_run(Path(path)))
        self.runs_panel.showRunRequested.connect(self._show_run)
        self.runs_panel.useBundleRequested.connect(self._use_bundle)

        self.resize(1280, 820)
        self._restore_geometry()
        self.sidebar.setCurrentRow(0)
        self.runs_panel.refresh()
        self._set_default_bundles()
        QTimer.singleShot(0, self._start_loading)

    # -- set-up -----------------------------------------------------------------------------
    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        open_action = QAction("&Open project…", self, shortcut=QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self._choose_project)
        file_menu.addAction(open_action)
        settings_action = QAction("&Settings…", self)
        settings_action.triggered.connect(self._edit_settings)
        file_menu.addAction(settings_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        self.method_help_action = QAction("How &SemBridge works…", self, shortcut=QKeySequence.StandardKey.HelpContents)
        self.method_help_action.triggered.connect(lambda: show_method_help(self))
        help_menu.addAction(self.method_help_action)
        logs_action = QAction("Open &log folder", self)
        logs_action.triggered.connect(lambda: open_folder(self, log_dir()))
        help_menu.addAction(logs_action)

    def _restore_geometry(self) -> None:
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode("ascii")))
        if self.settings.window_state:
            self.restoreState(QByteArray.fromBase64(self.settings.window_state.encode("ascii")))

    def _start_loading(self) -> None:
        """Import the engine, describe the device and load the project off the UI thread."""
        path = self.project_path

        def job(_callback, _cancel):
            loaded = load_project(path), device_description("auto")
            warm_up_engine()
            return loaded

        self.job_label.setText(f"Loading {path.name}…")
        worker = EngineWorker(job)
        worker.succeeded.connect(self._project_ready)
        worker.failed.connect(self._project_failed)
        worker.finished.connect(worker.deleteLater)
        self._startup_worker = worker
        worker.start()

    def _project_ready(self, loaded) -> None:
        config, device_text = loaded
        self.device_label.setText(f"Device: {device_text}")
        self.set_project(self.project_path, config)
        self.job_label.setText("Ready.")
        self.projectLoaded.emit()

    def _project_failed(self, message: str, _cancelled: bool) -> None:
        self.job_label.setText("Could not open the project.")
        QMessageBox.warning(self, "Cannot open project", f"{self.project_path}:\n{message}")
        self.projectLoaded.emit()

    def set_project(self, path: Path, config) -> None:
        from app.wizard import TrainingWizard

        self.project_path = path
        self.project_config = config
        self.settings.add_recent_project(path)
        self.settings.save()
        self.runs_panel.set_project(path, config)
        if self.train_page.wizard is None:
            wizard = TrainingWizard(config, self.settings)
            wizard.launchRequested.connect(self.start_training)
            wizard.configSaved.connect(lambda saved: self.job_label.setText(f"Configuration saved to {saved}"))
            self.train_page.set_wizard(wizard)
        else:
            self.train_page.wizard.set_config(config)
        self.setWindowTitle(f"SemBridge Studio — {config.name}")

    def open_project(self, path: Path) -> None:
        worker = plain_worker(load_project, path)
        worker.succeeded.connect(lambda config: self.set_project(path, config))
        worker.failed.connect(lambda message, _c: QMessageBox.warning(self, "Cannot open project", f"{path}:\n{message}"))
        worker.finished.connect(worker.deleteLater)
        self._startup_worker = worker
        worker.start()

    def _choose_project(self) -> None:
        path = ask_open_file(self, self.settings, "project", "Open a run configuration", "TOML (*.toml)")
        if path:
            self.open_project(Path(path))

    def _edit_settings(self) -> None:
        try:
            from sembridge_engine.device import list_devices

            devices = list_devices()
        except ImportError:
            devices = []
        if SettingsDialog(self.settings, devices, self).exec():
            self.runs_panel.refresh()

    # -- navigation -------------------------------------------------------------------------
    def show_page(self, name: str) -> None:
        self.sidebar.setCurrentRow(PAGES.index(name))

    def _page_changed(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        if PAGES[row] == "Projects & runs":
            self.runs_panel.refresh()
        elif PAGES[row] in ("Classify", "Label map"):
            self._set_default_bundles()

    def _set_default_bundles(self) -> None:
        bundle = self.settings.last_bundle if Path(self.settings.last_bundle or "/nonexistent").is_file() else None
        bundle = bundle or latest_bundle(self.settings.output_path)
        if bundle:
            self.classify_panel.set_default_bundle(bundle)
            self.label_panel.set_default_bundle(bundle)

    def _show_run(self, path: str) -> None:
        if self.train_worker is not None and self.train_worker.run_dir == Path(path):
            self.show_page("Monitor")
            return
        if self.train_worker is None:
            self.monitor.load_run(Path(path))
            self.show_page("Monitor")
        else:
            QMessageBox.information(self, "Run in progress", "The Monitor follows the running training run.")

    def _use_bundle(self, path: str) -> None:
        self.classify_panel.bundle_field.set_path(path)
        self.label_panel.bundle_field.set_path(path)
        self.show_page("Classify")

    # -- training ---------------------------------------------------------------------------
    def start_training(self, config) -> TrainWorker | None:
        if self.train_worker is not None:
            QMessageBox.information(self, "Run in progress", "Wait for the current run to finish or cancel it first.")
            return None
        if config.output_dir and config.output_dir != str(self.settings.output_path):
            self.settings.output_dir = config.output_dir
            self.settings.save()
        worker = TrainWorker(copy.deepcopy(config), threads=self.settings.training_threads)
        self._follow(worker, f"Training “{config.name}”")
        return worker

    def resume_run(self, run_dir: Path) -> TrainWorker | None:
        if self.train_worker is not None:
            QMessageBox.information(self, "Run in progress", "Wait for the current run to finish or cancel it first.")
            return None
        worker = TrainWorker(resume_dir=run_dir, threads=self.settings.training_threads)
        self._follow(worker, f"Resuming {run_dir.name}")
        return worker

    def _follow(self, worker: TrainWorker, title: str) -> None:
        self.train_worker = worker
        self.monitor.attach(worker, title)
        worker.stageStarted.connect(lambda stage, epochs: self.job_label.setText(f"{title}: {stage} stage"))
        worker.batchProgress.connect(self._status_progress)
        worker.succeeded.connect(lambda _result: self.job_label.setText(f"{title}: finished."))
        worker.failed.connect(lambda message, cancelled: self.job_label.setText(
            f"{title}: {'cancelled' if cancelled else 'failed — ' + message}"))
        worker.finished.connect(self._training_done)
        self.job_progress.show()
        self.job_progress.setRange(0, 0)
        self.show_page("Monitor")
        self.trainingStarted.emit(worker)
        worker.start()

    def _status_progress(self, _stage: str, _epoch: int, done: int, total: int) -> None:
        self.job_progress.setRange(0, max(total, 1))
        self.job_progress.setValue(done)

    def _training_done(self) -> None:
        worker = self.train_worker
        self.train_worker = None
        self.job_progress.hide()
        self.runs_panel.refresh()
        if worker is not None and worker.run_dir is not None and (worker.run_dir / "model.sembridge").is_file():
            bundle = str(worker.run_dir / "model.sembridge")
            self.settings.last_bundle = bundle
            self.classify_panel.bundle_field.set_path(bundle)
            self.label_panel.bundle_field.set_path(bundle)
        if worker is not None:
            worker.deleteLater()

    # -- shutdown ---------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        if self.train_worker is not None and self.train_worker.isRunning():
            answer = QMessageBox.question(self, "Training in progress",
                                          "A run is in progress. Stop it (it can be resumed later) and quit?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        stop_all_workers()
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.window_state = bytes(self.saveState().toBase64()).decode("ascii")
        self.settings.save()
        super().closeEvent(event)
