"""Training page: epochs, batch sizes and learning rates per stage, augmentation and model
selection, tile sizes, seed, device, run name and output folder; the remaining settings under
"More settings"."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox, QLabel, QLineEdit, QSpinBox, QVBoxLayout,
)

from app.widgets import PathField, error_label, setting_spin, show_error
from app.wizard.advanced import AdvancedSettings
from app.setting_fields import add_setting_row, explain, help_label, setting_check, spec_text, tooltip_html
from app.wizard.frame import WizardPage

STAGES = ("teacher", "matcher", "student")
STAGE_NAMES = {"teacher": "Teacher (MS)", "matcher": "Matcher", "student": "Student (RGB)"}


class TrainingPage(WizardPage):
    """Epochs, batch sizes and learning rates per stage, tile sizes, seed, device, output folder.

    A stage the run will not train (a reused teacher and matcher, or no teacher at all in the RGB
    baseline) shows why instead of editable fields."""

    def __init__(self, wizard) -> None:
        super().__init__("Training", "How long and where to train.")
        self._wizard = wizard
        self.epochs: dict[str, QSpinBox] = {}
        self.batch: dict[str, QSpinBox] = {}
        self.lr: dict[str, QDoubleSpinBox] = {}
        self.stage_notes: dict[str, QLabel] = {}
        grid = QGridLayout()
        for column, (title, key) in enumerate((("Stage", ""), ("Epochs", "student.epochs"),
                                               ("Batch size", "student.batch_size"), ("Learning rate", "student.lr"))):
            header = QLabel(f"<b>{title}</b>")
            if key:
                header.setToolTip(tooltip_html(*spec_text(key)))
            grid.addWidget(header, 0, column)
        for row, stage in enumerate(STAGES, start=1):
            self.epochs[stage] = setting_spin(f"{stage}.epochs")
            self.batch[stage] = setting_spin(f"{stage}.batch_size")
            self.lr[stage] = setting_spin(f"{stage}.lr", decimals=5, step=0.0001)
            self.stage_notes[stage] = QLabel()
            self.stage_notes[stage].setStyleSheet("color: #8a5a00;")
            grid.addWidget(QLabel(STAGE_NAMES[stage]), row, 0)
            grid.addWidget(self.epochs[stage], row, 1)
            grid.addWidget(self.batch[stage], row, 2)
            grid.addWidget(self.lr[stage], row, 3)
            grid.addWidget(self.stage_notes[stage], row, 4)
        grid.setColumnStretch(4, 1)
        grid_help = help_label("<br>".join(f"<b>{spec_text(key)[0]}:</b> {spec_text(key)[1]}"
                                           for key in ("teacher.epochs", "student.batch_size", "student.lr")))
        recipe_box = self._recipe_box()
        self.ms_tile = setting_spin("data.ms_tile_size", step=16)
        self.rgb_tile = setting_spin("data.rgb_tile_size", step=16)
        self.seed = setting_spin("train.seed")
        self.device_combo = QComboBox()
        self.name_edit = QLineEdit()
        self.output_field = PathField("Folder where the run folder is created", settings=wizard.settings,
                                      key="runs_output")
        self.error_label = error_label()
        form = QFormLayout()
        for key, widget in (("data.ms_tile_size", self.ms_tile), ("data.rgb_tile_size", self.rgb_tile),
                            ("train.seed", self.seed), ("train.device", self.device_combo), ("name", self.name_edit),
                            ("output_dir", self.output_field)):
            add_setting_row(form, key, widget)
        self.advanced = AdvancedSettings()
        advanced_box = QGroupBox("More settings (optimiser, splits, memory, matcher)")
        advanced_box.setCheckable(True)
        advanced_box.setChecked(False)
        advanced_box.toggled.connect(self.advanced.setVisible)
        self.advanced.hide()
        QVBoxLayout(advanced_box).addWidget(self.advanced)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(grid_help)
        layout.addWidget(recipe_box)
        layout.addLayout(form)
        layout.addWidget(advanced_box)
        layout.addWidget(self.error_label)
        layout.addStretch(1)

    def _recipe_box(self) -> QGroupBox:
        """Augmentation (both modalities; colour jitter RGB only) and how the kept epoch is chosen."""
        self.dihedral_check = setting_check("augment.dihedral")
        self.crop_min = setting_spin("augment.crop_min", decimals=2, step=0.05)
        self.colour_jitter = setting_spin("augment.colour_jitter", decimals=2, step=0.05)
        self.precise_bn_check = setting_check("train.precise_bn")
        self.selection_window = setting_spin("train.selection_window")
        box = QGroupBox("Augmentation and model selection")
        layout = QVBoxLayout(box)
        form = QFormLayout()
        layout.addWidget(explain(self.dihedral_check, "augment.dihedral"))
        add_setting_row(form, "augment.crop_min", self.crop_min)
        add_setting_row(form, "augment.colour_jitter", self.colour_jitter)
        layout.addLayout(form)
        layout.addWidget(explain(self.precise_bn_check, "train.precise_bn"))
        selection = QFormLayout()
        add_setting_row(selection, "train.selection_window", self.selection_window)
        layout.addLayout(selection)
        return box

    def initializePage(self) -> None:
        from sembridge_engine.device import list_devices

        config = self._wizard.config
        for stage in STAGES:
            section = getattr(config, stage)
            self.epochs[stage].setValue(section.epochs)
            self.batch[stage].setValue(section.batch_size)
            self.lr[stage].setValue(section.lr)
        reused = bool(config.student.teacher_from)
        in_use = {"teacher": config.uses_teacher, "matcher": config.uses_matcher, "student": True}
        for stage in STAGES:
            note = "" if in_use[stage] else "not used by this run"
            if in_use[stage] and reused and stage != "student":
                note = f"reused from {Path(config.student.teacher_from).name}"
            for widget in (self.epochs[stage], self.batch[stage], self.lr[stage]):
                widget.setEnabled(not note)
            self.stage_notes[stage].setText(note)
        self.ms_tile.setValue(config.data.ms_tile_size)
        self.rgb_tile.setValue(config.data.rgb_tile_size)
        self.seed.setValue(config.train.seed)
        self.dihedral_check.setChecked(config.augment.dihedral)
        self.crop_min.setValue(config.augment.crop_min)
        self.colour_jitter.setValue(config.augment.colour_jitter)
        self.precise_bn_check.setChecked(config.train.precise_bn)
        self.selection_window.setValue(config.train.selection_window)
        self.device_combo.clear()
        for name, description in list_devices():
            self.device_combo.addItem(description, name)
        wanted = config.train.device if config.train.device != "auto" else self._wizard.settings.device
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(wanted)))
        self.name_edit.setText(config.name)
        self.output_field.set_path(config.output_dir or str(self._wizard.settings.output_path))
        self.advanced.load(config)

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
        problem = self.advanced.problem()
        if problem:
            show_error(self.error_label, problem)
            return False
        show_error(self.error_label, "")
        config = self._wizard.config
        for stage in STAGES:
            section = getattr(config, stage)
            section.epochs = self.epochs[stage].value()
            section.batch_size = self.batch[stage].value()
            section.lr = self.lr[stage].value()
        config.data.ms_tile_size = self.ms_tile.value()
        config.data.rgb_tile_size = self.rgb_tile.value()
        config.train.seed = self.seed.value()
        config.augment.dihedral = self.dihedral_check.isChecked()
        config.augment.crop_min = round(self.crop_min.value(), 4)
        config.augment.colour_jitter = round(self.colour_jitter.value(), 4)
        config.train.precise_bn = self.precise_bn_check.isChecked()
        config.train.selection_window = self.selection_window.value()
        device = self.device_combo.currentData() or "auto"
        config.train.device = "cuda" if device.startswith("cuda") else device
        config.name = name
        config.output_dir = output
        self.advanced.store(config)
        return True
