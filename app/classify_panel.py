"""Classify panel: drop images or folders, get a grid of thumbnails with the predicted class and a
confidence bar; sort, filter by class and export to CSV. Classification runs in a worker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel, QModelIndex, QRect, QRegularExpression, QSize, QSortFilterProxyModel, Qt, Signal,
)
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QMessageBox, QLabel, QListView, QProgressBar, QPushButton,
    QStyle, QStyledItemDelegate, QStyleOptionViewItem, QVBoxLayout, QWidget,
)

from app.settings import Settings
from app.widgets import (
    ask_folder, ask_open_files, ask_save_file, display_rgb8, DropArea, error_label, PathField, rgb8_to_qimage, show_error,
)
from app.workers import EngineWorker

THUMB = 112
CELL = QSize(160, 190)
ResultRole = Qt.ItemDataRole.UserRole + 1
ClassRole = Qt.ItemDataRole.UserRole + 2
ConfidenceRole = Qt.ItemDataRole.UserRole + 3
NameRole = Qt.ItemDataRole.UserRole + 4
FilterRole = Qt.ItemDataRole.UserRole + 5
ERRORS_FILTER = "__errors__"


@dataclass
class ClassifiedTile:
    path: str
    top: list[tuple[str, float]] | None
    error: str | None
    image: QImage | None
    warning: str | None = None  # the engine's note on scale or radiometry: the answer depends on it

    @property
    def predicted(self) -> str:
        return self.top[0][0] if self.top else ""

    @property
    def confidence(self) -> float:
        return self.top[0][1] if self.top else -1.0


def classify_job(bundle_path: str, paths: list[str], callback, cancel) -> list[ClassifiedTile]:
    """Load the bundle, classify every file, make thumbnails (worker thread)."""
    from sembridge_engine.data.readers import read_image
    from sembridge_engine.bundle import load_bundle
    from sembridge_engine.labelling.classify import classify_files

    bundle = load_bundle(bundle_path)
    results = classify_files(bundle, paths, top_k=3, callback=callback, cancel=cancel)
    tiles = []
    for result in results:
        image = None
        if result.error is None:
            cancel.raise_if_cancelled()
            try:
                array = read_image(result.path, as_rgb=True)
                image = rgb8_to_qimage(display_rgb8(array)).scaled(
                    THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            except (OSError, ValueError):
                image = None
        tiles.append(ClassifiedTile(result.path, result.top, result.error, image, result.warning))
    return tiles


class ResultsModel(QAbstractListModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tiles: list[ClassifiedTile] = []

    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.tiles)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        tile = self.tiles[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(tile.path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            if tile.error:
                return f"{tile.path}\n{tile.error}"
            text = tile.path + "\n" + "\n".join(f"{name}: {prob:.1%}" for name, prob in tile.top or [])
            return text + (f"\nNote: {tile.warning}" if tile.warning else "")
        if role == ResultRole:
            return tile
        if role == ClassRole:
            return tile.predicted
        if role == ConfidenceRole:
            return tile.confidence
        if role == NameRole:
            return Path(tile.path).name.lower()
        if role == FilterRole:
            return ERRORS_FILTER if tile.error else tile.predicted
        return None

    def set_tiles(self, tiles: list[ClassifiedTile]) -> None:
        self.beginResetModel()
        self.tiles = tiles
        self.endResetModel()

    def add_tiles(self, tiles: list[ClassifiedTile]) -> None:
        known = {tile.path for tile in self.tiles}
        fresh = [tile for tile in tiles if tile.path not in known]
        replaced = {tile.path: tile for tile in tiles if tile.path in known}
        self.beginResetModel()
        self.tiles = [replaced.get(tile.path, tile) for tile in self.tiles] + fresh
        self.endResetModel()


class ResultsFilter(QSortFilterProxyModel):
    """Filters on the exact predicted class (or ERRORS_FILTER for unreadable files)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setFilterRole(FilterRole)

    def set_class(self, name: str) -> None:
        pattern = f"^{QRegularExpression.escape(name)}$" if name else ""
        self.setFilterRegularExpression(QRegularExpression(pattern))


