"""The training wizard: Data -> Classes -> Models -> Distillation -> Training -> Review.

Each page edits one part of a ``config.RunConfig`` and validates it before Next; the Review page
shows the resulting TOML, saves it with ``config.save_config`` and launches the run. Everything
slow (file discovery, reading thumbnails) runs in a worker thread.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout,
    QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget,
    QPlainTextEdit, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget, QWizard,
    QWizardPage,
)

from app.settings import Settings
from app.widgets import (
    PathField, display_rgb8, error_label, human_bytes, human_seconds, rgb8_to_qimage, setting_spin, show_error,
)
from app.workers import EngineWorker, plain_worker

THUMB_SIZE = 160
UNMAPPED = "(same name)"


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
                 custom_rgb: list[str]) -> DataSummary:
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
            index = discover(path)
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


def _picture_label() -> QLabel:
    label = QLabel("no preview")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setMinimumSize(QSize(THUMB_SIZE, THUMB_SIZE))
    label.setFrameShape(QLabel.Shape.StyledPanel)
    return label


class DataPage(QWizardPage):
    """Where the MS archive and the RGB folder are, which band preset, and what is in them."""

    inspected = Signal()

    def __init__(self, wizard: "TrainingWizard") -> None:
        super().__init__()
        self.setTitle("Data")
        self.setSubTitle("Choose (or drop) the multispectral archive and the RGB image folder.")
        self._wizard = wizard
        self._worker: EngineWorker | None = None
        self._pending = False
        self.summary: DataSummary | None = None

        self.ms_field = PathField("Folder of class folders with GeoTIFF tiles, or a CSV manifest",
                                  file_filter="CSV manifest (*.csv)")
        self.rgb_field = PathField("Folder of class folders with PNG/JPEG/TIFF images",
                                   file_filter="CSV manifest (*.csv)")
        self.preset_combo = QComboBox()
        self.custom_bands = QLineEdit()
        self.custom_bands.setPlaceholderText("band names in file order, comma-separated")
        self.custom_rgb = QLineEdit()
        self.custom_rgb.setPlaceholderText("R, G, B band names")
        form = QFormLayout()
        form.addRow("MS archive:", self.ms_field)
        form.addRow("RGB folder:", self.rgb_field)
        form.addRow("Band preset:", self.preset_combo)
        form.addRow("Custom bands:", self.custom_bands)
        form.addRow("Custom R,G,B:", self.custom_rgb)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.error_label = error_label()
        self.ms_picture = _picture_label()
        self.rgb_picture = _picture_label()
        pictures = QGridLayout()
        pictures.addWidget(self.ms_picture, 0, 0)
        pictures.addWidget(self.rgb_picture, 0, 1)
        pictures.addWidget(QLabel("MS tile (pseudo-RGB, 2–98 % stretch)"), 1, 0, Qt.AlignmentFlag.AlignHCenter)
        pictures.addWidget(QLabel("RGB image"), 1, 1, Qt.AlignmentFlag.AlignHCenter)
        self.problems_list = QListWidget()
        self.problems_list.setMinimumHeight(60)

        middle = QHBoxLayout()
        middle.addWidget(self.summary_label, 1)
        middle.addLayout(pictures)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addLayout(middle)
        layout.addWidget(QLabel("Problems found (files are skipped, the run goes on):"))
        layout.addWidget(self.problems_list, 1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.inspect)
        self.ms_field.pathChanged.connect(self._schedule)
        self.rgb_field.pathChanged.connect(self._schedule)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        self.custom_bands.editingFinished.connect(self._schedule)
        self.custom_rgb.editingFinished.connect(self._schedule)

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
        self._schedule()

    def _update_custom_visibility(self) -> None:
        custom = self.preset_combo.currentData() == "custom"
        self.custom_bands.setEnabled(custom)
        self.custom_rgb.setEnabled(custom)

    def _schedule(self) -> None:
        self.summary = None
        self.completeChanged.emit()
        self._debounce.start()

    @staticmethod
    def _split(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    def inspect(self) -> None:
        """Run discovery in a worker; a newer request waits for the running one to end."""
        self._debounce.stop()
        if self._worker is not None:
            self._pending = True
            return
        self.summary = None
        self.status_label.setText("Looking at the folders…")
        self.completeChanged.emit()
        worker = plain_worker(inspect_data, self.ms_field.path(), self.rgb_field.path(),
                              self.preset_combo.currentData() or "", self._split(self.custom_bands.text()),
                              self._split(self.custom_rgb.text()))
        worker.succeeded.connect(self._show_summary)
        worker.failed.connect(lambda message, _cancelled: self._show_failure(message))
        worker.finished.connect(self._worker_done)
        self._worker = worker
        worker.start()

    def _worker_done(self) -> None:
        self._worker.deleteLater()
        self._worker = None
        if self._pending:
            self._pending = False
            self.inspect()

    def _show_failure(self, message: str) -> None:
        self.status_label.clear()
        show_error(self.error_label, message)
        self.inspected.emit()

    def _show_summary(self, summary: DataSummary) -> None:
        if self._pending:
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

    def validatePage(self) -> bool:
        if self.summary is None:
            return False
        data = self._wizard.config.data
        data.ms_path = self.ms_field.path()
        data.rgb_path = self.rgb_field.path()
        data.band_preset = self.preset_combo.currentData()
        data.custom_bands = self._split(self.custom_bands.text()) if data.band_preset == "custom" else []
        data.custom_rgb = self._split(self.custom_rgb.text()) if data.band_preset == "custom" else []
        if self.summary.ms_header is not None:
            from sembridge_engine.data.bands import get_preset

            expected = len(get_preset(data.band_preset, data.custom_bands, data.custom_rgb).band_names)
            if expected != self.summary.ms_header.band_count:
                show_error(self.error_label, f"The band preset {data.band_preset!r} has {expected} bands but the MS "
                                             f"tiles have {self.summary.ms_header.band_count}. Pick another preset.")
                return False
        self._wizard.summary = self.summary
        return True


class ClassesPage(QWizardPage):
    """Which classes the student learns, and how RGB folder names map to MS class names."""

    COLUMNS = ("Use", "Class (MS name)", "MS tiles", "RGB images", "Note")

    def __init__(self, wizard: "TrainingWizard") -> None:
        super().__init__()
        self.setTitle("Classes")
        self.setSubTitle("Tick the classes to learn. Rename RGB folders onto MS classes where the names differ.")
        self._wizard = wizard
        self.alignment = None
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.mapping_table = QTableWidget(0, 2)
        self.mapping_table.setHorizontalHeaderLabels(("RGB folder", "maps to MS class"))
        self.mapping_table.verticalHeader().hide()
        self.mapping_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #8a5a00;")
        self.error_label = error_label()
        mapping_box = QGroupBox("Name mapping (RGB name → MS name)")
        QVBoxLayout(mapping_box).addWidget(self.mapping_table)
        tables = QHBoxLayout()
        tables.addWidget(self.table, 3)
        tables.addWidget(mapping_box, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(tables, 1)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.error_label)
        self.table.itemChanged.connect(lambda _item: self.completeChanged.emit())

    def initializePage(self) -> None:
        summary = self._wizard.summary
        mapping = dict(self._wizard.config.data.class_mapping)
        self.mapping_table.blockSignals(True)
        self.mapping_table.setRowCount(len(summary.rgb_index.classes))
        for row, name in enumerate(summary.rgb_index.classes):
            self.mapping_table.setItem(row, 0, QTableWidgetItem(name))
            combo = QComboBox()
            combo.addItem(UNMAPPED, "")
            for ms_name in summary.ms_index.classes:
                combo.addItem(ms_name, ms_name)
            combo.setCurrentIndex(max(0, combo.findData(mapping.get(name, ""))))
            combo.currentIndexChanged.connect(self.refresh)
            self.mapping_table.setCellWidget(row, 1, combo)
        self.mapping_table.blockSignals(False)
        self.refresh(selected=set(self._wizard.config.data.classes))

    def mapping(self) -> dict[str, str]:
        result = {}
        for row in range(self.mapping_table.rowCount()):
            target = self.mapping_table.cellWidget(row, 1).currentData()
            source = self.mapping_table.item(row, 0).text()
            if target and target != source:
                result[source] = target
        return result

    def refresh(self, *_args, selected: set[str] | None = None) -> None:
        """Re-align with the current mapping and rebuild the class table."""
        from sembridge_engine.data.discovery import align_classes

        summary = self._wizard.summary
        if selected is None:
            selected = set(self.checked_classes())
        self.alignment = align_classes(summary.ms_index, summary.rgb_index, self.mapping())
        ms_counts = summary.ms_index.counts()
        rgb_counts: dict[str, int] = {}
        for rgb_name, count in summary.rgb_index.counts().items():
            target = self.alignment.rgb_to_ms.get(rgb_name, rgb_name)
            rgb_counts[target] = rgb_counts.get(target, 0) + count
        names = sorted(set(ms_counts) | set(rgb_counts))
        shared = set(self.alignment.shared)
        self.table.blockSignals(True)
        self.table.setRowCount(len(names))
        for row, name in enumerate(names):
            use = QTableWidgetItem()
            if name in shared:
                use.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
                use.setCheckState(Qt.CheckState.Checked if (not selected or name in selected) else Qt.CheckState.Unchecked)
                note = ""
            else:
                use.setFlags(Qt.ItemFlag.NoItemFlags)
                note = "only MS tiles: not learnable" if name in ms_counts else "only RGB images: map it or it is ignored"
            self.table.setItem(row, 0, use)
            self.table.setItem(row, 1, QTableWidgetItem(name))
            for column, count in ((2, ms_counts.get(name, 0)), (3, rgb_counts.get(name, 0))):
                item = QTableWidgetItem(str(count))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
            note_item = QTableWidgetItem(note)
            if note:
                note_item.setForeground(Qt.GlobalColor.darkYellow)
            self.table.setItem(row, 4, note_item)
        self.table.blockSignals(False)
        warnings = [str(problem) for problem in self.alignment.problems]
        self.warning_label.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.warning_label.setVisible(bool(warnings))
        self.completeChanged.emit()

    def checked_classes(self) -> list[str]:
        names = []
        for row in range(self.table.rowCount()):
            use = self.table.item(row, 0)
            if use is not None and use.checkState() == Qt.CheckState.Checked:
                names.append(self.table.item(row, 1).text())
        return names

    def set_checked(self, names: set[str]) -> None:
        for row in range(self.table.rowCount()):
            use = self.table.item(row, 0)
            if use.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                checked = self.table.item(row, 1).text() in names
                use.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def isComplete(self) -> bool:
        return len(self.checked_classes()) >= 2

    def validatePage(self) -> bool:
        checked = self.checked_classes()
        if len(checked) < 2:
            show_error(self.error_label, "Tick at least two classes shared by both modalities.")
            return False
        data = self._wizard.config.data
        data.classes = [] if set(checked) == set(self.alignment.shared) else checked
        data.class_mapping = self.mapping()
        self._wizard.chosen_classes = checked
        return True


class ModelsPage(QWizardPage):
    """Architectures from the backbone registry; optionally reuse an earlier teacher/matcher."""

    def __init__(self, wizard: "TrainingWizard") -> None:
        super().__init__()
        self.setTitle("Models")
        self.setSubTitle("Pick the network for each stage, or reuse the teacher and matcher of an earlier run.")
        self._wizard = wizard
        self.teacher_combo = QComboBox()
        self.matcher_combo = QComboBox()
        self.student_combo = QComboBox()
        self.reuse_check = QCheckBox("Reuse teacher and matcher from an earlier run")
        self.reuse_field = PathField("Run folder (contains config.toml and checkpoints/)")
        self.error_label = error_label()
        form = QFormLayout()
        form.addRow("Teacher (MS):", self.teacher_combo)
        form.addRow("Matcher:", self.matcher_combo)
        form.addRow("Student (RGB):", self.student_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.reuse_check)
        layout.addWidget(self.reuse_field)
        layout.addWidget(self.error_label)
        layout.addStretch(1)
        self.reuse_check.toggled.connect(self.reuse_field.setEnabled)
        self.reuse_check.toggled.connect(lambda _on: self.teacher_combo.setDisabled(_on))
        self.reuse_check.toggled.connect(lambda _on: self.matcher_combo.setDisabled(_on))

    def initializePage(self) -> None:
        from sembridge_engine.models.backbones import available_backbones

        config = self._wizard.config
        for combo, current in ((self.teacher_combo, config.teacher.arch), (self.matcher_combo, config.matcher.arch),
                               (self.student_combo, config.student.arch)):
            combo.clear()
            combo.addItems(available_backbones())
            combo.setCurrentText(current)
        self.reuse_check.setChecked(bool(config.student.teacher_from))
        self.reuse_field.set_path(config.student.teacher_from)
        self.reuse_field.setEnabled(self.reuse_check.isChecked())

    def validatePage(self) -> bool:
        config = self._wizard.config
        teacher_from = ""
        if self.reuse_check.isChecked():
            folder = Path(self.reuse_field.path())
            if not (folder / "config.toml").is_file():
                show_error(self.error_label, f"{folder} is not a run folder (no config.toml in it).")
                return False
            teacher_from = str(folder)
        show_error(self.error_label, "")
        config.teacher.arch = self.teacher_combo.currentText()
        config.matcher.arch = self.matcher_combo.currentText()
        config.student.arch = self.student_combo.currentText()
        config.student.teacher_from = teacher_from
        return True


class DistillPage(QWizardPage):
    """KD loss (from the registry, with its own parameters), SemBridge parts and the DynM schedule."""

    def __init__(self, wizard: "TrainingWizard") -> None:
        super().__init__()
        self.setTitle("Distillation")
        self.setSubTitle("How the RGB student learns from the MS teacher.")
        self._wizard = wizard
        self.param_editors: dict[str, QWidget] = {}
        self.loss_combo = QComboBox()
        self.loss_description = QLabel()
        self.loss_description.setWordWrap(True)
        self.params_box = QGroupBox("Loss parameters")
        self.params_form = QFormLayout(self.params_box)
        self.pssm_check = QCheckBox("PSSM (probabilistic soft sample matching)")
        self.ssm_check = QCheckBox("SSM: semantic sample matching")
        self.dynm_check = QCheckBox("DynM: dynamic re-matching")
        self.ot1_check = QCheckBox("L_ot1 (CORAL alignment)")
        self.ot2_check = QCheckBox("L_ot2 (planner transport)")
        self.lambda1 = setting_spin("distill.lambda1", decimals=2, step=0.05)
        self.gamma = setting_spin("distill.gamma", decimals=2, step=0.5)
        self.heads = setting_spin("distill.heads")
        self.e0 = setting_spin("distill.e0")
        self.delta_e = setting_spin("distill.delta_e")
        self.e_mu = setting_spin("distill.e_mu")
        self.schedule_label = QLabel()
        self.schedule_label.setWordWrap(True)

        toggles = QGridLayout()
        toggles.addWidget(self.ssm_check, 0, 0)
        toggles.addWidget(self.dynm_check, 0, 1)
        toggles.addWidget(self.ot1_check, 1, 0)
        toggles.addWidget(self.ot2_check, 1, 1)
        toggles.addWidget(self.pssm_check, 2, 0, 1, 2)
        weights = QFormLayout()
        weights.addRow("λ1 (KD weight; L_ot1 + L_ot2 get 1 − λ1):", self.lambda1)
        weights.addRow("γ (DynM KL temperature):", self.gamma)
        weights.addRow("Planner heads H:", self.heads)
        schedule = QHBoxLayout()
        for text, spin in (("e0", self.e0), ("Δe", self.delta_e), ("eμ", self.e_mu)):
            schedule.addWidget(QLabel(text))
            schedule.addWidget(spin)
        schedule.addStretch(1)
        dynm_box = QGroupBox("DynM schedule")
        dynm_layout = QVBoxLayout(dynm_box)
        dynm_layout.addLayout(schedule)
        dynm_layout.addWidget(self.schedule_label)

        left = QVBoxLayout()
        form = QFormLayout()
        form.addRow("KD loss:", self.loss_combo)
        left.addLayout(form)
        left.addWidget(self.loss_description)
        left.addWidget(self.params_box)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addLayout(toggles)
        right.addLayout(weights)
        right.addWidget(dynm_box)
        right.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addLayout(right, 1)

        self.loss_combo.currentIndexChanged.connect(self._loss_changed)
        for spin in (self.e0, self.delta_e, self.e_mu):
            spin.valueChanged.connect(self.update_schedule)
        self.dynm_check.toggled.connect(self.update_schedule)
        self.ot1_check.toggled.connect(self.update_enabled)
        self.ot2_check.toggled.connect(self.update_enabled)

    def initializePage(self) -> None:
        from sembridge_engine.distill.losses import KD_LOSSES

        distill = self._wizard.config.distill
        self.loss_combo.blockSignals(True)
        self.loss_combo.clear()
        for name in KD_LOSSES:
            self.loss_combo.addItem(name, name)
        self.loss_combo.setCurrentIndex(max(0, self.loss_combo.findData(distill.loss)))
        self.loss_combo.blockSignals(False)
        for check, value in ((self.ssm_check, distill.ssm), (self.dynm_check, distill.dynm),
                             (self.ot1_check, distill.ot1), (self.ot2_check, distill.ot2)):
            check.setChecked(value)
        self.lambda1.setValue(distill.lambda1)
        self.gamma.setValue(distill.gamma)
        self.heads.setValue(distill.heads)
        self.e0.setValue(distill.e0)
        self.delta_e.setValue(distill.delta_e)
        self.e_mu.setValue(distill.e_mu)
        self._loss_changed(params=distill.params, pssm=distill.pssm)

    def set_loss(self, name: str) -> None:
        self.loss_combo.setCurrentIndex(self.loss_combo.findData(name))

    def _loss_changed(self, *_args, params: dict | None = None, pssm: bool | None = None) -> None:
        from sembridge_engine.distill.losses import KD_LOSSES

        spec = KD_LOSSES[self.loss_combo.currentData()]
        self.loss_description.setText(spec.description)
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self.param_editors = {}
        values = {**spec.defaults, **(params or {})}
        for key, default in spec.defaults.items():
            editor = self._editor_for(default, values[key])
            self.param_editors[key] = editor
            self.params_form.addRow(f"{key}:", editor)
        if not spec.defaults:
            self.params_form.addRow(QLabel("This loss has no parameters."))
        self.pssm_check.setEnabled(spec.supports_pssm)
        self.pssm_check.setChecked(bool(pssm) and spec.supports_pssm)
        self.pssm_check.setToolTip("" if spec.supports_pssm else f"{spec.name} does not support PSSM")
        self.update_enabled()

    def update_enabled(self) -> None:
        """Loss ``none`` without OT terms is the plain RGB baseline: no teacher, so no matching."""
        uses_teacher = self.loss_combo.currentData() != "none" or self.ot1_check.isChecked() or self.ot2_check.isChecked()
        for widget in (self.ssm_check, self.dynm_check, self.lambda1, self.gamma, self.e0, self.delta_e, self.e_mu):
            widget.setEnabled(uses_teacher)
        self.heads.setEnabled(self.ot1_check.isChecked() or self.ot2_check.isChecked())
        self.update_schedule()

    @staticmethod
    def _editor_for(default: Any, value: Any) -> QWidget:
        if isinstance(default, bool):
            editor = QCheckBox()
            editor.setChecked(bool(value))
        elif isinstance(default, int):
            editor = QSpinBox(minimum=-1_000_000, maximum=1_000_000)
            editor.setValue(int(value))
        else:
            editor = QDoubleSpinBox(decimals=4, minimum=-1e6, maximum=1e6, singleStep=0.1)
            editor.setValue(float(value))
        return editor

    def params(self) -> dict[str, Any]:
        values = {}
        for key, editor in self.param_editors.items():
            values[key] = editor.isChecked() if isinstance(editor, QCheckBox) else editor.value()
        return values

    def update_schedule(self) -> None:
        from sembridge_engine.distill.matching import dynm_epochs

        total = self._wizard.config.student.epochs
        if not self.dynm_check.isChecked() or not self.dynm_check.isEnabled():
            self.schedule_label.setText("DynM is off: the matches from SSM stay fixed.")
            return
        epochs = dynm_epochs(self.e0.value(), self.delta_e.value(), self.e_mu.value(), total)
        shown = ", ".join(str(e) for e in epochs) if epochs else "none"
        self.schedule_label.setText(f"Re-matching at student epochs ({total} in total): {shown}")

    def validatePage(self) -> bool:
        distill = self._wizard.config.distill
        distill.loss = self.loss_combo.currentData()
        distill.params = self.params()
        distill.pssm = self.pssm_check.isEnabled() and self.pssm_check.isChecked()
        distill.ssm = self.ssm_check.isChecked()
        distill.dynm = self.dynm_check.isChecked()
        distill.ot1 = self.ot1_check.isChecked()
        distill.ot2 = self.ot2_check.isChecked()
        distill.lambda1 = self.lambda1.value()
        distill.gamma = self.gamma.value()
        distill.heads = self.heads.value()
        distill.e0, distill.delta_e, distill.e_mu = self.e0.value(), self.delta_e.value(), self.e_mu.value()
        return True


class TrainingPage(QWizardPage):
    """Epochs, batch sizes and learning rates per stage, tile sizes, seed, device, output folder."""

    STAGES = ("teacher", "matcher", "student")

    def __init__(self, wizard: "TrainingWizard") -> None:
        super().__init__()
        self.setTitle("Training")
        self.setSubTitle("How long and where to train.")
        self._wizard = wizard
        self.epochs: dict[str, QSpinBox] = {}
        self.batch: dict[str, QSpinBox] = {}
        self.lr: dict[str, QDoubleSpinBox] = {}
        grid = QGridLayout()
        for column, title in enumerate(("Stage", "Epochs", "Batch size", "Learning rate")):
            grid.addWidget(QLabel(f"<b>{title}</b>"), 0, column)
        for row, stage in enumerate(self.STAGES, start=1):
            self.epochs[stage] = setting_spin(f"{stage}.epochs")
            self.batch[stage] = setting_spin(f"{stage}.batch_size")
            self.lr[stage] = setting_spin(f"{stage}.lr", decimals=5, step=0.0001)
            grid.addWidget(QLabel(stage.capitalize()), row, 0)
            grid.addWidget(self.epochs[stage], row, 1)
            grid.addWidget(self.batch[stage], row, 2)
            grid.addWidget(self.lr[stage], row, 3)
        self.ms_tile = setting_spin("data.ms_tile_size", step=16)
        self.rgb_tile = setting_spin("data.rgb_tile_size", step=16)
        self.seed = setting_spin("train.seed")
        self.device_combo = QComboBox()
        self.name_edit = QLineEdit()
        self.output_field = PathField("Folder where the run folder is created")
        self.error_label = error_label()
        form = QFormLayout()
        tiles = QHBoxLayout()
        tiles.addWidget(QLabel("MS"))
        tiles.addWidget(self.ms_tile)
        tiles.addWidget(QLabel("RGB"))
        tiles.addWidget(self.rgb_tile)
        tiles.addStretch(1)
        form.addRow("Tile size (px):", tiles)
        form.addRow("Seed:", self.seed)
        form.addRow("Device:", self.device_combo)
        form.addRow("Run name:", self.name_edit)
        form.addRow("Output folder:", self.output_field)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addStretch(1)

    def initializePage(self) -> None:
        from sembridge_engine.device import list_devices

        config = self._wizard.config
        for stage in self.STAGES:
            section = getattr(config, stage)
            self.epochs[stage].setValue(section.epochs)
            self.batch[stage].setValue(section.batch_size)
            self.lr[stage].setValue(section.lr)
        self.ms_tile.setValue(config.data.ms_tile_size)
        self.rgb_tile.setValue(config.data.rgb_tile_size)
        self.seed.setValue(config.train.seed)
        self.device_combo.clear()
        for name, description in list_devices():
            self.device_combo.addItem(description, name)
        wanted = config.train.device if config.train.device != "auto" else self._wizard.settings.device
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(wanted)))
        self.name_edit.setText(config.name)
        self.output_field.set_path(config.output_dir or str(self._wizard.settings.output_path))

    def validatePage(self) -> bool:
        output = self.output_field.path()
        name = self.name_edit.text().strip()
        if not name or any(ch in name for ch in '/\\:'):
            show_error(self.error_label, "Give the run a name without slashes or colons.")
            return False
        if not output:
            show_error(self.error_label, "Choose an output folder.")
            return False
        try:
            Path(output).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            show_error(self.error_label, f"Cannot create the output folder {output}: {error.strerror or error}")
            return False
        show_error(self.error_label, "")
        config = self._wizard.config
        for stage in self.STAGES:
            section = getattr(config, stage)
            section.epochs = self.epochs[stage].value()
            section.batch_size = self.batch[stage].value()
            section.lr = self.lr[stage].value()
        config.data.ms_tile_size = self.ms_tile.value()
        config.data.rgb_tile_size = self.rgb_tile.value()
        config.train.seed = self.seed.value()
        device = self.device_combo.currentData() or "auto"
        config.train.device = "cuda" if device.startswith("cuda") else device
        config.name = name
        config.output_dir = output
        return True


class ReviewPage(QWizardPage):
    """The full config as TOML, memory and time estimates; Save config… or Launch."""

    def __init__(self, wizard: "TrainingWizard") -> None:
        super().__init__()
        self.setTitle("Review")
        self.setSubTitle("Check the configuration, save it for the command line, or launch the run.")
        self._wizard = wizard
        self.toml_view = QPlainTextEdit()
        self.toml_view.setReadOnly(True)
        self.toml_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.toml_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        self.error_label = error_label()
        layout = QVBoxLayout(self)
        layout.addWidget(self.toml_view, 1)
        layout.addWidget(self.estimate_label)
        layout.addWidget(self.error_label)
        self.valid = False

    def initializePage(self) -> None:
        from sembridge_engine.config import ConfigError, config_to_toml, validate

        config = self._wizard.config
        try:
            validate(config)
            self.valid = True
            show_error(self.error_label, "")
        except ConfigError as error:
            self.valid = False
            show_error(self.error_label, f"The configuration is not valid: {error}")
        self.toml_view.setPlainText(config_to_toml(config))
        self.estimate_label.setText(self.estimate_text())
        self.completeChanged.emit()

    def estimate_text(self) -> str:
        from sembridge_engine.training.estimate import estimate_run

        config = self._wizard.config
        summary = self._wizard.summary
        chosen = set(self._wizard.chosen_classes)
        ms_counts = summary.ms_index.counts()
        n_ms = sum(count for name, count in ms_counts.items() if name in chosen)
        rgb_to_ms = self._wizard.page_classes.alignment.rgb_to_ms
        n_rgb = sum(count for name, count in summary.rgb_index.counts().items() if rgb_to_ms.get(name, name) in chosen)
        channels = summary.ms_header.band_count if summary.ms_header is not None else 13
        estimate = estimate_run(config, n_ms, n_rgb, channels)
        return (f"{n_ms} MS tiles and {n_rgb} RGB images in {len(chosen)} classes. "
                f"Estimated memory for the tile caches: {human_bytes(estimate.memory_bytes)}. "
                f"Rough training time on a 2-core CPU: {human_seconds(estimate.seconds)} (a GPU is much faster).")

    def isComplete(self) -> bool:
        return self.valid


class TrainingWizard(QWizard):
    """Builds a RunConfig page by page; ``launchRequested(config)`` starts the run."""

    launchRequested = Signal(object)
    configSaved = Signal(str)

    def __init__(self, config, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New training run")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.WizardOption.HaveCustomButton1, True)
        self.setButtonText(QWizard.WizardButton.CustomButton1, "Save config…")
        self.setButtonText(QWizard.WizardButton.FinishButton, "Launch")
        self.settings = settings
        self.base_config = config
        self.config = copy.deepcopy(config)
        self.summary: DataSummary | None = None
        self.chosen_classes: list[str] = []
        self.page_data = DataPage(self)
        self.page_classes = ClassesPage(self)
        self.page_models = ModelsPage(self)
        self.page_distill = DistillPage(self)
        self.page_training = TrainingPage(self)
        self.page_review = ReviewPage(self)
        for page in (self.page_data, self.page_classes, self.page_models, self.page_distill,
                     self.page_training, self.page_review):
            self.addPage(page)
        self.customButtonClicked.connect(self._custom_button)
        self.currentIdChanged.connect(self._page_changed)
        self.setMinimumSize(720, 520)

    def set_config(self, config) -> None:
        """Start over from another project's configuration."""
        self.base_config = config
        self.config = copy.deepcopy(config)
        self.restart()

    def restart(self) -> None:
        self.config = copy.deepcopy(self.base_config)
        super().restart()

    def _page_changed(self, _page_id: int) -> None:
        self.button(QWizard.WizardButton.CustomButton1).setVisible(self.currentPage() is self.page_review)

    def _custom_button(self, which: int) -> None:
        if which == QWizard.WizardButton.CustomButton1.value:
            default = str(Path(self.config.output_dir or self.settings.output_path) / f"{self.config.name}.toml")
            path, _ = QFileDialog.getSaveFileName(self, "Save run configuration", default, "TOML (*.toml)")
            if path:
                self.save_config(path)

    def save_config(self, path: str | Path) -> Path:
        from sembridge_engine.config import save_config

        path = Path(path)
        save_config(self.config, path)
        self.configSaved.emit(str(path))
        return path

    def accept(self) -> None:
        """Launch: hand a copy of the config over and start again (the wizard lives in a page)."""
        if not self.page_review.valid:
            return
        launched = copy.deepcopy(self.config)
        self.launchRequested.emit(launched)
        self.restart()
