"""Data page: where the MS archive and the RGB folder are, which band preset, and what is in them.

Looking at a folder can take long (the engine walks every class folder), so a scan starts only
when the user has stopped typing for TYPING_PAUSE_MS, presses Enter, or chooses/drops a folder;
a newer request cancels the scan in progress, and the engine refuses paths that cannot be an
imagery folder (a file-system root, a folder with no image files two levels down) before walking.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QListWidget, QPushButton, QVBoxLayout,
)

from app.widgets import PathField, display_rgb8, error_label, rgb8_to_qimage, show_error
from app.setting_fields import add_setting_row
from app.wizard.frame import WizardPage
from app.workers import EngineWorker

THUMB_SIZE = 160
TYPING_PAUSE_MS = 700


@dataclass
class DataSummary:
    """What the Data page found: both indexes, a header per modality and two previews."""

    ms_index: Any = None
    rgb_index: Any = None
    ms_header: Any = None
    rgb_header: Any = None
    ms_thumb: QImage | None = None
    rgb_thumb: QImage | None = None
    errors: list[str] = field(default_factory=list)


def inspect_data(ms_path: str, rgb_path: str, preset_name: str, custom_bands: list[str],
                 custom_rgb: list[str], cancel=None) -> DataSummary:
    """Discovery plus one header and thumbnail per modality (runs in a worker thread)."""
    from sembridge_engine.data.bands import get_preset
    from sembridge_engine.data.discovery import discover_ms_archive, discover_rgb_folder
    from sembridge_engine.data.readers import read_header, read_image

    summary = DataSummary()
    for label, path, discover, attr in (("MS archive", ms_path, discover_ms_archive, "ms_index"),
                                        ("RGB folder", rgb_path, discover_rgb_folder, "rgb_index")):
        if not path:
            summary.errors.append(f"Choose the {label}.")
            continue
        try:
            index = discover(path, cancel=cancel)
        except (OSError, ValueError) as error:
            summary.errors.append(f"{label}: {error}")
            continue
        if not index.records:
            summary.errors.append(f"{label}: no images found in {path} "
                                  "(expected one sub-folder per class, or a CSV manifest).")
        setattr(summary, attr, index)
    try:
        preset = get_preset(preset_name, custom_bands, custom_rgb)
        rgb_indices = preset.rgb_indices
    except ValueError as error:
        summary.errors.append(str(error))
        rgb_indices = (0, 1, 2)
    for index, header_attr, thumb_attr, bands in (
        (summary.ms_index, "ms_header", "ms_thumb", rgb_indices),
        (summary.rgb_index, "rgb_header", "rgb_thumb", (0, 1, 2)),
    ):
        if index is None or not index.records:
            continue
        first = index.records[0].path
        try:
            header = read_header(first)
            setattr(summary, header_attr, header)
            usable = tuple(b for b in bands if b < header.band_count) or (0,)
            image = rgb8_to_qimage(display_rgb8(read_image(first), usable))
            setattr(summary, thumb_attr, image.scaled(THUMB_SIZE, THUMB_SIZE, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))
        except ValueError as error:
            summary.errors.append(f"Preview: {error}")
    return summary


def picture_label() -> QLabel:
    label = QLabel("no preview")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setMinimumSize(QSize(THUMB_SIZE, THUMB_SIZE))
    label.setFrameShape(QLabel.Shape.StyledPanel)
    return label


def split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class DataPage(WizardPage):
    """Where the MS archive and the RGB folder are, which band preset, and what is in them."""

    inspected = Signal()

    def __init__(self, wizard) -> None:
        super().__init__("Data", "Choose (or drop) the multispectral archive and the RGB image folder.")
        self._wizard = wizard
        self._worker: EngineWorker | None = None
        self._pending = False
        self.scans_started = 0
        self.summary: DataSummary | None = None

        self.ms_field = PathField("Folder of class folders with GeoTIFF tiles, or a CSV manifest",
                                  file_filter="CSV manifest (*.csv)", settings=wizard.settings, key="ms_archive")
        self.rgb_field = PathField("Folder of class folders with PNG/JPEG/TIFF images",
                                   file_filter="CSV manifest (*.csv)", settings=wizard.settings, key="rgb_images")
        self.preset_combo = QComboBox()
        self.custom_bands = QLineEdit()
        self.custom_bands.setPlaceholderText("band names in file order, comma-separated")
        self.custom_rgb = QLineEdit()
        self.custom_rgb.setPlaceholderText("R, G, B band names")
        form = QFormLayout()
        for key, widget in (("data.ms_path", self.ms_field), ("data.rgb_path", self.rgb_field),
                            ("data.band_preset", self.preset_combo), ("data.custom_bands", self.custom_bands),
                            ("data.custom_rgb", self.custom_rgb)):
            add_setting_row(form, key, widget)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop looking at the folders")
        self.stop_button.hide()
        self.stop_button.clicked.connect(self.stop_scan)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.error_label = error_label()
        self.ms_picture = picture_label()
        self.rgb_picture = picture_label()
        pictures = QGridLayout()
        pictures.addWidget(self.ms_picture, 0, 0)
        pictures.addWidget(self.rgb_picture, 0, 1)
        pictures.addWidget(QLabel("MS tile (pseudo-RGB, 2–98 % stretch)"), 1, 0, Qt.AlignmentFlag.AlignHCenter)
        pictures.addWidget(QLabel("RGB image"), 1, 1, Qt.AlignmentFlag.AlignHCenter)
        self.problems_list = QListWidget()
        self.problems_list.setMinimumHeight(60)

        status = QHBoxLayout()
        status.addWidget(self.status_label, 1)
        status.addWidget(self.stop_button)
        middle = QHBoxLayout()
        middle.addWidget(self.summary_label, 1)
        middle.addLayout(pictures)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(status)
        layout.addWidget(self.error_label)
        layout.addLayout(middle)
        layout.addWidget(QLabel("Problems found (files are skipped, the run goes on):"))
        layout.addWidget(self.problems_list, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.inspect)
        for path_field in (self.ms_field, self.rgb_field):
            path_field.pathTyped.connect(lambda _text: self._schedule(TYPING_PAUSE_MS))
            path_field.pathCommitted.connect(lambda _text: self._schedule(0))
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        for edit in (self.custom_bands, self.custom_rgb):
            edit.textEdited.connect(lambda _text: self._schedule(TYPING_PAUSE_MS))
            edit.returnPressed.connect(lambda: self._schedule(0))

    def initializePage(self) -> None:
        from sembridge_engine.data.bands import BAND_PRESETS

        data = self._wizard.config.data
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        for name, preset in BAND_PRESETS.items():
            self.preset_combo.addItem(f"{name} ({len(preset.band_names)} bands)", name)
        self.preset_combo.addItem("custom (type the band names)", "custom")
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(data.band_preset)))
        self.preset_combo.blockSignals(False)
        self.custom_bands.setText(", ".join(data.custom_bands))
        self.custom_rgb.setText(", ".join(data.custom_rgb))
        self._update_custom_visibility()
        self.ms_field.set_path(data.ms_path)
        self.rgb_field.set_path(data.rgb_path)
        self.inspect()

    def _preset_changed(self) -> None:
        self._update_custom_visibility()
        self._schedule(0)

    def _update_custom_visibility(self) -> None:
        custom = self.preset_combo.currentData() == "custom"
        self.custom_bands.setEnabled(custom)
        self.custom_rgb.setEnabled(custom)

    def _schedule(self, delay_ms: int) -> None:
        """Forget the last result, stop a scan of the old paths, and look again after ``delay_ms``."""
        if self.summary is not None:
            self.summary = None
            self.completeChanged.emit()
        if self._worker is not None:
            self._worker.cancel()
        self._timer.start(delay_ms)

    def inspect(self) -> None:
        """Run discovery in a worker; while one runs, cancel it and start again when it has stopped."""
        self._timer.stop()
        if self._worker is not None:
            self._worker.cancel()
            self._pending = True
            return
        self.summary = None
        self.status_label.setText("Looking at the folders…")
        self.stop_button.show()
        self.completeChanged.emit()
        arguments = (self.ms_field.path(), self.rgb_field.path(), self.preset_combo.currentData() or "",
                     split_names(self.custom_bands.text()), split_names(self.custom_rgb.text()))
        worker = EngineWorker(lambda _callback, cancel: inspect_data(*arguments, cancel=cancel))
        worker.succeeded.connect(self._show_summary)
        worker.failed.connect(self._show_failure)
        worker.finished.connect(self._worker_done)
        self._worker = worker
        self.scans_started += 1
        worker.start()

    def stop_scan(self) -> None:
        self._timer.stop()
        self._pending = False
        if self._worker is not None:
            self._worker.cancel()

    def _worker_done(self) -> None:
        self._worker.deleteLater()
        self._worker = None
        self.stop_button.hide()
        if self._pending:
            self._pending = False
            self.inspect()

    def _superseded(self) -> bool:
        """A newer scan is due: the outcome of the one that just ended is out of date."""
        return self._pending or self._timer.isActive()

    def _show_failure(self, message: str, cancelled: bool) -> None:
        if self._superseded():
            return
        self.status_label.setText("Stopped: type or choose a folder to look again." if cancelled else "")
        if not cancelled:
            show_error(self.error_label, message)
        self.inspected.emit()

    def _show_summary(self, summary: DataSummary) -> None:
        if self._superseded():
            return
        self.status_label.clear()
        show_error(self.error_label, "\n".join(summary.errors))
        self.summary_label.setText(self._summary_html(summary))
        for picture, image in ((self.ms_picture, summary.ms_thumb), (self.rgb_picture, summary.rgb_thumb)):
            if image is None:
                picture.clear()
                picture.setText("no preview")
            else:
                picture.setPixmap(QPixmap.fromImage(image))
        self.problems_list.clear()
        for index in (summary.ms_index, summary.rgb_index):
            if index is not None:
                self.problems_list.addItems([str(problem) for problem in index.problems])
        if not self.problems_list.count() and not summary.errors:
            self.problems_list.addItem("No problems found: every file is usable.")
        if summary.ms_index is not None and summary.rgb_index is not None and not summary.errors:
            self.summary = summary
        self.completeChanged.emit()
        self.inspected.emit()

    @staticmethod
    def _summary_html(summary: DataSummary) -> str:
        rows = []
        for title, index, header in (("Multispectral", summary.ms_index, summary.ms_header),
                                     ("RGB", summary.rgb_index, summary.rgb_header)):
            if index is None:
                rows.append(f"<b>{title}:</b> not readable")
                continue
            counts = index.counts()
            details = f"{len(index.records)} images in {len(index.classes)} classes"
            if header is not None:
                details += f"; {header.band_count} bands, {header.dtype}, {header.width}×{header.height} px"
                details += f"; CRS {header.crs}" if header.crs else "; no CRS"
            if index.multi_label:
                details += "; multi-label"
            per_class = ", ".join(f"{name} {count}" for name, count in counts.items())
            rows.append(f"<b>{title}:</b> {details}<br><small>{per_class}</small>")
        return "<br>".join(rows)

    def isComplete(self) -> bool:
        return self.summary is not None

    def incomplete_reason(self) -> str:
        if self._worker is not None or self._timer.isActive():
            return "Looking at the folders…"
        return "Choose an MS archive and an RGB folder that can be read (see the messages above)."

    def validatePage(self) -> bool:
        if self.summary is None:
            return False
        data = self._wizard.config.data
        data.ms_path = self.ms_field.path()
        data.rgb_path = self.rgb_field.path()
        data.band_preset = self.preset_combo.currentData()
        data.custom_bands = split_names(self.custom_bands.text()) if data.band_preset == "custom" else []
        data.custom_rgb = split_names(self.custom_rgb.text()) if data.band_preset == "custom" else []
        if self.summary.ms_header is not None:
            from sembridge_engine.data.bands import get_preset

            expected = len(get_preset(data.band_preset, data.custom_bands, data.custom_rgb).band_names)
            if expected != self.summary.ms_header.band_count:
                show_error(self.error_label, f"The band preset {data.band_preset!r} has {expected} bands but the MS "
                                             f"tiles have {self.summary.ms_header.band_count}. Pick another preset.")
                return False
        self._wizard.summary = self.summary
        return True
