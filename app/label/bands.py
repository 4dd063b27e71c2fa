"""The band choice of one scene: which scene band feeds each of the model's bands."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QWidget


class BandChooser(QGroupBox):
    """One combo box per model band; ``bandsChosen`` when the user changes one."""

    bandsChosen = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Scene bands fed to the model (this scene)", parent)
        self.setToolTip("Each scene keeps its own choice: an RGB scene and a 13-band one in the same list each get "
                        "the bands that hold red, green and blue")
        self.form = QFormLayout(self)
        self.combos: list[QComboBox] = []

    def show_bands(self, band_count: int, descriptions: tuple[str, ...], model_bands: list[str], chosen: list[int]) -> None:
        """Offer the scene's ``band_count`` bands for each model band, ``chosen`` (1-based) selected."""
        self.clear()
        for position, name in enumerate(model_bands):
            combo = QComboBox()
            for band in range(1, band_count + 1):
                text = descriptions[band - 1] if band - 1 < len(descriptions) else ""
                combo.addItem(f"Band {band}" + (f" ({text})" if text else ""), band)
            combo.setCurrentIndex(combo.findData(chosen[position]) if position < len(chosen) else -1)
            combo.currentIndexChanged.connect(lambda _index: self.bandsChosen.emit())
            self.combos.append(combo)
            self.form.addRow(f"Model band {name}:", combo)

    def clear(self) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self.combos = []

    def selected(self) -> list[int] | None:
        """The chosen 1-based bands, or None while one is unset."""
        if not self.combos or any(combo.currentData() is None for combo in self.combos):
            return None
        return [int(combo.currentData()) for combo in self.combos]
