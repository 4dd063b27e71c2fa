"""Small shared widgets and display helpers (path fields with drag-and-drop, thumbnails)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import (
    QAbstractSpinBox, QDoubleSpinBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit, QMessageBox, QPushButton,
    QSpinBox, QVBoxLayout, QWidget,
)

from app.settings import Settings

SPIN_LIMIT = 2**31 - 1  # QSpinBox holds a C int


def local_paths(urls: Sequence[QUrl]) -> list[Path]:
    return [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]


def stretch_to_rgb8(array: np.ndarray, rgb: Sequence[int] = (0, 1, 2), low: float = 2.0,
                    high: float = 98.0) -> np.ndarray:
    """(C,H,W) image of any dtype -> (H,W,3) uint8 with a per-channel percentile stretch,
    the usual way to look at multispectral data whose range is far from 0..255."""
    if array.ndim == 2:
        array = array[None]
    channels = array.shape[0]
    picked = [min(i, channels - 1) for i in rgb] if channels >= 3 else [0, 0, 0]
    data = array[picked].astype(np.float32)
    lo = np.percentile(data, low, axis=(1, 2), keepdims=True)
    hi = np.percentile(data, high, axis=(1, 2), keepdims=True)
    scaled = (data - lo) / np.maximum(hi - lo, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0).copy()


def display_rgb8(array: np.ndarray, rgb: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """8-bit colour images as they are; anything else (16-bit, float, multispectral) stretched."""
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] == 3 and tuple(rgb) == (0, 1, 2):
        return np.ascontiguousarray(array.transpose(1, 2, 0))
    return stretch_to_rgb8(array, rgb)


def rgb8_to_qimage(rgb: np.ndarray) -> QImage:
    """(H,W,3) uint8 -> an owning QImage (safe to build in a worker thread)."""
    height, width, _ = rgb.shape
    data = np.ascontiguousarray(rgb)
    return QImage(data.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def setting_spin(key: str, *, decimals: int = 0, step: float = 1.0) -> QAbstractSpinBox:
    """A spin box for config key ``key`` whose range and tooltip come from the config's SettingSpec,
    so the wizard offers exactly the values the engine accepts. ``decimals`` > 0 gives a float box;
    an exclusive minimum becomes the smallest step above it."""
    from sembridge_engine.config import spec_of

    spec = spec_of(key)
    if decimals:
        box: QAbstractSpinBox = QDoubleSpinBox(decimals=decimals, singleStep=step)
        smallest = 10.0 ** -decimals
        low = spec.minimum + smallest if spec.above else spec.minimum
        box.setRange(low if low is not None else -1e12, spec.maximum if spec.maximum is not None else 1e12)
    else:
        box = QSpinBox(singleStep=int(step))
        low = int(spec.minimum) + 1 if spec.above else int(spec.minimum)
        box.setRange(max(low, -SPIN_LIMIT), int(min(spec.maximum, SPIN_LIMIT)))
    box.setToolTip(f"<b>{spec.label}</b><br>{spec.help}")
    return box


class LocalPathDrops:
    """Mixin for widgets that take dropped local files/folders and hand them to ``paths_dropped``."""

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths(event.mimeData().urls())
        if paths:
            event.acceptProposedAction()
            self.paths_dropped(paths)


class PathField(LocalPathDrops, QWidget):
    """A path line edit with Browse buttons that also accepts a dropped file or folder.

    ``pathChanged`` follows every change of the text; ``pathTyped`` only keystrokes (half-typed
    paths: wait before acting on them); ``pathCommitted`` a finished choice (Enter, Browse, drop,
    ``set_path``). With ``settings`` and ``key`` its dialogs open where the user last chose a path
    for this field."""

    pathChanged = Signal(str)
    pathTyped = Signal(str)
    pathCommitted = Signal(str)

    def __init__(self, placeholder: str = "", *, folder: bool = True, file_filter: str = "",
                 settings: Settings | None = None, key: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.settings, self.key = settings, key
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setAcceptDrops(False)
        self.edit.textChanged.connect(self.pathChanged)
        self.edit.textEdited.connect(self.pathTyped)
        self.edit.returnPressed.connect(lambda: self.pathCommitted.emit(self.path()))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        self._filter = file_filter
        if folder:
            folder_button = QPushButton("Folder…")
            folder_button.clicked.connect(self._choose_folder)
            layout.addWidget(folder_button)
        if file_filter:
            file_button = QPushButton("File…")
            file_button.clicked.connect(self._choose_file)
            layout.addWidget(file_button)

    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str | Path) -> None:
        """Choosing the same path again re-announces it (e.g. to re-scan a folder)."""
        if self.edit.text() == str(path):
            self.pathChanged.emit(str(path))
        else:
            self.edit.setText(str(path))
        self.pathCommitted.emit(self.path())

    def _choose_folder(self) -> None:
        chosen = ask_folder(self, self.settings, self.key, "Choose a folder", self.path())
        if chosen:
            self.set_path(chosen)

    def _choose_file(self) -> None:
        chosen = ask_open_file(self, self.settings, self.key, "Choose a file", self._filter, self.path())
        if chosen:
            self.set_path(chosen)

    def paths_dropped(self, paths: list[str]) -> None:
        self.set_path(paths[0])


def _start(settings: Settings | None, key: str, current: str | Path = "") -> str:
    return settings.start_folder(key, current) if settings is not None and key else str(current or Path.home())


def _remember(settings: Settings | None, key: str, chosen: str) -> str:
    if chosen and settings is not None and key:
        settings.remember_folder(key, chosen)
    return chosen


def ask_folder(parent: QWidget, settings: Settings | None, key: str, title: str, current: str | Path = "") -> str:
    """A folder dialog opening where dialog ``key`` was last used; "" when cancelled."""
    return _remember(settings, key, QFileDialog.getExistingDirectory(parent, title, _start(settings, key, current)))


def ask_open_file(parent: QWidget, settings: Settings | None, key: str, title: str, file_filter: str,
                  current: str | Path = "") -> str:
    chosen, _ = QFileDialog.getOpenFileName(parent, title, _start(settings, key, current), file_filter)
    return _remember(settings, key, chosen)


def ask_open_files(parent: QWidget, settings: Settings | None, key: str, title: str, file_filter: str) -> list[str]:
    chosen, _ = QFileDialog.getOpenFileNames(parent, title, _start(settings, key), file_filter)
    if chosen:
        _remember(settings, key, chosen[0])
    return chosen


def ask_save_file(parent: QWidget, settings: Settings | None, key: str, title: str, file_name: str,
                  file_filter: str) -> str:
    """A save dialog proposing ``file_name`` in the folder last used for ``key``."""
    chosen, _ = QFileDialog.getSaveFileName(parent, title, str(Path(_start(settings, key)) / file_name), file_filter)
    return _remember(settings, key, chosen)


class DropArea(LocalPathDrops, QFrame):
    """A dashed frame that reports dropped local files and folders."""

    pathsDropped = Signal(list)

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setObjectName("dropArea")
        self.setStyleSheet("#dropArea { border: 2px dashed palette(mid); border-radius: 6px; }")
        self.setMinimumHeight(56)
        label = QLabel(text)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(label)

    def paths_dropped(self, paths: list[str]) -> None:
        self.pathsDropped.emit(paths)


def steady_label(text: str = "", lines: int = 2) -> QLabel:
    """A word-wrapped label always ``lines`` lines high: its text can change while a run goes on
    without re-laying out the page (a relayout resizes and redraws every plot on it)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setFixedHeight(lines * label.fontMetrics().lineSpacing() + 4)
    return label


def error_label() -> QLabel:
    """An inline, word-wrapped label for user-facing errors (hidden while empty)."""
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet("color: #b00020;")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.hide()
    return label


def show_error(label: QLabel, message: str) -> None:
    label.setText(message)
    label.setVisible(bool(message))


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def open_folder(parent: QWidget, path: str | Path) -> bool:
    """Show a folder in the desktop's file manager; without one, say where the folder is (the
    path can be selected and copied) instead of doing nothing."""
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
        return True
    box = QMessageBox(QMessageBox.Icon.Information, "No file manager",
                      f"No file manager could be started to show the folder. It is:\n\n{path}", parent=parent)
    box.setObjectName("noFileManager")
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.open()
    return False
