"""The Monitor page: a training run live (stage progress with ETA, metric curves with the matching
rounds marked, the log) and, once finished, its results; or any run reopened from its folder.

Everything shown of a run folder is read through the engine's ``RunFolder`` (metrics by stage,
matching markers, run.log, final metrics); the plot a metric goes to is the engine's
``METRIC_GROUPS``. A resumed run starts from what its folder already holds, so the curves, markers
and log are the whole run, not only the part after the resume.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QComboBox, QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QTabWidget, QVBoxLayout, QWidget,
)

from app.monitor.plots import ConfusionView, F1Bars, MetricPlot
from app.monitor.progress import StageProgress
from app.monitor.teachers import TeachersView
from app.widgets import open_folder, steady_label
from sembridge_engine.training.rundir import METRIC_GROUPS, STAGES, RunFolder, scalar

GROUP_OF = {metric: group for group, metrics in METRIC_GROUPS.items() for metric in metrics}
# Title, y-axis label and log scale of the plots of the groups the monitor knows by name.
PLOT_LOOKS = {"transport": ("Transport cost (student vs teacher, log scale)", "cost", True),
              "accuracy": ("Accuracy and macro F1", "score", False),
              "loss": ("Loss components", "loss", False),
              # Shares span 1e-4 (the paper-scale alignment terms) to 0.7 (the task loss): only a log axis shows both.
              "gradient": ("Share of the student's gradient per loss term (log scale)", "share", True)}
MARKER_NAMES = {"ssm": "SSM", "random": "random pairs", "dynm": "DynM"}


def marker_label(kind: str, epoch: int) -> str:
    return f"{MARKER_NAMES.get(kind, kind)} e{epoch}"


class MonitorPanel(QWidget):
    """``attach(worker, title)`` follows a TrainWorker; ``load_run(run_dir)`` shows a run from its folder."""

    openBundleRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.worker = None
        self._pending: list = []
        self._drain_timer = QTimer(self)
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._drain_one)
        self.history: dict[str, dict[int, dict]] = {stage: {} for stage in STAGES}
        self.markers: dict[int, str] = {}  # student epoch -> label of its matching round
        self.shown_stage = "student"

        self.title = steady_label("<b>No run in progress.</b> Launch one from Train, or resume one from Projects & runs.")
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.stage_combo = QComboBox()
        for stage in STAGES:
            self.stage_combo.addItem(f"{stage.capitalize()} stage", stage)
        self.stage_combo.setCurrentIndex(STAGES.index(self.shown_stage))
        self.stage_combo.currentIndexChanged.connect(lambda _i: self.show_stage(self.stage_combo.currentData()))
        self.stages = StageProgress()
        # One plot per group of the engine's METRIC_GROUPS, so a group the engine adds gets its plot.
        self.plots = {group: MetricPlot(*PLOT_LOOKS.get(group, (group.capitalize(), group, False))[:2], metrics,
                                        log=PLOT_LOOKS.get(group, ("", "", False))[2])
                      for group, metrics in METRIC_GROUPS.items()}
        self.transport_plot, self.accuracy_plot, self.loss_plot, self.gradient_plot = (
            self.plots[group] for group in ("transport", "accuracy", "loss", "gradient"))
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.confusion = ConfusionView()
        self.f1_bars = F1Bars()
        self.result_label = steady_label()
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bundle_button = QPushButton("Show model bundle")
        self.bundle_button.setEnabled(False)
        self.bundle_button.clicked.connect(self._open_bundle)

        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(QLabel("Plots of:"))
        header.addWidget(self.stage_combo)
        header.addWidget(self.cancel_button)
        curves = QWidget()
        grid = QGridLayout(curves)
        for position, widget in enumerate([*self.plots.values(), self.log_view]):
            grid.addWidget(widget, position // 2, position % 2)
        results = QWidget()
        result_layout = QGridLayout(results)
        result_layout.addWidget(self.confusion, 0, 0)
        result_layout.addWidget(self.f1_bars, 0, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.result_label, 1)
        bottom.addWidget(self.bundle_button)
        self.teachers = TeachersView()
        self.tabs = QTabWidget()
        self.tabs.addTab(curves, "Curves and log")
        self.tabs.addTab(results, "Results")
        self.tabs.addTab(self.teachers, "Teachers")
        self.tabs.setTabToolTip(2, "Which MS tiles taught which RGB image, round by round")
        self.tabs.currentChanged.connect(self._tab_changed)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.stages)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(bottom)
        self.results_tab = results
        self.reset()

    # -- wiring -----------------------------------------------------------------------------
    def attach(self, worker, title: str) -> None:
        """Follow a TrainWorker: start from what its run folder already holds (a resumed run),
        then connect every signal."""
        self.reset()
        self.worker = worker
        self.title.setText(f"<b>{title}</b>")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel run")
        config = getattr(worker, "config", None)
        if config is not None:
            if not config.uses_teacher:
                self.stages.skip_stage("teacher", "not used")
                self.stages.skip_stage("matcher", "not used")
            elif not config.uses_matcher:
                self.stages.skip_stage("matcher", "not used")
        if getattr(worker, "resuming", False) and worker.run_dir is not None:
            self._load_history(RunFolder(worker.run_dir))
        worker.stageStarted.connect(self.on_stage_started)
        worker.stageFinished.connect(self.stages.finish_stage)
        worker.batchProgress.connect(self.stages.progress)
        worker.epochFinished.connect(self.on_epoch)
        worker.matchingUpdated.connect(self.on_matching)
        worker.checkpointSaved.connect(lambda stage, epoch, path: self.log(f"checkpoint {stage} epoch {epoch}: {path}"))
        worker.logLine.connect(lambda message, level: self.log(message if level == "info" else f"[{level}] {message}"))
        worker.runFinished.connect(self.on_run_finished)
        worker.succeeded.connect(self.on_succeeded)
        worker.failed.connect(self.on_failed)

    def reset(self) -> None:
        self._pending.clear()
        self._drain_timer.stop()
        self.run_dir = None
        self.stages.reset()
        self.log_view.clear()
        self.result_label.clear()
        self.bundle_button.setEnabled(False)
        self.history = {stage: {} for stage in STAGES}
        self.markers = {}
        self.stage_combo.blockSignals(True)
        self.stage_combo.setCurrentIndex(STAGES.index("student"))
        self.stage_combo.blockSignals(False)
        self.show_stage("student")
        self.confusion.clear_matrix()
        self.f1_bars.clear_values()
        self.tabs.setTabEnabled(self.tabs.indexOf(self.results_tab), False)
        self.tabs.setTabEnabled(self.tabs.indexOf(self.teachers), False)
        self.tabs.setCurrentIndex(0)

    def cancel(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.cancel_button.setEnabled(False)
            self.cancel_button.setText("Cancelling…")
            self.log("Cancel requested: the run stops after the current batch.")

    def log(self, message: str) -> None:
        self.log_view.appendPlainText(f"{time.strftime('%H:%M:%S')}  {message}")
        self.log_view.moveCursor(QTextCursor.MoveOperation.End)
        self.log_view.ensureCursorVisible()

    # -- a run folder -------------------------------------------------------------------------
    def _load_history(self, folder: RunFolder) -> None:
        """Metrics, matching markers and log lines the run folder holds so far."""
        for stage in STAGES:
            rows = folder.stage_metrics(stage)
            self.history[stage] = {int(row["epoch"]): row for row in rows if scalar(row.get("epoch")) is not None}
            if rows:
                epochs = int(scalar(rows[-1].get("epochs")) or len(rows))
                if len(self.history[stage]) >= epochs:
                    self.stages.finish_stage(stage)
                else:
                    self.stages.show_done_epochs(stage, max(self.history[stage]), epochs)
        self.markers = {marker.epoch: marker_label(marker.kind, marker.epoch) for marker in folder.markers()}
        self.log_view.setPlainText("\n".join(folder.log_lines()))
        self.log_view.moveCursor(QTextCursor.MoveOperation.End)
        self.show_stage(self.shown_stage)

    def load_run(self, run_dir: Path) -> None:
        """Show a finished (or interrupted) run from its folder."""
        self.reset()
        self.worker = None
        folder = RunFolder(run_dir)
        self.title.setText(f"<b>{folder.name}</b> ({folder.status})")
        self._load_history(folder)
        self.stages.eta_label.setText("Loaded from the run folder.")
        self.show_results(Path(run_dir), open_tab=True)

    # -- events -------------------------------------------------------------------------------
    def on_stage_started(self, stage: str, epochs: int) -> None:
        self.stages.start_stage(stage, epochs)
        if stage in STAGES:
            self.stage_combo.setCurrentIndex(STAGES.index(stage))
        self.log(f"{stage} stage started ({epochs} epochs)")

    def on_epoch(self, stage: str, epoch: int, epochs: int, metrics: dict) -> None:
        self.add_metrics(stage, epoch, metrics)
        shown = ", ".join(f"{key} {scalar(value):.4g}" for key, value in metrics.items()
                          if key in GROUP_OF and scalar(value) is not None)
        self.log(f"{stage} epoch {epoch}/{epochs}: {shown}")

    def add_metrics(self, stage: str, epoch: int, metrics: dict) -> None:
        """Remember an epoch's metrics and plot them if that stage is on show; an epoch seen before
        (redone after a resume) replaces the old one and redraws the stage."""
        known = self.history.setdefault(stage, {})
        appended = not known or epoch > max(known)
        known[epoch] = metrics
        if stage != self.shown_stage:
            return
        if not appended:
            self.show_stage(stage)
            return
        for kind, points in self._points_by_plot(metrics).items():
            plot = self.plots[kind]
            self._defer(lambda plot=plot, points=points: [plot.add_point(name, epoch, y) for name, y in points])

    @staticmethod
    def _points_by_plot(metrics: dict) -> dict[str, list[tuple[str, float]]]:
        by_plot: dict[str, list[tuple[str, float]]] = {}
        for key, value in metrics.items():
            number = scalar(value)
            if number is not None and key in GROUP_OF:
                by_plot.setdefault(GROUP_OF[key], []).append((key, number))
        return by_plot

    def show_stage(self, stage: str) -> None:
        """Redraw the three plots from the remembered metrics of one stage."""
        self.shown_stage = stage
        self._pending = [(kind, update) for kind, update in self._pending if kind != "plot"]
        series: dict[str, dict[str, tuple[list[float], list[float]]]] = {kind: {} for kind in self.plots}
        for epoch in sorted(self.history.get(stage, {})):
            for kind, points in self._points_by_plot(self.history[stage][epoch]).items():
                for name, y in points:
                    xs, ys = series[kind].setdefault(name, ([], []))
                    xs.append(epoch)
                    ys.append(y)
        for kind, plot in self.plots.items():
            plot.clear_all()
            plot.setTitle(f"{plot.base_title} — {stage}")
            for name, (xs, ys) in series[kind].items():
                plot.set_series(name, xs, ys)
            if stage == "student":
                for epoch, label in sorted(self.markers.items()):
                    plot.add_marker(epoch, label)

    def _defer(self, update, kind: str = "plot") -> None:
        """Queue a display update; one runs per event-loop pass so the UI never freezes for a batch.
        ``kind`` "plot" updates are dropped when another stage is put on show (it redraws anyway)."""
        self._pending.append((kind, update))
        if not self._drain_timer.isActive():
            self._drain_timer.start()

    def _drain_one(self) -> None:
        if self._pending:
            self._pending.pop(0)[1]()
        if not self._pending:
            self._drain_timer.stop()

    def flush(self) -> None:
        """Apply every queued display update now."""
        while self._pending:
            self._pending.pop(0)[1]()
        self._drain_timer.stop()

    def on_matching(self, epoch: int, kind: str, changed: float) -> None:
        """Matching happens in the student stage (SSM before epoch 1, DynM after its epochs); a
        resumed student stage re-announces its initial matching, drawn once."""
        label = marker_label(kind, epoch)
        if epoch not in self.markers:
            self.markers[epoch] = label
            if self.shown_stage == "student":
                for plot in self.plots.values():
                    self._defer(lambda plot=plot: plot.add_marker(epoch, label))
        self.log(f"matching updated ({MARKER_NAMES.get(kind, kind)}) at epoch {epoch}: {changed:.1%} of matches changed")

    def on_run_finished(self, run_dir: str, _summary: dict) -> None:
        self.show_results(Path(run_dir))

    def on_succeeded(self, result) -> None:
        self.cancel_button.setEnabled(False)
        self.stages.eta_label.setText("Run finished.")
        run_dir = getattr(result, "run_dir", None) or (self.worker.run_dir if self.worker else None)
        if self.run_dir is None and run_dir:
            self.show_results(Path(run_dir))
        self.log("Run finished.")

    def on_failed(self, message: str, cancelled: bool) -> None:
        self.cancel_button.setEnabled(False)
        self.stages.eta_label.setText("Run cancelled." if cancelled else "Run failed.")
        self.cancel_button.setText("Cancel run")
        if cancelled:
            self.title.setText(self.title.text() + " — cancelled (resume it from Projects & runs)")
            self.log("Run cancelled; the last checkpoint is kept.")
        else:
            self.title.setText(self.title.text() + " — failed")
            self.log(f"[error] {message}")
        self.result_label.setText(message)

    # -- results ----------------------------------------------------------------------------
    def show_results(self, run_dir: Path, open_tab: bool = False) -> None:
        """The finished student's test results (nothing before the run has finished). A live run
        does not switch tabs by itself: laying out the other tab costs the UI thread ~30 ms, a
        visible freeze on a busy machine; the headline says where the results are."""
        self.run_dir = run_dir
        folder = RunFolder(run_dir)
        final = folder.final_metrics()
        names = final.class_names
        if final.test_confusion:
            matrix = np.asarray(final.test_confusion, dtype=np.float64)
            names = names or [str(i) for i in range(matrix.shape[0])]
            self._defer(lambda: self.confusion.set_matrix(matrix, names), "result")
        if final.test_per_class_f1:
            f1 = [float(value) for value in final.test_per_class_f1]
            self._defer(lambda: self.f1_bars.set_values(f1, names), "result")
        headline = [f"{text} {final.value(key):.3f}" for key, text in (("test_oa", "Test OA"),
                                                                      ("test_macro_f1", "Test macro F1"))
                    if final.value(key) is not None]
        if final.best_epoch is not None:
            headline.append(f"student of epoch {final.best_epoch}")
        if final.values and not open_tab:
            headline.append("confusion matrix and per-class F1 in the Results tab")
        text = f"Run folder: {run_dir}"
        if headline:
            text = " · ".join(headline) + "\n" + text
        self.result_label.setText(text)
        self.bundle_button.setEnabled(folder.has_bundle)
        self.bundle_button.setToolTip(str(folder.bundle_path))
        self.tabs.setTabEnabled(self.tabs.indexOf(self.teachers), bool(folder.match_rounds()))
        if final.values:
            results = self.tabs.indexOf(self.results_tab)
            self.tabs.setTabEnabled(results, True)
            if open_tab:
                self.tabs.setCurrentIndex(results)

    def _tab_changed(self, index: int) -> None:
        """The Teachers tab reads its match tables when it is first looked at."""
        if self.tabs.widget(index) is self.teachers and self.run_dir is not None:
            self.teachers.show_run(self.run_dir)

    def _open_bundle(self) -> None:
        if self.run_dir is not None:
            self.openBundleRequested.emit(str(RunFolder(self.run_dir).bundle_path))
            open_folder(self, self.run_dir)

    def point_counts(self) -> dict[str, int]:
        """Points drawn per plot (after applying queued updates)."""
        self.flush()
        return {name: plot.point_count() for name, plot in self.plots.items()}
