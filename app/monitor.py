"""Live view of a training run: stage progress with ETA, metric plots, DynM markers, the log,
and at the end the confusion matrix, per-class F1 and the exported model bundle."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QColor, QDesktopServices, QTextCursor
from PySide6.QtWidgets import (
    QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
    QSplitter, QVBoxLayout, QWidget,
)

from app.widgets import human_seconds

STAGES = ("teacher", "matcher", "student")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
# Which plot a metric goes to, decided by words in its name.
TRANSPORT_WORDS = ("transport", "wasserstein", "emd", "ot_cost")
ACCURACY_WORDS = ("acc", "f1", "oa")
LOSS_WORDS = ("loss",)
SYMBOL_POINTS = 3

# Antialiasing and grid lines make each repaint of the live plots 4-7x dearer (measured with
# tests/benchmarks/bench_gui_stall.py); the UI thread competes with training for the GIL.
pg.setConfigOptions(antialias=False, background="w", foreground="#333333")


def plot_kind(key: str) -> str | None:
    lowered = key.lower()
    if any(word in lowered for word in TRANSPORT_WORDS):
        return "transport"
    if any(word in lowered for word in LOSS_WORDS) or lowered.startswith("l_"):
        return "loss"
    if any(word in lowered for word in ACCURACY_WORDS):
        return "accuracy"
    return None


def numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file; a torn last line (run still writing) is skipped."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def find_final_metrics(run_dir: Path, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Final student metrics: the RunFinished summary, else student.json's final_metrics."""
    candidates: list[dict[str, Any]] = []
    if summary:
        candidates.append(summary)
        for key in ("final_metrics", "metrics", "test", "student"):
            if isinstance(summary.get(key), dict):
                candidates.append(summary[key])
    try:
        student = json.loads((run_dir / "student.json").read_text(encoding="utf-8"))
        if isinstance(student.get("final_metrics"), dict):
            candidates.append(student["final_metrics"])
            for value in student["final_metrics"].values():
                if isinstance(value, dict):
                    candidates.append(value)
        if student.get("class_names"):
            candidates.append({"class_names": student["class_names"]})
    except (OSError, ValueError):
        pass
    merged: dict[str, Any] = {}
    for candidate in reversed(candidates):
        merged.update(candidate)
    return merged


def confusion_of(metrics: dict[str, Any]) -> np.ndarray | None:
    for key in ("confusion", "confusion_matrix", "test_confusion", "val_confusion"):
        value = metrics.get(key)
        if isinstance(value, list) and value and isinstance(value[0], list):
            return np.asarray(value, dtype=np.float64)
    return None


def per_class_f1_of(metrics: dict[str, Any], class_names: list[str]) -> list[float] | None:
    for key in ("per_class_f1", "f1_per_class", "test_per_class_f1", "class_f1"):
        value = metrics.get(key)
        if isinstance(value, dict):
            return [float(value.get(name, 0.0)) for name in class_names]
        if isinstance(value, list):
            return [float(v) for v in value]
    return None


