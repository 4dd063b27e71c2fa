"""Distillation page: the KD loss (from the registry, with its own parameters), SemBridge's parts
and the DynM schedule."""
from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QSpinBox,
    QVBoxLayout, QWidget,
)

from app.widgets import setting_spin
from app.wizard.frame import WizardPage


class DistillPage(WizardPage):
    """KD loss (from the registry, with its own parameters), SemBridge parts and the DynM schedule."""

    def __init__(self, wizard) -> None:
        super().__init__("Distillation", "How the RGB student learns from the MS teacher.")
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


