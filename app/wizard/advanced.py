"""The settings most runs leave at their defaults (optimiser, splits, memory, the matcher's own,
synchronised BatchNorm under torchrun),
editable in the wizard so that every config field is, each explained by its SettingSpec."""
from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QWidget

from app.widgets import setting_spin
from app.setting_fields import add_setting_row, explain, setting_check

# (config key, decimals, step) of the numeric fields, in the order shown.
NUMBERS = (("train.weight_decay", 5, 0.0001), ("train.label_smoothing", 2, 0.05), ("train.workers", 0, 1), ("data.ms_val_fraction", 2, 0.05),
           ("data.memory_budget_gb", 1, 1.0), ("data.rgb_gsd", 3, 0.1), ("matcher.embed_dim", 0, 32),
           ("matcher.temperature", 3, 0.01))
CHOICES = ("train.optimizer", "train.scheduler")
SWITCHES = ("train.sync_batchnorm",)
SPLIT_KEY = "data.rgb_split"


def _get(config, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _set(config, key: str, value) -> None:
    section, name = key.split(".")
    setattr(getattr(config, section), name, value)


class AdvancedSettings(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        from sembridge_engine.config import spec_of

        super().__init__(parent)
        self.combos: dict[str, QComboBox] = {}
        self.checks: dict[str, QCheckBox] = {key: setting_check(key) for key in SWITCHES}
        self.spins = {key: setting_spin(key, decimals=decimals, step=step) for key, decimals, step in NUMBERS}
        self.split = [QDoubleSpinBox(decimals=2, minimum=0.01, maximum=0.98, singleStep=0.05) for _ in range(3)]
        form = QFormLayout(self)
        for key in CHOICES:
            combo = QComboBox()
            combo.addItems(spec_of(key).allowed())
            self.combos[key] = combo
            add_setting_row(form, key, combo)
        split_row = QWidget()
        split_layout = QHBoxLayout(split_row)
        split_layout.setContentsMargins(0, 0, 0, 0)
        for spin in self.split:
            split_layout.addWidget(spin)
        add_setting_row(form, SPLIT_KEY, split_row)
        for key, spin in self.spins.items():
            add_setting_row(form, key, spin)
        for key, check in self.checks.items():
            form.addRow(explain(check, key))

    def load(self, config) -> None:
        for key, combo in self.combos.items():
            combo.setCurrentText(_get(config, key))
        for key, spin in self.spins.items():
            spin.setValue(_get(config, key))
        for key, check in self.checks.items():
            check.setChecked(_get(config, key))
        for spin, value in zip(self.split, config.data.rgb_split):
            spin.setValue(value)

    def problem(self) -> str:
        total = sum(spin.value() for spin in self.split)
        return "" if abs(total - 1) < 1e-6 else f"The RGB train / validation / test shares add up to {total:.2f}; make them add up to 1."

    def store(self, config) -> None:
        for key, combo in self.combos.items():
            _set(config, key, combo.currentText())
        for key, spin in self.spins.items():
            _set(config, key, spin.value())
        for key, check in self.checks.items():
            _set(config, key, check.isChecked())
        config.data.rgb_split = [round(spin.value(), 4) for spin in self.split]
