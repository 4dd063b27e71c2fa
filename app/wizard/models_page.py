"""Models page: architectures from the backbone registry; optionally reuse an earlier teacher/matcher."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QVBoxLayout

from app.widgets import PathField, error_label, show_error
from app.setting_fields import add_setting_row, explain, setting_check, spec_text, tooltip_html
from app.wizard.frame import WizardPage


class ModelsPage(WizardPage):
    """Architectures from the backbone registry; optionally reuse an earlier teacher/matcher."""

    def __init__(self, wizard) -> None:
        super().__init__("Models", "Pick the network for each stage, or reuse the teacher and matcher of an earlier run.")
        self._wizard = wizard
        self.teacher_combo = QComboBox()
        self.matcher_combo = QComboBox()
        self.student_combo = QComboBox()
        self.reuse_check = QCheckBox("Reuse the teacher and matcher of an earlier run")
        self.reuse_check.setToolTip(tooltip_html(*spec_text("student.teacher_from")))
        self.reuse_field = PathField("Run folder (contains config.toml and checkpoints/)", settings=wizard.settings,
                                     key="runs")
        self.cache_check = setting_check("student.use_teacher_cache")
        self.error_label = error_label()
        form = QFormLayout()
        add_setting_row(form, "teacher.arch", self.teacher_combo, "Teacher network (MS)")
        add_setting_row(form, "matcher.arch", self.matcher_combo, "Matcher network")
        add_setting_row(form, "student.arch", self.student_combo, "Student network (RGB)")
        reuse = QFormLayout()
        add_setting_row(reuse, "student.teacher_from", self.reuse_field, "Run folder")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.reuse_check)
        layout.addLayout(reuse)
        layout.addWidget(explain(self.cache_check, "student.use_teacher_cache"))
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
        self.cache_check.setChecked(config.student.use_teacher_cache)

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
        config.student.use_teacher_cache = self.cache_check.isChecked()
        return True


