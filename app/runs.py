"""Projects & runs: the open project, the runs under the output folder with key settings and final
metrics, overlaid curves for the selected runs, Resume for interrupted ones, Export model for
finished ones (app/export_dialog.py) and, for a teacher run and an RGB-only run, the teacher fit
check (app/teacher_fit_dialog.py)."""
from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
    QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.export_dialog import ExportDialog
from app.monitor.plots import PALETTE
from app.settings import Settings
from app.teacher_fit_dialog import TeacherFitDialog, teacher_fit_roles
from app.widgets import ask_folder, ask_open_file, open_folder
from sembridge_engine.training.rundir import METRIC_GROUPS, STAGES, RunFolder, list_runs

FINAL_KEYS = ("test_oa", "test_macro_f1", "val_oa", "val_macro_f1")
CURVE_METRICS = tuple(metric for metrics in METRIC_GROUPS.values() for metric in metrics)


def stage_epochs(run: RunFolder) -> str:
    """Epochs per stage as teacher/matcher/student, "—" for a stage the run does not use and
    "reused" for a teacher and matcher taken from another run."""
    config = run.config()
    if config is None:
        return ""
    used = {"teacher": config.uses_teacher, "matcher": config.uses_matcher, "student": True}
    reused = bool(config.student.teacher_from)
    parts = []
    for stage in STAGES:
        if not used[stage]:
            parts.append("—")
        elif stage != "student" and reused:
            parts.append("reused")
        else:
            parts.append(str(getattr(config, stage).epochs))
    return "/".join(parts)


def parts_in_use(run: RunFolder) -> str:
    """SemBridge's SSM / DynM / OT switches as the run used them ("no teacher" for the RGB baseline,
    whatever its switches say)."""
    config = run.config()
    if config is None:
        return ""
    if not config.uses_teacher:
        return "— (no teacher)"
    distill = config.distill
    return " / ".join("on" if used else "off" for used in (distill.ssm, distill.dynm, config.uses_planner))


def latest_bundle(output_dir: Path) -> Path | None:
    for run in list_runs(output_dir):
        if run.has_bundle:
            return run.bundle_path
    return None


