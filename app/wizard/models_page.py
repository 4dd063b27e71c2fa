"""Models page: architectures from the backbone registry, pretrained weights per stage; optionally
reuse an earlier teacher/matcher."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QVBoxLayout

from app.widgets import PathField, error_label, show_error
from app.setting_fields import add_setting_row, explain, help_label, setting_check, spec_text, tooltip_html
from app.wizard.frame import WizardPage
from app.wizard.pretrained import PretrainedChoice

STAGES = ("teacher", "matcher", "student")


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
        self.arch_combos = {"teacher": self.teacher_combo, "matcher": self.matcher_combo,
                            "student": self.student_combo}
        self.pretrained = {stage: PretrainedChoice(wizard.settings) for stage in STAGES}
        form = QFormLayout()
        add_setting_row(form, "teacher.arch", self.teacher_combo, "Teacher network (MS)")
        add_setting_row(form, "matcher.arch", self.matcher_combo, "Matcher network")
        add_setting_row(form, "student.arch", self.student_combo, "Student network (RGB)")
        label, help_text = spec_text("student.pretrained")
        pretrained_box = QGroupBox(label)
        pretrained_form = QFormLayout(pretrained_box)
        for stage, title in (("teacher", "Teacher (MS)"), ("matcher", "Matcher"), ("student", "Student (RGB)")):
            self.pretrained[stage].setToolTip(tooltip_html(label, help_text))
            pretrained_form.addRow(f"{title}:", self.pretrained[stage])
            self.arch_combos[stage].currentTextChanged.connect(self.pretrained[stage].set_arch)
        pretrained_form.addRow(help_label(help_text))
        reuse = QFormLayout()
        add_setting_row(reuse, "student.teacher_from", self.reuse_field, "Run folder")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(pretrained_box)
        layout.addWidget(self.reuse_check)
        layout.addLayout(reuse)
        layout.addWidget(explain(self.cache_check, "student.use_teacher_cache"))
        layout.addWidget(self.error_label)
        layout.addStretch(1)
        self.reuse_check.toggled.connect(self.reuse_field.setEnabled)
        self.reuse_check.toggled.connect(self._reuse_toggled)

    def _reuse_toggled(self, reused: bool) -> None:
        """A reused teacher and matcher are not built again: their networks and weights are the earlier run's."""
        for stage in ("teacher", "matcher"):
            self.arch_combos[stage].setDisabled(reused)
            self.pretrained[stage].setDisabled(reused)
            self.pretrained[stage].refresh()

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
        for stage in STAGES:
            self.pretrained[stage].set_arch(self.arch_combos[stage].currentText())
            self.pretrained[stage].set_value(getattr(config, stage).pretrained)
        self._reuse_toggled(self.reuse_check.isChecked())

    def validatePage(self) -> bool:
        config = self._wizard.config
        teacher_from = ""
        if self.reuse_check.isChecked():
            folder = Path(self.reuse_field.path())
            if not (folder / "config.toml").is_file():
                show_error(self.error_label, f"{folder} is not a run folder (no config.toml in it).")
                return False
            teacher_from = str(folder)
        problems = [problem for problem in (self.pretrained[stage].problem() for stage in STAGES) if problem]
        if problems:
            show_error(self.error_label, problems[0])
            return False
        show_error(self.error_label, "")
        config.teacher.arch = self.teacher_combo.currentText()
        config.matcher.arch = self.matcher_combo.currentText()
        config.student.arch = self.student_combo.currentText()
        config.student.teacher_from = teacher_from
        config.student.use_teacher_cache = self.cache_check.isChecked()
        for stage in STAGES:
            if self.pretrained[stage].isEnabled():
                getattr(config, stage).pretrained = self.pretrained[stage].value()
        return True


