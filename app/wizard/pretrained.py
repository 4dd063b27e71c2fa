"""The "Start from pretrained weights" choice of one stage: from scratch, torchvision's ImageNet
weights (only from the torchvision cache: the engine never downloads), or a weights file. What
cannot work is said at once, beside the choice, not when the run fails minutes later."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from app.widgets import PathField

SCRATCH, IMAGENET, WEIGHTS_FILE = "", "imagenet", "file"
CHOICES = ((SCRATCH, "From scratch"), (IMAGENET, "ImageNet (torchvision cache)"), (WEIGHTS_FILE, "Weights file…"))
WEIGHTS_FILTER = "Weights (*.pth *.pt *.safetensors *.bin);;All files (*)"


def weights_problem(arch: str, pretrained: str) -> str:
    """Why ``pretrained`` cannot start ``arch`` on this machine ("" when it can, as far as a look
    at the disk tells: the engine still checks the tensors when it builds the network)."""
    from sembridge_engine.models.backbones import imagenet_weights_path

    if not pretrained:
        return ""
    if pretrained == IMAGENET:
        path = imagenet_weights_path(arch)
        if path.is_file():
            return ""
        return (f"ImageNet weights for {arch} are not in the torchvision cache (looked for {path}); nothing is "
                "downloaded. Copy the file there, choose a weights file, or train from scratch.")
    if not Path(pretrained).expanduser().is_file():
        return f"Weights file not found: {pretrained}"
    return ""


class PretrainedChoice(QWidget):
    """Combo box (scratch / ImageNet / file) with a file chooser shown for "Weights file…" and a
    warning line when the chosen weights are not on this machine."""

    def __init__(self, settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.arch = ""
        self.combo = QComboBox()
        for value, text in CHOICES:
            self.combo.addItem(text, value)
        self.file_field = PathField("Weights file (.pth, .pt or .safetensors)", folder=False,
                                    file_filter=WEIGHTS_FILTER, settings=settings, key="pretrained_weights")
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #8a5a00;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.combo)
        layout.addWidget(self.file_field)
        layout.addWidget(self.warning)
        self.combo.currentIndexChanged.connect(self.refresh)
        self.file_field.pathChanged.connect(self.refresh)
        self.refresh()

    def set_value(self, pretrained: str) -> None:
        kind = pretrained if pretrained in (SCRATCH, IMAGENET) else WEIGHTS_FILE
        self.file_field.edit.setText("" if kind != WEIGHTS_FILE else pretrained)
        self.combo.setCurrentIndex(self.combo.findData(kind))
        self.refresh()

    def value(self) -> str:
        kind = self.combo.currentData()
        return self.file_field.path() if kind == WEIGHTS_FILE else kind

    def set_arch(self, arch: str) -> None:
        self.arch = arch
        self.refresh()

    def problem(self) -> str:
        if not self.isEnabled():
            return ""
        if self.combo.currentData() == WEIGHTS_FILE and not self.value():
            return "Choose a weights file."
        return weights_problem(self.arch, self.value()) if self.arch else ""

    def refresh(self, *_args) -> None:
        self.file_field.setVisible(self.combo.currentData() == WEIGHTS_FILE)
        problem = self.problem()
        self.warning.setText(problem)
        self.warning.setVisible(bool(problem))
