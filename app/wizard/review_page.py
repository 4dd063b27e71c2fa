"""Review page: the whole configuration as TOML, memory and time estimates; Save config… or Launch."""
from __future__ import annotations

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout

from app.widgets import error_label, human_bytes, human_seconds, show_error
from app.wizard.frame import WizardPage


class ReviewPage(WizardPage):
    """The full config as TOML, memory and time estimates; Save config… or Launch."""

    def __init__(self, wizard) -> None:
        super().__init__("Review", "Check the configuration, save it for the command line, or launch the run.")
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