class TileDelegate(QStyledItemDelegate):
    """Thumbnail, file name, predicted class and a confidence bar (or the error in red)."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return CELL

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        tile: ClassifiedTile = index.data(ResultRole)
        painter.save()
        rect = option.rect.adjusted(4, 4, -4, -4)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight().color().lighter(160))
        picture = QRect(rect.left() + (rect.width() - THUMB) // 2, rect.top(), THUMB, THUMB)
        if tile.image is not None:
            image = tile.image
            target = QRect(picture.left() + (THUMB - image.width()) // 2,
                           picture.top() + (THUMB - image.height()) // 2, image.width(), image.height())
            painter.drawImage(target, image)
        else:
            painter.fillRect(picture, QColor("#f3d6d6"))
            painter.setPen(QColor("#b00020"))
            painter.drawText(picture, Qt.AlignmentFlag.AlignCenter, "unreadable")
        metrics = option.fontMetrics
        line = metrics.height()
        y = picture.bottom() + 4
        painter.setPen(option.palette.text().color())
        name = metrics.elidedText(Path(tile.path).name, Qt.TextElideMode.ElideMiddle, rect.width())
        painter.drawText(QRect(rect.left(), y, rect.width(), line), Qt.AlignmentFlag.AlignHCenter, name)
        y += line + 2
        if tile.error:
            painter.setPen(QColor("#b00020"))
            error = metrics.elidedText(tile.error, Qt.TextElideMode.ElideRight, rect.width() * 2 - 10)
            painter.drawText(QRect(rect.left(), y, rect.width(), line * 2),
                             Qt.AlignmentFlag.AlignHCenter | Qt.TextFlag.TextWordWrap, error)
        else:
            font = painter.font()
            font.setBold(True)
            painter.setFont(font)
            label = QFontMetrics(font).elidedText(tile.predicted, Qt.TextElideMode.ElideRight, rect.width())
            painter.drawText(QRect(rect.left(), y, rect.width(), line), Qt.AlignmentFlag.AlignHCenter, label)
            font.setBold(False)
            painter.setFont(font)
            y += line + 3
            bar = QRect(rect.left() + 6, y, rect.width() - 12, 8)
            painter.setPen(QPen(QColor("#999999")))
            painter.drawRect(bar)
            filled = QRect(bar.left(), bar.top(), int(bar.width() * max(tile.confidence, 0.0)), bar.height())
            hue = int(120 * max(tile.confidence, 0.0))
            painter.fillRect(filled, QColor.fromHsv(hue, 200, 210))
            y += 10
            painter.setPen(option.palette.text().color())
            painter.drawText(QRect(rect.left(), y, rect.width(), line), Qt.AlignmentFlag.AlignHCenter,
                             f"{tile.confidence:.0%}")
        painter.restore()


class ClassifyPanel(QWidget):
    """Drop files → worker classifies with the chosen bundle → grid of results."""

    classified = Signal()

    SORTS = (("File name", NameRole, Qt.SortOrder.AscendingOrder),
             ("Class", ClassRole, Qt.SortOrder.AscendingOrder),
             ("Confidence (high first)", ConfidenceRole, Qt.SortOrder.DescendingOrder),
             ("Confidence (low first)", ConfidenceRole, Qt.SortOrder.AscendingOrder))

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.worker: EngineWorker | None = None
        self.queued: list[str] = []
        self.drop_area = DropArea("Drop image files or folders here (PNG, JPEG, TIFF, GeoTIFF)")
        self.drop_area.pathsDropped.connect(self.add_paths)
        add_files = QPushButton("Add files…")
        add_files.clicked.connect(self._choose_files)
        add_folder = QPushButton("Add folder…")
        add_folder.clicked.connect(self._choose_folder)
        self.bundle_field = PathField("Model bundle (model.sembridge)", folder=False,
                                      file_filter="Model bundle (*.sembridge)", settings=settings, key="bundle")
        self.class_filter = QComboBox()
        self.class_filter.setMinimumWidth(160)
        self.class_filter.currentIndexChanged.connect(self._filter_changed)
        self.sort_combo = QComboBox()
        for text, _role, _order in self.SORTS:
            self.sort_combo.addItem(text)
        self.sort_combo.currentIndexChanged.connect(self._sort_changed)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._choose_csv)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        self.status_label = QLabel("Drop images to classify them with the selected model.")
        self.status_label.setWordWrap(True)
        self.error_label = error_label()

        self.model = ResultsModel(self)
        self.proxy = ResultsFilter(self)
        self.proxy.setSourceModel(self.model)
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)
        self.view.setSpacing(4)
        self.view.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.view.setItemDelegate(TileDelegate(self.view))
        self.view.setModel(self.proxy)

        drop_row = QHBoxLayout()
        drop_row.addWidget(self.drop_area, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(add_files)
        buttons.addWidget(add_folder)
        drop_row.addLayout(buttons)
        bundle_row = QHBoxLayout()
        bundle_row.addWidget(QLabel("Model:"))
        bundle_row.addWidget(self.bundle_field, 1)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Show:"))
        tools.addWidget(self.class_filter)
        tools.addWidget(QLabel("Sort by:"))
        tools.addWidget(self.sort_combo)
        tools.addStretch(1)
        tools.addWidget(self.progress)
        tools.addWidget(self.cancel_button)
        tools.addWidget(self.export_button)
        tools.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.addLayout(bundle_row)
        layout.addLayout(drop_row)
        layout.addLayout(tools)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self.view, 1)
        self._update_filter_choices()
        self._sort_changed()

    def set_default_bundle(self, path: str | Path | None) -> None:
        """Pre-select a bundle unless the user already chose one."""
        if path and not self.bundle_field.path():
            self.bundle_field.set_path(path)

    # -- input ------------------------------------------------------------------------------
    def _choose_files(self) -> None:
        files = ask_open_files(self, self.settings, "classify_images", "Images to classify",
                                                "Images (*.png *.jpg *.jpeg *.tif *.tiff);;All files (*)")
        if files:
            self.add_paths([Path(f) for f in files])

    def _choose_folder(self) -> None:
        folder = ask_folder(self, self.settings, "classify_images", "Folder of images to classify")
        if folder:
            self.add_paths([Path(folder)])

    def add_paths(self, paths: list[Path]) -> None:
        """Classify these files/folders (queued if a classification is already running)."""
        self.queued.extend(str(p) for p in paths)
        if self.worker is None:
            self._start()

    def _start(self) -> None:
        bundle = self.bundle_field.path()
        if not bundle or not Path(bundle).is_file():
            show_error(self.error_label, "Choose a model bundle (model.sembridge) first; train a run to get one."
                       if not bundle else f"Model bundle not found: {bundle}")
            self.queued.clear()
            return
        show_error(self.error_label, "")
        paths, self.queued = self.queued, []
        self.settings.last_bundle = bundle
        self.worker = EngineWorker(lambda callback, cancel: classify_job(bundle, paths, callback, cancel))
        self.worker.batchProgress.connect(self._progress)
        self.worker.succeeded.connect(self._show_results)
        self.worker.failed.connect(self._failed)
        self.worker.finished.connect(self._worker_done)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.status_label.setText(f"Classifying {len(paths)} item(s)…")
        self.worker.start()

    def _progress(self, _stage: str, _epoch: int, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _failed(self, message: str, cancelled: bool) -> None:
        if cancelled:
            self.status_label.setText("Classification cancelled.")
        else:
            show_error(self.error_label, f"Classification failed: {message}")

    def _worker_done(self) -> None:
        self.worker.deleteLater()
        self.worker = None
        self.progress.hide()
        self.cancel_button.hide()
        if self.queued:
            self._start()
        self.classified.emit()

    def _show_results(self, tiles: list[ClassifiedTile]) -> None:
        self.model.add_tiles(tiles)
        self._update_filter_choices()
        self._sort_changed()
        errors = sum(1 for tile in self.model.tiles if tile.error)
        text = f"{len(self.model.tiles)} image(s) classified"
        if errors:
            text += f"; {errors} could not be read (shown in red)"
        noted = sum(1 for tile in self.model.tiles if tile.warning)
        if noted:
            text += f"; {noted} with a note on scale or values (hover to read it)"
        self.status_label.setText(text + ".")

    # -- view -------------------------------------------------------------------------------
    def _update_filter_choices(self) -> None:
        current = self.class_filter.currentData()
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem("All images", "")
        counts: dict[str, int] = {}
        for tile in self.model.tiles:
            if tile.predicted:
                counts[tile.predicted] = counts.get(tile.predicted, 0) + 1
        for name in sorted(counts):
            self.class_filter.addItem(f"{name} ({counts[name]})", name)
        errors = sum(1 for tile in self.model.tiles if tile.error)
        if errors:
            self.class_filter.addItem(f"Unreadable ({errors})", ERRORS_FILTER)
        self.class_filter.setCurrentIndex(max(0, self.class_filter.findData(current)))
        self.class_filter.blockSignals(False)
        self._filter_changed()

    def _filter_changed(self) -> None:
        self.proxy.set_class(self.class_filter.currentData() or "")

    def _sort_changed(self) -> None:
        _text, role, order = self.SORTS[self.sort_combo.currentIndex()]
        self.proxy.setSortRole(role)
        self.proxy.sort(0, order)

    def sorted_tiles(self) -> list[ClassifiedTile]:
        """Every result, filter or not, in the order the view sorts them."""
        _text, role, order = self.SORTS[self.sort_combo.currentIndex()]
        keys = [self.model.index(row, 0).data(role) for row in range(len(self.model.tiles))]
        rows = sorted(range(len(keys)), key=keys.__getitem__, reverse=order == Qt.SortOrder.DescendingOrder)
        return [self.model.tiles[row] for row in rows]

    def visible_tiles(self) -> list[ClassifiedTile]:
        return [self.proxy.index(row, 0).data(ResultRole) for row in range(self.proxy.rowCount())]

    def clear(self) -> None:
        self.model.set_tiles([])
        self._update_filter_choices()
        self.status_label.setText("Drop images to classify them with the selected model.")

    # -- export -----------------------------------------------------------------------------
    def _choose_csv(self) -> None:
        """With a filter on, ask whether to export every row or only those shown."""
        only_shown = False
        shown, total = self.proxy.rowCount(), len(self.model.tiles)
        if shown < total:
            box = QMessageBox(QMessageBox.Icon.Question, "Export predictions",
                              f"The filter shows {shown} of {total} images. Export which?", parent=self)
            all_button = box.addButton(f"All {total}", QMessageBox.ButtonRole.AcceptRole)
            shown_button = box.addButton(f"The {shown} shown", QMessageBox.ButtonRole.AcceptRole)
            box.addButton(QMessageBox.StandardButton.Cancel)
            box.exec()
            if box.clickedButton() not in (all_button, shown_button):
                return
            only_shown = box.clickedButton() is shown_button
        path = ask_save_file(self, self.settings, "csv_export", "Export predictions", "predictions.csv", "CSV (*.csv)")
        if path:
            self.export_csv(Path(path), only_shown=only_shown)

    def export_csv(self, path: Path, only_shown: bool = False) -> Path:
        """Every row in the current sort order (or only those the filter shows), in the engine's
        prediction-table layout."""
        from sembridge_engine.labelling.prediction_table import write_predictions_csv

        rows = self.visible_tiles() if only_shown else self.sorted_tiles()
        write_predictions_csv(path, rows)
        self.status_label.setText(f"Exported {len(rows)} row(s) to {path}")
        return path
