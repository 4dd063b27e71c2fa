"""Training page: epochs, batch sizes and learning rates per stage, tile sizes, seed, device,
run name and output folder."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QSpinBox, QVBoxLayout,
)

from app.widgets import PathField, error_label, setting_spin, show_error
from app.wizard.frame import WizardPage


class TrainingPage(WizardPage):
    """Epochs, batch sizes and learning rates per stage, tile sizes, seed, device, output folder."""

    STAGES = ("teacher", "matcher", "student")

    def __init__(self, wizard) -> None:
        super().__init__("Training", "How long and where to train.")
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


