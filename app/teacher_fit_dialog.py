"""Does the teacher fit? The engine's teacher fit check (``sembridge teacher-fit``) on two runs of the
runs list: the teacher of one against the RGB-only student of the other. The check decodes both
archives and runs both models, so it runs in a worker thread; the dialog shows its progress, then
the numbers, the verdict and the per-class table, or the engine's error."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout,
    QWidget,
)

from app.widgets import error_label, show_error
from app.workers import EngineWorker, run_in_worker
from sembridge_engine.training.rundir import RunFolder

TABLE_COLUMNS = ("Class", "Teacher: most like", "RGB: most like", "Same?")
MAX_TABLE_HEIGHT = 420   # pixels: about 14 class rows


def teacher_fit_roles(runs: list[RunFolder]) -> tuple[RunFolder, RunFolder] | None:
    """(teacher run, RGB-only run) when two runs can be checked: one with a teacher checkpoint, the other a
    finished plain RGB run, with no teacher (the engine checks the rest and says what is wrong)."""
    if len(runs) != 2:
        return None
    for teacher, rgb_only in (runs, runs[::-1]):
        rgb_only_config = rgb_only.config()
        if (teacher.checkpoint("teacher").is_file() and rgb_only.status == "finished"
                and rgb_only_config is not None and not rgb_only_config.uses_teacher):
            return teacher, rgb_only
    return None


def summary_text(fit) -> str:
    n = len(fit.classes)
    return (f"Same most-resembled class in {fit.same_top} of {n} classes (chance: {fit.chance_same_top:.1f}); "
            f"centred cosine {fit.cosine:+.2f} (0: unrelated, 1: the same resemblances); permutation test "
            f"p = {fit.p_value:.2g}; temperature {fit.temperature:g}.\n\n{fit.verdict[0].upper()}{fit.verdict[1:]}.")


class TeacherFitDialog(QDialog):
    """Runs the check when opened; closing it stops a check still running."""

    checked = Signal()

    def __init__(self, teacher_run: RunFolder, rgb_only_run: RunFolder, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Does the teacher fit?")
        self.teacher_run, self.rgb_only_run = teacher_run, rgb_only_run
        self.fit = None
        self.worker: EngineWorker | None = None
        self._closing = False
        runs = QLabel(f"Teacher of <b>{teacher_run.name}</b> against the RGB-only student of <b>{rgb_only_run.name}</b>: "
                      "do the classes the teacher finds alike match the classes the RGB images find alike?")
        runs.setWordWrap(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = error_label()
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (runs, self.status_label, self.error_label, self.table, buttons):
            layout.addWidget(widget)
        self.resize(640, 0)

    def start(self) -> None:
        from sembridge_engine.training.resemblance import teacher_fit  # torch: imported on first use, not at start-up

        self.status_label.setText("Checking: loading the imagery and running both models…")
        worker = run_in_worker(teacher_fit, self.teacher_run.root, self.rgb_only_run.root)
        worker.logLine.connect(lambda message, _level: self.status_label.setText(f"Checking: {message}…"))
        worker.succeeded.connect(self._show)
        worker.failed.connect(self._failed)
        worker.finished.connect(self._done)
        self.worker = worker
        worker.start()

    def _show(self, fit) -> None:
        self.fit = fit
        self.status_label.setText(summary_text(fit))
        self.table.setRowCount(len(fit.per_class))
        for row, (name, teacher, rgb) in enumerate(fit.per_class):
            for column, value in enumerate((name, teacher, rgb, "yes" if teacher == rgb else "")):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.show()
        self._grow_to_results()

    def _grow_to_results(self) -> None:
        """The dialog was sized for one line of status: grow it so the verdict is read whole and every column
        and class row shows without scrolling (up to MAX_TABLE_HEIGHT, beyond which the table scrolls)."""
        table = self.table
        frame = 2 * table.frameWidth()
        table.setMinimumWidth(table.horizontalHeader().length() + frame + table.verticalScrollBar().sizeHint().width())
        table.setMinimumHeight(min(table.horizontalHeader().height() + table.verticalHeader().length() + frame,
                                   MAX_TABLE_HEIGHT))
        self.adjustSize()

    def _failed(self, message: str, cancelled: bool) -> None:
        self.status_label.setText("")
        if not cancelled:
            show_error(self.error_label, f"The check failed: {message}")

    def _done(self) -> None:
        self.worker.deleteLater()
        self.worker = None
        self.checked.emit()
        if self._closing:
            super().reject()

    def reject(self) -> None:
        if self.worker is None:
            super().reject()
            return
        self._closing = True   # the dialog goes once the worker has stopped: a running thread is never destroyed
        self.status_label.setText("Stopping the check…")
        self.worker.cancel()