class StageProgress(QWidget):
    """One progress bar per stage plus an ETA for the running stage."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bars: dict[str, QProgressBar] = {}
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for column, stage in enumerate(STAGES):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(0)
            bar.setFormat(f"{stage.capitalize()}: waiting")
            bar.setMinimumWidth(160)
            self.bars[stage] = bar
            layout.addWidget(bar, 0, column)
        self.eta_label = QLabel("No run yet.")
        layout.addWidget(self.eta_label, 1, 0, 1, len(STAGES))
        self.reset()

    def reset(self) -> None:
        self.stage = ""
        self.stage_epochs = 0
        self.stage_started = 0.0
        for stage, bar in self.bars.items():
            bar.setValue(0)
            bar.setFormat(f"{stage.capitalize()}: waiting")
        self.eta_label.setText("No run yet.")

    def start_stage(self, stage: str, epochs: int) -> None:
        """Stages run in order, so an earlier stage still waiting was taken from a cache or run."""
        if stage in STAGES:
            for earlier in STAGES[:STAGES.index(stage)]:
                if self.bars[earlier].value() == 0:
                    self.skip_stage(earlier, "reused")
        self.stage, self.stage_epochs, self.stage_started = stage, max(epochs, 1), time.monotonic()
        bar = self.bars.get(stage)
        if bar is not None:
            bar.setValue(0)
            bar.setFormat(f"{stage.capitalize()}: starting")
        self.eta_label.setText(f"{stage.capitalize()} started ({epochs} epochs).")

    def finish_stage(self, stage: str) -> None:
        bar = self.bars.get(stage)
        if bar is not None:
            bar.setValue(1000)
            bar.setFormat(f"{stage.capitalize()}: done")

    def skip_stage(self, stage: str, reason: str) -> None:
        bar = self.bars[stage]
        bar.setValue(1000)
        bar.setFormat(f"{stage.capitalize()}: {reason}")

    def progress(self, stage: str, epoch: int, done: int, total: int) -> None:
        """``epoch`` may count from 0 or 1; the fraction is clamped either way."""
        bar = self.bars.get(stage)
        if bar is None or total <= 0:
            return
        if stage != self.stage:
            self.start_stage(stage, self.stage_epochs)
        completed_epochs = max(epoch - 1, 0) if epoch >= 1 else 0
        fraction = min(1.0, (completed_epochs + done / total) / self.stage_epochs)
        bar.setValue(int(fraction * 1000))
        bar.setFormat(f"{stage.capitalize()}: epoch {max(epoch, 1)}/{self.stage_epochs} · {int(fraction * 100)} %")
        elapsed = time.monotonic() - self.stage_started
        if fraction > 0.01 and elapsed > 0.5:
            remaining = elapsed * (1 - fraction) / fraction
            self.eta_label.setText(f"{stage.capitalize()}: about {human_seconds(remaining)} left in this stage "
                                   f"({human_seconds(elapsed)} so far).")


class MetricPlot(pg.PlotWidget):
    """A plot with one named curve per metric, a legend below the axes and vertical markers."""

    def __init__(self, title: str, y_label: str, legend_columns: int = 3, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.base_title = title
        self.setTitle(title)
        self.setLabel("bottom", "epoch")
        self.setLabel("left", y_label)
        self.legend = pg.LegendItem(colCount=legend_columns, labelTextSize="8pt")
        self.getPlotItem().layout.addItem(self.legend, 4, 1)
        self.getAxis("left").enableAutoSIPrefix(False)
        self.setMinimumHeight(190)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.markers: list[pg.InfiniteLine] = []

    def _curve(self, name: str) -> pg.PlotDataItem:
        curve = self.curves.get(name)
        if curve is None:
            colour = PALETTE[len(self.curves) % len(PALETTE)]
            curve = self.plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                              symbolBrush=colour, symbolPen=None)
            self.legend.addItem(curve, name)
            self.curves[name] = curve
        return curve

    def add_point(self, name: str, x: float, y: float) -> None:
        xs, ys = self.series.setdefault(name, ([], []))
        xs.append(x)
        ys.append(y)
        self._show(name)

    def set_series(self, name: str, xs: list[float], ys: list[float]) -> None:
        self.series[name] = (list(xs), list(ys))
        self._show(name)

    def _show(self, name: str) -> None:
        xs, ys = self.series[name]
        curve = self._curve(name)
        if len(xs) > SYMBOL_POINTS:
            curve.setSymbol(None)  # markers are needed to see 1-2 points; beyond that they only cost paint time
        curve.setData(xs, ys)

    def add_marker(self, x: float, text: str) -> None:
        line = pg.InfiniteLine(pos=x, angle=90, pen=pg.mkPen("#888888", style=Qt.PenStyle.DashLine),
                               label=text, labelOpts={"position": 0.92, "color": "#555555"})
        self.addItem(line)
        self.markers.append(line)

    def point_count(self) -> int:
        return sum(len(xs) for xs, _ in self.series.values())

    def clear_all(self) -> None:
        for curve in self.curves.values():
            self.removeItem(curve)
        for line in self.markers:
            self.removeItem(line)
        self.legend.clear()
        self.series.clear()
        self.curves.clear()
        self.markers.clear()


class CellCounts(pg.GraphicsObject):
    """The counts of a matrix written in its unit cells, all in one item. One pg.TextItem per cell
    (a rich-text document each) cost 1-2 ms of UI thread to create and add: a freeze that grew
    with classes² when a run's results were shown."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[float, float, str, QColor]] = []
        self.grid = (0, 0)  # rows, columns (not "shape": that is a QGraphicsItem method)

    def set_counts(self, matrix: np.ndarray | None, dark: np.ndarray | None = None) -> None:
        """``dark[row, column]`` True writes that count in black (on a light cell), else white."""
        self.prepareGeometryChange()
        black, white = QColor("#000000"), QColor("#ffffff")
        self.cells = [] if matrix is None else [
            (column + 0.5, row + 0.5, f"{int(count)}", black if dark is not None and dark[row, column] else white)
            for (row, column), count in np.ndenumerate(matrix)]
        self.grid = (0, 0) if matrix is None else matrix.shape
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.grid[1], self.grid[0])

    def paint(self, painter, *_args) -> None:
        to_device = painter.transform()
        painter.resetTransform()  # text at its pixel size, upright whatever the view's scale or flip
        for x, y, text, colour in self.cells:
            centre = to_device.map(QPointF(x, y))
            painter.setPen(colour)
            painter.drawText(QRectF(centre.x() - 60, centre.y() - 20, 120, 40), Qt.AlignmentFlag.AlignCenter, text)


