"""The training wizard: Data -> Classes -> Models -> Distillation -> Training -> Review.

Each page edits one part of a ``config.RunConfig`` and validates it before Next; the Review page
shows the resulting TOML, saves it with ``config.save_config`` and launches the run. Everything
slow (file discovery, reading thumbnails) runs in a worker thread.
"""
from __future__ import annotations

import copy
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QPushButton, QToolButton, QWidget

from app.help import show_method_help
from app.settings import Settings
from app.widgets import ask_save_file
from app.wizard.classes_page import ClassesPage
from app.wizard.data_page import DataPage, DataSummary
from app.wizard.distill_page import DistillPage
from app.wizard.frame import WizardFrame
from app.wizard.models_page import ModelsPage
from app.wizard.review_page import ReviewPage
from app.wizard.training_page import TrainingPage


class TrainingWizard(WizardFrame):
    """Builds a RunConfig page by page; ``launchRequested(config)`` starts the run."""

    launchRequested = Signal(object)
    configSaved = Signal(str)

    def __init__(self, config, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.base_config = config
        self.config = copy.deepcopy(config)
        self.summary: DataSummary | None = None
        self.chosen_classes: list[str] = []
        self.page_data = DataPage(self)
        self.page_classes = ClassesPage(self)
        self.page_models = ModelsPage(self)
        self.page_distill = DistillPage(self)
        self.page_training = TrainingPage(self)
        self.page_review = ReviewPage(self)
        for page in (self.page_data, self.page_classes, self.page_models, self.page_distill,
                     self.page_training, self.page_review):
            self.addPage(page)
        self.save_button = QPushButton("Save config…")
        self.save_button.setToolTip("Save this configuration as TOML, e.g. to run it with `sembridge train --config`")
        self.save_button.clicked.connect(self._choose_config_file)
        self.extra_buttons.addWidget(self.save_button)
        self.help_button = QToolButton()
        self.help_button.setText("?")
        self.help_button.setToolTip("How SemBridge works, and what each setting means")
        self.help_button.setStyleSheet("font-weight: bold; padding: 2px 8px;")
        self.help_button.clicked.connect(lambda: show_method_help(self))
        self.header_tools.addWidget(self.help_button)
        self.currentIdChanged.connect(self._page_changed)

    def set_config(self, config) -> None:
        """Start over from another project's configuration."""
        self.base_config = config
        self.config = copy.deepcopy(config)
        self.restart()

    def restart(self) -> None:
        self.config = copy.deepcopy(self.base_config)
        super().restart()

    def _page_changed(self, _page_id: int) -> None:
        self.save_button.setVisible(self.currentPage() is self.page_review)

    def _choose_config_file(self) -> None:
        path = ask_save_file(self, self.settings, "config", "Save run configuration", f"{self.config.name}.toml",
                             "TOML (*.toml)")
        if path:
            self.save_config(path)

    def save_config(self, path: str | Path) -> Path:
        from sembridge_engine.config import save_config

        path = Path(path)
        save_config(self.config, path)
        self.configSaved.emit(str(path))
        return path

    def accept(self) -> None:
        """Launch: hand a copy of the config over and start again (the wizard lives in a page)."""
        if not self.page_review.valid:
            return
        launched = copy.deepcopy(self.config)
        self.launchRequested.emit(launched)
        self.restart()
