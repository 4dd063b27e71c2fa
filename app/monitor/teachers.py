"""The Teachers tab of a run: for a chosen RGB training image, the MS tile that taught it in each
matching round (pseudo-RGB thumbnail, class, score), and per class how varied the teachers are over
the rounds. It shows whether the pairing makes sense: a teacher of the right kind of landscape, not
one MS tile teaching a whole class.

Everything is read through the engine's RunFolder (match tables, markers, teacher diversity, the
run's band layout); files and thumbnails are read in worker threads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QCompleter, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QSplitter, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.widgets import display_rgb8, rgb8_to_qimage
from app.workers import EngineWorker, plain_worker

THUMB = 88
ROUND_NAMES = {"ssm": "initial matching (SSM)", "random": "random pairing (no SSM)", "dynm": "re-matching (DynM)"}


@dataclass
class Teacher:
    round_index: int
    epoch: int
    kind: str
    ms_path: str
    ms_class: str
    score: str

    def when(self) -> str:
        name = ROUND_NAMES.get(self.kind, self.kind)
        return f"{name}, before epoch 1" if self.round_index == 0 else f"{name} after epoch {self.epoch}"

    def score_text(self) -> str:
        if not self.score:
            return "—"
        if self.kind == "dynm":
            return f"KL {float(self.score):.3g} (lower: closer)"
        return f"similarity {float(self.score):.3f}"


@dataclass
class TeacherHistory:
    """Everything the tab shows, loaded once per run."""

    rgb_classes: dict[str, str] = field(default_factory=dict)   # RGB image -> class, sorted by class then name
    teachers: dict[str, list[Teacher]] = field(default_factory=dict)  # RGB image -> its teacher in each round
    diversity: list = field(default_factory=list)                # per round: class -> TeacherDiversity
    rounds: list[tuple[int, int, str]] = field(default_factory=list)  # (round, epoch, kind)
    rgb_bands: tuple[int, ...] = (0, 1, 2)                       # MS band indices of the pseudo-RGB


def load_history(run_dir: Path) -> TeacherHistory:
    """Match tables, markers and the run's band layout (worker thread)."""
    from sembridge_engine.data.bands import get_preset
    from sembridge_engine.training.rundir import RunFolder

    folder = RunFolder(run_dir)
    history = TeacherHistory()
    markers = {marker.round: marker for marker in folder.markers()}
    config = folder.config()
    if config is not None:
        try:
            history.rgb_bands = tuple(get_preset(config.data.band_preset, config.data.custom_bands,
                                                 config.data.custom_rgb).rgb_indices)
        except ValueError:
            pass
    for round_index in folder.match_rounds():
        marker = markers.get(round_index)
        epoch, kind = (marker.epoch, marker.kind) if marker is not None else (0, "dynm")
        history.rounds.append((round_index, epoch, kind))
        for row in folder.read_match_table(round_index):
            history.rgb_classes.setdefault(row["rgb_path"], row["class"])
            history.teachers.setdefault(row["rgb_path"], []).append(
                Teacher(round_index, epoch, kind, row["ms_path"], row["class"], row["score"]))
    history.rgb_classes = dict(sorted(history.rgb_classes.items(), key=lambda item: (item[1], Path(item[0]).name)))
    history.diversity = folder.teacher_diversity()
    return history


