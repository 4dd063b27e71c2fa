"""Distillation page: the KD loss (from the registry, with its own parameters), SemBridge's parts,
the DynM schedule and the matching's guards against hub teachers (CSLS, teacher capacity)."""
from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QSpinBox,
    QVBoxLayout, QWidget,
)

from app.widgets import setting_spin
from app.setting_fields import add_setting_row, explain, explained, setting_check
from app.wizard.frame import WizardPage


class DistillPage(WizardPage):
    """KD loss (from the registry, with its own parameters), SemBridge parts and the DynM schedule."""

    def __init__(self, wizard) -> None:
        from sembridge_engine.config import spec_of

        super().__init__("Distillation", "How the RGB student learns from the MS teacher.")
        self._wizard = wizard
        self.param_editors: dict[str, QWidget] = {}
        self.loss_combo = QComboBox()
        self.loss_description = QLabel()
        self.loss_description.setWordWrap(True)
        self.params_box = QGroupBox("Loss parameters")
        self.params_form = QFormLayout(self.params_box)
        self.pssm_check = setting_check("distill.pssm")
        self.ssm_check = setting_check("distill.ssm")
        self.dynm_check = setting_check("distill.dynm")
        self.ot1_check = setting_check("distill.ot1")
        self.ot2_check = setting_check("distill.ot2")
        self.lambda1 = setting_spin("distill.lambda1", decimals=2, step=0.05)
        self.gamma = setting_spin("distill.gamma", decimals=2, step=0.5)
        self.heads = setting_spin("distill.heads")
        self.e0 = setting_spin("distill.e0")
        self.delta_e = setting_spin("distill.delta_e")
        self.e_mu = setting_spin("distill.e_mu")
        self.planner_width = setting_spin("distill.planner_width", step=32)
        self.probe_size = setting_spin("distill.probe_size", step=16)
        self.schedule_label = QLabel()
        self.schedule_label.setWordWrap(True)
        self.similarity_combo = QComboBox()
        self.similarity_combo.addItems(spec_of("distill.ssm_similarity").allowed())
        self.csls_neighbours = setting_spin("distill.csls_neighbours")
        self.teacher_capacity = setting_spin("distill.teacher_capacity", decimals=2, step=0.5)
        self.ot_scale_combo = QComboBox()
        self.ot_scale_combo.addItems(spec_of("distill.ot_scale").allowed())

        parts = QVBoxLayout()
        for key, check in (("distill.ssm", self.ssm_check), ("distill.dynm", self.dynm_check),
                           ("distill.ot1", self.ot1_check), ("distill.ot2", self.ot2_check)):
            parts.addWidget(explain(check, key))
        parts_box = QGroupBox("SemBridge's parts")
        parts_box.setLayout(parts)
        weights = QFormLayout()
        for key, spin in (("distill.lambda1", self.lambda1), ("distill.ot_scale", self.ot_scale_combo),
                          ("distill.gamma", self.gamma),
                          ("distill.heads", self.heads), ("distill.planner_width", self.planner_width),
                          ("distill.probe_size", self.probe_size)):
            add_setting_row(weights, key, spin)
        schedule = QFormLayout()
        for key, spin in (("distill.e0", self.e0), ("distill.delta_e", self.delta_e), ("distill.e_mu", self.e_mu)):
            add_setting_row(schedule, key, spin)
        dynm_box = QGroupBox("Re-matching schedule (DynM)")
        dynm_layout = QVBoxLayout(dynm_box)
        dynm_layout.addLayout(schedule)
        dynm_layout.addWidget(self.schedule_label)
        hubs_box = QGroupBox("Spreading the teaching over more MS tiles")
        hubs = QFormLayout(hubs_box)
        for key, widget in (("distill.ssm_similarity", self.similarity_combo),
                            ("distill.csls_neighbours", self.csls_neighbours),
                            ("distill.teacher_capacity", self.teacher_capacity)):
            add_setting_row(hubs, key, widget)

        left = QVBoxLayout()
        form = QFormLayout()
        add_setting_row(form, "distill.loss", self.loss_combo)
        left.addLayout(form)
        left.addWidget(self.loss_description)
        left.addWidget(self.params_box)
        left.addWidget(explain(self.pssm_check, "distill.pssm"))
        left.addWidget(hubs_box)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(parts_box)
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
        self.ssm_check.toggled.connect(self.update_enabled)
        self.similarity_combo.currentTextChanged.connect(self.update_enabled)

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
        self.planner_width.setValue(distill.planner_width)
        self.probe_size.setValue(distill.probe_size)
        self.similarity_combo.setCurrentText(distill.ssm_similarity)
        self.csls_neighbours.setValue(distill.csls_neighbours)
        self.teacher_capacity.setValue(distill.teacher_capacity)
        self.ot_scale_combo.setCurrentText(distill.ot_scale)
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
            editor = self._editor_for(default, values[key], key in spec.positive, key in spec.non_negative)
            self.param_editors[key] = editor
            self.params_form.addRow(f"{key}:", explained(editor, key, spec.param_help.get(key, "")))
        if not spec.defaults:
            self.params_form.addRow(QLabel("This loss has no parameters."))
        self.pssm_check.setEnabled(spec.supports_pssm)
        self.pssm_check.setChecked(bool(pssm) and spec.supports_pssm)
        if not spec.supports_pssm:
            self.pssm_check.setToolTip(f"{spec.name} does not support PSSM: it works on logits of its own kind.")
        self.update_enabled()

    def chosen_parts(self):
        """The config as these widgets would set the switches; its rules say what is in use."""
        distill = dataclasses.replace(self._wizard.config.distill, loss=self.loss_combo.currentData() or "none",
                                      ot1=self.ot1_check.isChecked(), ot2=self.ot2_check.isChecked())
        return dataclasses.replace(self._wizard.config, distill=distill)

    def update_enabled(self) -> None:
        """What the chosen switches leave without effect is greyed out (e.g. the plain RGB baseline
        has no teacher, so nothing to match)."""
        config = self.chosen_parts()
        for widget in (self.ssm_check, self.dynm_check, self.lambda1, self.gamma, self.e0, self.delta_e, self.e_mu,
                       self.probe_size, self.teacher_capacity):
            widget.setEnabled(config.uses_teacher)
        matching = config.uses_teacher and self.ssm_check.isChecked()
        self.similarity_combo.setEnabled(matching)
        self.csls_neighbours.setEnabled(matching and self.similarity_combo.currentText() == "csls")
        for widget in (self.heads, self.planner_width):
            widget.setEnabled(config.uses_planner)
        self.ot_scale_combo.setEnabled(config.uses_teacher and (config.distill.ot1 or config.distill.ot2))
        self.update_schedule()

    @staticmethod
    def _editor_for(default: Any, value: Any, positive: bool, non_negative: bool) -> QWidget:
        if isinstance(default, bool):
            editor = QCheckBox()
            editor.setChecked(bool(value))
        elif isinstance(default, int):
            editor = QSpinBox(minimum=1 if positive else 0 if non_negative else -1_000_000, maximum=1_000_000)
            editor.setValue(int(value))
        else:
            low = 1e-4 if positive else 0.0 if non_negative else -1e6
            editor = QDoubleSpinBox(decimals=4, minimum=low, maximum=1e6, singleStep=0.1)
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
        distill.planner_width, distill.probe_size = self.planner_width.value(), self.probe_size.value()
        distill.ssm_similarity = self.similarity_combo.currentText()
        distill.csls_neighbours = self.csls_neighbours.value()
        distill.teacher_capacity = round(self.teacher_capacity.value(), 4)
        distill.ot_scale = self.ot_scale_combo.currentText()
        return True