class ConfusionView(pg.PlotWidget):
    """Confusion matrix heatmap (row = true class, column = predicted), counts written in cells."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setTitle("Test confusion matrix (rows: true, columns: predicted)")
        self.setMinimumHeight(220)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 256))
        self.addItem(self.image)
        self.counts = CellCounts()
        self.addItem(self.counts, ignoreBounds=True)
        self.getViewBox().invertY(True)
        self.matrix: np.ndarray | None = None

    def clear_matrix(self) -> None:
        self.image.clear()
        self.counts.set_counts(None)
        self.matrix = None
        self.getAxis("bottom").setTicks(None)
        self.getAxis("left").setTicks(None)

    def set_matrix(self, matrix: np.ndarray, class_names: list[str]) -> None:
        self.matrix = matrix
        rows = matrix.sum(axis=1, keepdims=True)
        normalised = matrix / np.maximum(rows, 1)
        self.image.setImage(normalised, levels=(0.0, 1.0))
        self.image.setRect(0, 0, matrix.shape[1], matrix.shape[0])
        rows = [name if len(name) <= 12 else name[:11] + "…" for name in class_names]
        columns = [name[:4] for name in class_names]
        self.getAxis("bottom").setTicks([[(i + 0.5, label) for i, label in enumerate(columns)]])
        self.getAxis("left").setTicks([[(i + 0.5, label) for i, label in enumerate(rows)]])
        self.counts.set_counts(matrix, normalised > 0.6)
        self.autoRange()


class F1Bars(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setTitle("Test F1 per class")
        self.setMinimumHeight(220)
        self.setYRange(0, 1)
        self.bars: pg.BarGraphItem | None = None
        self.values: list[float] = []

    def clear_values(self) -> None:
        self.values = []
        if self.bars is not None:
            self.removeItem(self.bars)
            self.bars = None
        self.getAxis("bottom").setTicks(None)

    def set_values(self, values: list[float], class_names: list[str]) -> None:
        self.values = values
        if self.bars is not None:
            self.removeItem(self.bars)
        self.bars = pg.BarGraphItem(x=np.arange(len(values)), height=values, width=0.7, brush="#4c78a8")
        self.addItem(self.bars)
        short = [name if len(name) <= 10 else name[:9] + "…" for name in class_names]
        self.getAxis("bottom").setTicks([list(enumerate(short))])
        self.setYRange(0, 1)
        self.setXRange(-0.6, len(values) - 0.4)


class MonitorPanel(QWidget):
    """Connect a TrainWorker with ``attach``; or ``load_run`` to replay a finished run's metrics."""

    openBundleRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.worker = None
        self._pending: list = []
        self._drain_timer = QTimer(self)
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._drain_one)
        self.student_epochs = 0
        self.title = QLabel("<b>No run in progress.</b> Launch one from Train, or resume one from Projects & runs.")
        self.title.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.stages = StageProgress()
        self.transport_plot = MetricPlot("Transport cost (student vs teacher, log scale)", "cost")
        self.transport_plot.setLogMode(y=True)
        self.accuracy_plot = MetricPlot("Accuracy and macro F1", "score")
        self.loss_plot = MetricPlot("Loss components", "loss", legend_columns=5)
        self.plots = {"transport": self.transport_plot, "accuracy": self.accuracy_plot, "loss": self.loss_plot}
        self.history: dict[str, list[tuple[float, dict]]] = {stage: [] for stage in STAGES}
        self.stage_markers: dict[str, list[tuple[float, str]]] = {stage: [] for stage in STAGES}
        self.shown_stage = "student"
        self.stage_combo = QComboBox()
        for stage in STAGES:
            self.stage_combo.addItem(f"{stage.capitalize()} stage", stage)
        self.stage_combo.setCurrentIndex(STAGES.index(self.shown_stage))
        self.stage_combo.currentIndexChanged.connect(lambda _i: self.show_stage(self.stage_combo.currentData()))
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.confusion = ConfusionView()
        self.f1_bars = F1Bars()
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.bundle_button = QPushButton("Show model bundle")
        self.bundle_button.setEnabled(False)
        self.bundle_button.clicked.connect(self._open_bundle)

        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(QLabel("Plots of:"))
        header.addWidget(self.stage_combo)
        header.addWidget(self.cancel_button)
        plots = QWidget()
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.transport_plot, 0, 0)
        grid.addWidget(self.accuracy_plot, 0, 1)
        grid.addWidget(self.loss_plot, 1, 0)
        grid.addWidget(self.log_view, 1, 1)
        results = self.results_box = QGroupBox("Results")
        result_layout = QGridLayout(results)
        result_layout.addWidget(self.confusion, 0, 0)
        result_layout.addWidget(self.f1_bars, 0, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.result_label, 1)
        bottom.addWidget(self.bundle_button)
        result_layout.addLayout(bottom, 1, 0, 1, 2)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(plots)
        splitter.addWidget(results)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.stages)
        layout.addWidget(splitter, 1)

    # -- wiring -----------------------------------------------------------------------------
    def attach(self, worker, title: str) -> None:
        """Follow a TrainWorker: clears the view and connects every signal."""
        self.reset()
        self.worker = worker
        self.title.setText(f"<b>{title}</b>")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel run")
        config = getattr(worker, "config", None)
        if config is not None:
            self.student_epochs = config.student.epochs
            if not config.uses_teacher:
                self.stages.skip_stage("teacher", "not used")
                self.stages.skip_stage("matcher", "not used")
            elif not config.uses_matcher:
                self.stages.skip_stage("matcher", "not used")
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
        for plot in self.plots.values():
            plot.clear_all()
        self.log_view.clear()
        self.result_label.clear()
        self.bundle_button.setEnabled(False)
        for stage in STAGES:
            self.history[stage] = []
            self.stage_markers[stage] = []
        self.show_stage("student")
        self.stage_combo.blockSignals(True)
        self.stage_combo.setCurrentIndex(STAGES.index("student"))
        self.stage_combo.blockSignals(False)
        self.confusion.clear_matrix()
        self.f1_bars.clear_values()
        self.results_box.hide()

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

    # -- events -----------------------------------------------------------------------------
    def on_stage_started(self, stage: str, epochs: int) -> None:
        if stage == "student":
            self.student_epochs = epochs
        self.stages.start_stage(stage, epochs)
        if stage in STAGES:
            self.stage_combo.setCurrentIndex(STAGES.index(stage))
        self.log(f"{stage} stage started ({epochs} epochs)")

    def on_epoch(self, stage: str, epoch: int, epochs: int, metrics: dict) -> None:
        self.add_metrics(stage, epoch, metrics)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if numeric(v) is not None)
        self.log(f"{stage} epoch {epoch}/{epochs}: {shown}")

    def add_metrics(self, stage: str, epoch: int, metrics: dict) -> None:
        """Remember an epoch's metrics; plot them if that stage is on show."""
        self.history.setdefault(stage, []).append((epoch, metrics))
        if stage != self.shown_stage:
            return
        by_plot: dict[str, list[tuple[str, float]]] = {}
        for key, value in metrics.items():
            number = numeric(value)
            kind = plot_kind(key)
            if number is not None and kind is not None:
                by_plot.setdefault(kind, []).append((key, number))
        for kind, points in by_plot.items():
            plot = self.plots[kind]
            self._defer(lambda plot=plot, points=points: [plot.add_point(name, epoch, y) for name, y in points])

    def show_stage(self, stage: str) -> None:
        """Redraw the three plots from the remembered metrics of one stage."""
        self.shown_stage = stage
        self._pending = [(kind, update) for kind, update in self._pending if kind != "plot"]
        series: dict[str, dict[str, tuple[list[float], list[float]]]] = {kind: {} for kind in self.plots}
        for epoch, metrics in self.history.get(stage, []):
            for key, value in metrics.items():
                number = numeric(value)
                kind = plot_kind(key)
                if number is not None and kind is not None:
                    xs, ys = series[kind].setdefault(key, ([], []))
                    xs.append(epoch)
                    ys.append(number)
        for kind, plot in self.plots.items():
            plot.clear_all()
            plot.setTitle(f"{plot.base_title} — {stage}")
            for name, (xs, ys) in series[kind].items():
                plot.set_series(name, xs, ys)
            for epoch, label in self.stage_markers.get(stage, []):
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
        """Matching happens in the student stage (SSM before epoch 1, DynM after its epochs)."""
        label = f"{kind} e{epoch}"
        self.stage_markers["student"].append((epoch, label))
        if self.shown_stage == "student":
            for plot in self.plots.values():
                self._defer(lambda plot=plot: plot.add_marker(epoch, label))
        self.log(f"matching updated ({kind}) at epoch {epoch}: {changed:.1%} of matches changed")

    def on_run_finished(self, run_dir: str, summary: dict) -> None:
        self.show_results(Path(run_dir), summary)

    def on_succeeded(self, result) -> None:
        self.cancel_button.setEnabled(False)
        self.stages.eta_label.setText("Run finished.")
        run_dir = Path(getattr(result, "run_dir", "") or (self.worker.run_dir if self.worker else ""))
        if self.run_dir is None and str(run_dir):
            self.show_results(run_dir, getattr(result, "summary", {}) or {})
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
    def show_results(self, run_dir: Path, summary: dict | None = None) -> None:
        self.run_dir = run_dir
        metrics = find_final_metrics(run_dir, summary)
        class_names = [str(n) for n in metrics.get("class_names", [])]
        matrix = confusion_of(metrics)
        if matrix is not None:
            names = class_names or [str(i) for i in range(matrix.shape[0])]
            self.results_box.show()
            QTimer.singleShot(0, self.log_view.ensureCursorVisible)  # the log got shorter
            self._defer(lambda: self.confusion.set_matrix(matrix, names), "result")
            f1 = per_class_f1_of(metrics, names)
            if f1 is not None:
                self._defer(lambda: self.f1_bars.set_values(f1, names), "result")
        headline = []
        for key in ("test_oa", "test_acc", "oa", "accuracy", "test_macro_f1", "macro_f1"):
            value = numeric(metrics.get(key))
            if value is not None:
                headline.append(f"{key} {value:.3f}")
        bundle = run_dir / "model.sembridge"
        text = f"Run folder: {run_dir}"
        if headline:
            text = " · ".join(headline) + "\n" + text
        self.result_label.setText(text)
        self.bundle_button.setEnabled(bundle.exists())
        self.bundle_button.setToolTip(str(bundle))

    def load_run(self, run_dir: Path) -> None:
        """Show a finished (or interrupted) run from its files."""
        self.reset()
        self.worker = None
        self.title.setText(f"<b>{run_dir.name}</b>")
        for row in read_metrics(run_dir / "metrics.jsonl"):
            stage, epoch = row.get("stage"), row.get("epoch")
            if isinstance(stage, str) and isinstance(epoch, (int, float)):
                metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else row
                self.add_metrics(stage, epoch, {k: v for k, v in metrics.items() if k not in ("stage", "epoch")})
                if stage in self.stages.bars:
                    self.stages.finish_stage(stage)
        self.stages.eta_label.setText("Loaded from the run folder.")
        self.show_stage(self.shown_stage)
        self.show_results(run_dir)

    def _open_bundle(self) -> None:
        if self.run_dir is not None:
            self.openBundleRequested.emit(str(self.run_dir / "model.sembridge"))
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run_dir)))

    def point_counts(self) -> dict[str, int]:
        """Points drawn per plot (after applying queued updates)."""
        self.flush()
        return {name: plot.point_count() for name, plot in self.plots.items()}