def load_thumbnails(paths: list[tuple[str, tuple[int, ...]]]) -> dict[str, QImage]:
    """Stretched (pseudo-)RGB thumbnails of (path, bands) pairs; unreadable files are left out (worker thread)."""
    from sembridge_engine.data.readers import read_image

    images = {}
    for path, bands in paths:
        try:
            array = read_image(path)
        except (OSError, ValueError):
            continue
        usable = tuple(band for band in bands if band < array.shape[0]) or (0,)
        images[path] = rgb8_to_qimage(display_rgb8(array, usable)).scaled(
            THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    return images


class TeachersView(QWidget):
    """``show_run(run_dir)`` loads a run's match tables; choose an RGB image to see its teachers."""

    loaded = Signal()
    thumbnailsShown = Signal()

    COLUMNS = ("Round", "MS teacher", "Class", "Score")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = TeacherHistory()
        self.run_dir: Path | None = None
        self._workers: list[EngineWorker] = []
        self.status = QLabel("Teachers are shown once a run has matched its RGB images with MS tiles.")
        self.status.setWordWrap(True)
        self.image_combo = QComboBox()
        self.image_combo.setEditable(True)
        self.image_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.image_combo.completer().setFilterMode(Qt.MatchFlag.MatchContains)
        self.image_combo.completer().setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.image_combo.setMinimumContentsLength(28)
        self.image_combo.setToolTip("An RGB training image (type part of its name to find it)")
        self.image_combo.currentIndexChanged.connect(self._image_chosen)
        self.rgb_picture = QLabel()
        self.rgb_picture.setFixedSize(QSize(THUMB, THUMB))
        self.rgb_picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.rgb_picture.setFrameShape(QLabel.Shape.StyledPanel)
        self.rgb_caption = QLabel()
        self.rgb_caption.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.diversity_table = QTableWidget(0, 0)
        self.diversity_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diversity_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

        chooser = QHBoxLayout()
        chooser.addWidget(QLabel("RGB training image:"))
        chooser.addWidget(self.image_combo, 1)
        image_row = QHBoxLayout()
        image_row.addWidget(self.rgb_picture)
        image_row.addWidget(self.rgb_caption, 1)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addLayout(chooser)
        left_layout.addLayout(image_row)
        left_layout.addWidget(self.table, 1)
        diversity_box = QGroupBox("Teacher diversity per class: distinct MS teachers · share of the busiest one")
        QVBoxLayout(diversity_box).addWidget(self.diversity_table)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(diversity_box)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(splitter, 1)

    # -- loading ------------------------------------------------------------------------------
    def show_run(self, run_dir: Path) -> None:
        """Load a run's teachers (in a worker) unless they are already on show."""
        if self.run_dir == Path(run_dir) and self.history.teachers:
            return
        self.run_dir = Path(run_dir)
        self.status.setText("Reading the match tables…")
        self._start(plain_worker(load_history, self.run_dir), self._history_loaded)

    def _start(self, worker: EngineWorker, on_result) -> None:
        worker.succeeded.connect(on_result)
        worker.failed.connect(lambda message, _cancelled: self.status.setText(f"Cannot read the teachers: {message}"))
        worker.finished.connect(lambda: (self._workers.remove(worker), worker.deleteLater()))
        self._workers.append(worker)
        worker.start()

    def _history_loaded(self, history: TeacherHistory) -> None:
        self.history = history
        if not history.rounds:
            self.status.setText("This run has no matching rounds (the RGB baseline has no teacher).")
            self.loaded.emit()
            return
        self.status.setText(f"{len(history.rgb_classes)} RGB training images, {len(history.rounds)} matching "
                            f"round{'s' if len(history.rounds) != 1 else ''}.")
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for path, name in history.rgb_classes.items():
            self.image_combo.addItem(f"{name} / {Path(path).name}", path)
        self.image_combo.blockSignals(False)
        self._fill_diversity()
        self.loaded.emit()
        self._image_chosen()

    def _fill_diversity(self) -> None:
        history = self.history
        classes = sorted({name for per_class in history.diversity for name in per_class})
        self.diversity_table.setRowCount(len(classes))
        self.diversity_table.setColumnCount(len(history.rounds))
        self.diversity_table.setVerticalHeaderLabels(classes)
        self.diversity_table.setHorizontalHeaderLabels(
            ["round 0" if epoch == 0 else f"after epoch {epoch}" for _round, epoch, _kind in history.rounds])
        for column, per_class in enumerate(history.diversity):
            for row, name in enumerate(classes):
                found = per_class.get(name)
                if found is None:
                    continue
                item = QTableWidgetItem(f"{found.teachers} · {found.busiest_share:.0%}")
                item.setToolTip(f"{found.images} RGB images of {name} taught by {found.teachers} distinct MS tiles; "
                                f"the busiest teaches {found.busiest_share:.0%} of them")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.diversity_table.setItem(row, column, item)

    # -- one image ------------------------------------------------------------------------------
    def chosen_image(self) -> str:
        return self.image_combo.currentData() or ""

    def teachers_of(self, rgb_path: str) -> list[Teacher]:
        return self.history.teachers.get(rgb_path, [])

    def _image_chosen(self, *_args) -> None:
        rgb_path = self.chosen_image()
        teachers = self.teachers_of(rgb_path)
        self.rgb_caption.setText(f"<b>{Path(rgb_path).name}</b><br>class {self.history.rgb_classes.get(rgb_path, '')}"
                                 f"<br><small>{rgb_path}</small>" if rgb_path else "")
        self.table.setRowCount(len(teachers))
        for row, teacher in enumerate(teachers):
            values = (teacher.when(), Path(teacher.ms_path).name, teacher.ms_class, teacher.score_text())
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(teacher.ms_path if column == 1 else value)
                self.table.setItem(row, column, item)
        if rgb_path:
            wanted = [(rgb_path, (0, 1, 2))] + [(teacher.ms_path, self.history.rgb_bands) for teacher in teachers]
            self._start(plain_worker(load_thumbnails, wanted), lambda images: self._show_thumbnails(rgb_path, images))

    def _show_thumbnails(self, rgb_path: str, images: dict[str, QImage]) -> None:
        if rgb_path != self.chosen_image():
            return  # another image was chosen meanwhile
        if rgb_path in images:
            self.rgb_picture.setPixmap(QPixmap.fromImage(images[rgb_path]))
        for row, teacher in enumerate(self.teachers_of(rgb_path)):
            image = images.get(teacher.ms_path)
            item = self.table.item(row, 1)
            if image is not None and item is not None:
                item.setIcon(QPixmap.fromImage(image))
        self.thumbnailsShown.emit()