class RunsPanel(QWidget):
    """The project box on top, the runs table, and the comparison of the selected runs."""

    COLUMNS = ("Run", "Status", "Created", "Student", "KD loss", "Epochs T/M/S", "Test OA", "Test macro F1", "Device")

    trainRequested = Signal()
    openProjectRequested = Signal(str)
    resumeRequested = Signal(str)
    showRunRequested = Signal(str)
    useBundleRequested = Signal(str)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.runs: list[RunFolder] = []

        self.project_label = QLabel("No project open.")
        self.project_label.setWordWrap(True)
        self.project_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.recent_combo = QComboBox()
        self.recent_combo.setMinimumWidth(220)
        self.recent_combo.setPlaceholderText("Recent projects")
        self.recent_combo.activated.connect(self._recent_chosen)
        open_button = QPushButton("Open project…")
        open_button.clicked.connect(self._choose_project)
        self.train_button = QPushButton("Train this project →")
        self.train_button.setDefault(True)
        self.train_button.setStyleSheet("font-weight: bold; padding: 4px 14px;")
        self.train_button.clicked.connect(self.trainRequested)
        project_box = QGroupBox("Project")
        project_layout = QHBoxLayout(project_box)
        project_layout.addWidget(self.project_label, 1)
        project_layout.addWidget(self.recent_combo)
        project_layout.addWidget(open_button)
        project_layout.addWidget(self.train_button)

        self.output_label = QLabel()
        self.output_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        change_output = QPushButton("Change…")
        change_output.clicked.connect(self._choose_output)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        output_row = QHBoxLayout()
        output_row.addWidget(QLabel("Runs in:"))
        output_row.addWidget(self.output_label, 1)
        output_row.addWidget(change_output)
        output_row.addWidget(refresh)

        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.doubleClicked.connect(lambda _index: self._show_selected())

        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue a cancelled or interrupted run from its last checkpoint")
        self.resume_button.clicked.connect(self._resume_selected)
        self.show_button = QPushButton("Show in Monitor")
        self.show_button.clicked.connect(self._show_selected)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.clicked.connect(self._open_selected_folder)
        self.bundle_button = QPushButton("Classify with this model")
        self.bundle_button.clicked.connect(self._use_selected_bundle)
        self.export_button = QPushButton("Export model…")
        self.export_button.setToolTip("Write the run's model bundle to a file of your choice, optionally with a "
                                      "QGIS (Deepness) model beside it")
        self.export_button.clicked.connect(self.export_selected)
        self.export_dialog: ExportDialog | None = None
        self.teacher_fit_button = QPushButton("Does the teacher fit?")
        self.teacher_fit_button.setToolTip(
            "Select a run with a teacher and a finished plain RGB run (KD loss none, no OT terms): checks whether the classes the "
            "teacher finds alike are the classes the RGB images find alike, i.e. whether distillation can transfer "
            "anything beyond the labels")
        self.teacher_fit_button.clicked.connect(self.check_teacher_fit)
        self.teacher_fit_dialog: TeacherFitDialog | None = None
        buttons = QHBoxLayout()
        for button in (self.resume_button, self.show_button, self.folder_button, self.bundle_button, self.export_button,
                       self.teacher_fit_button):
            buttons.addWidget(button)
        buttons.addStretch(1)

        self.metric_combo = QComboBox()
        self.metric_combo.setMinimumWidth(180)
        self.metric_combo.currentIndexChanged.connect(self._update_comparison)
        self.compare_plot = pg.PlotWidget()
        self.compare_plot.setLabel("bottom", "student epoch")
        self.compare_plot.showGrid(x=True, y=True, alpha=0.25)
        self.compare_legend = pg.LegendItem(colCount=2, labelTextSize="8pt")
        self.compare_plot.getPlotItem().layout.addItem(self.compare_legend, 4, 1)
        self.compare_plot.setMinimumHeight(180)
        self.compare_table = QTableWidget(0, 0)
        self.compare_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.compare_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        compare_box = QGroupBox("Compare selected runs")
        compare_layout = QVBoxLayout(compare_box)
        metric_row = QHBoxLayout()
        metric_row.addWidget(QLabel("Curve:"))
        metric_row.addWidget(self.metric_combo)
        metric_row.addStretch(1)
        compare_layout.addLayout(metric_row)
        compare_split = QHBoxLayout()
        compare_split.addWidget(self.compare_plot, 1)
        compare_split.addWidget(self.compare_table, 1)
        compare_layout.addLayout(compare_split, 1)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(output_row)
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(buttons)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(compare_box)
        layout = QVBoxLayout(self)
        layout.addWidget(project_box)
        layout.addWidget(splitter, 1)
        self._selection_changed()

    # -- project ----------------------------------------------------------------------------
    def set_project(self, path: Path, config) -> None:
        data = config.data
        self.project_label.setText(
            f"<b>{config.name}</b> — {path}<br><small>MS: {data.ms_path}<br>RGB: {data.rgb_path}</small>")
        self.recent_combo.blockSignals(True)
        self.recent_combo.clear()
        self.recent_combo.addItems(self.settings.recent_projects)
        self.recent_combo.setCurrentIndex(-1)
        self.recent_combo.blockSignals(False)

    def _choose_project(self) -> None:
        path = ask_open_file(self, self.settings, "project", "Open a run configuration", "TOML (*.toml)")
        if path:
            self.openProjectRequested.emit(path)

    def _recent_chosen(self, index: int) -> None:
        if index >= 0:
            self.openProjectRequested.emit(self.recent_combo.itemText(index))

    def _choose_output(self) -> None:
        chosen = ask_folder(self, self.settings, "runs_output", "Folder for runs", self.settings.output_path)
        if chosen:
            self.settings.output_dir = chosen
            self.settings.save()
            self.refresh()

    # -- runs -------------------------------------------------------------------------------
    def refresh(self) -> None:
        selected = {run.root for run in self.selected_runs()}
        output = self.settings.output_path
        self.runs = list_runs(output)
        hint = "" if self.runs else "  (no runs yet: press “Train this project →” to start one)"
        self.output_label.setText(f"{output}{hint}")
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            info, final = run.info(), run.final_metrics()
            values = [run.name, run.status, str(info.get("created", "")).replace("T", " ")[:19],
                      run.setting("student.arch", ""), run.setting("distill.loss", ""), stage_epochs(run)]
            values += [self._format(final.value(key)) for key in ("test_oa", "test_macro_f1")]
            values.append(info.get("device", ""))
            for column, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                item.setData(Qt.ItemDataRole.UserRole, str(run.root))
                if column == 1 and run.resumable:
                    item.setForeground(Qt.GlobalColor.darkYellow)
                self.table.setItem(row, column, item)
        for row, run in enumerate(self.runs):
            if run.root in selected:
                self.table.selectRow(row)
        self._selection_changed()

    @staticmethod
    def _format(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    def selected_runs(self) -> list[RunFolder]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.runs[row] for row in rows if row < len(self.runs)]

    def select_runs(self, paths: list[Path]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row, run in enumerate(self.runs):
            if run.root in paths:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def _selection_changed(self) -> None:
        runs = self.selected_runs()
        single = runs[0] if len(runs) == 1 else None
        self.resume_button.setEnabled(single is not None and single.resumable)
        self.show_button.setEnabled(single is not None)
        self.folder_button.setEnabled(single is not None)
        self.bundle_button.setEnabled(single is not None and single.has_bundle)
        self.export_button.setEnabled(single is not None and single.has_bundle)
        self.teacher_fit_button.setEnabled(teacher_fit_roles(runs) is not None)
        metrics = [metric for metric in CURVE_METRICS if any(run.curve(metric)[0] for run in runs)]
        current = self.metric_combo.currentText()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        self.metric_combo.addItems(metrics)
        for name in (current, "val_oa"):
            if name in metrics:
                self.metric_combo.setCurrentText(name)
                break
        self.metric_combo.blockSignals(False)
        self._update_comparison()

    def _update_comparison(self) -> None:
        runs = self.selected_runs()
        metric = self.metric_combo.currentText()
        plot = self.compare_plot.getPlotItem()
        plot.clear()
        self.compare_legend.clear()
        plot.setTitle(f"student {metric}" if metric else "Select runs to compare")
        for number, run in enumerate(runs):
            xs, ys = run.curve(metric)
            colour = PALETTE[number % len(PALETTE)]
            curve = plot.plot(xs, ys, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                              symbolBrush=colour, symbolPen=None)
            self.compare_legend.addItem(curve, run.name)
        finals = [run.final_metrics() for run in runs]
        keys = [key for key in FINAL_KEYS if any(final.value(key) is not None for final in finals)]
        fields = ["status", "student", "KD loss", "SSM / DynM / OT"] + keys
        self.compare_table.clear()
        self.compare_table.setRowCount(len(fields))
        self.compare_table.setVerticalHeaderLabels(fields)
        self.compare_table.setColumnCount(len(runs))
        self.compare_table.setHorizontalHeaderLabels([run.name for run in runs])
        for column, (run, final) in enumerate(zip(runs, finals)):
            switches = parts_in_use(run)
            values = [run.status, run.setting("student.arch", ""), run.setting("distill.loss", ""), switches]
            values += [self._format(final.value(key)) for key in keys]
            for row, value in enumerate(values):
                self.compare_table.setItem(row, column, QTableWidgetItem(str(value)))
        self.compare_table.resizeColumnsToContents()

    def _resume_selected(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and runs[0].resumable:
            self.resumeRequested.emit(str(runs[0].root))

    def _show_selected(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1:
            self.showRunRequested.emit(str(runs[0].root))

    def _open_selected_folder(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1:
            open_folder(self, runs[0].root)

    def _use_selected_bundle(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and runs[0].has_bundle:
            self.useBundleRequested.emit(str(runs[0].bundle_path))

    def export_selected(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and runs[0].has_bundle:
            self.export_dialog = ExportDialog(self.settings, runs[0].root, self)
            self.export_dialog.open()

    def check_teacher_fit(self) -> None:
        roles = teacher_fit_roles(self.selected_runs())
        if roles is not None:
            self.teacher_fit_dialog = TeacherFitDialog(*roles, self)
            self.teacher_fit_dialog.open()
            self.teacher_fit_dialog.start()
